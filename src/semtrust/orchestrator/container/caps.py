"""Capability sets of the mediator process (it keeps only what it needs)."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from semtrust.orchestrator.emulate import CredSwitcher

if TYPE_CHECKING:
    from semtrust.orchestrator.tasks import Status

#: Capabilities the mediator keeps (README "privileges"): read task memory and fds
#: (CAP_SYS_PTRACE), read files and /proc entries whatever their mode
#: (CAP_DAC_READ_SEARCH), signal container processes of other uids (CAP_KILL). Opens
#: are emulated as the task: its fsuid, fsgid and groups (CAP_SETUID, CAP_SETGID) and
#: those of its capabilities an open can use (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID);
#: the effective set is lowered to the task's own for each open.
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_FOWNER = 3
CAP_FSETID = 4
CAP_KILL = 5
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SYS_PTRACE = 19
MEDIATOR_CAPS = (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID, CAP_KILL,
                 CAP_SETGID, CAP_SETUID, CAP_SYS_PTRACE)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_CHILD_SUBREAPER = 36
_CAP_V3 = 0x20080522


def drop_capabilities(keep: Sequence[int]) -> None:
    """Shrink bounding, ambient, effective, permitted and inheritable sets to ``keep``.

    Capabilities are per thread: call before starting any thread.
    """
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        if cap not in keep:
            _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    hdr = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
    data = (ctypes.c_uint32 * 6)(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0,
                                 mask >> 32, mask >> 32, 0)
    if _libc.capset(ctypes.addressof(hdr), ctypes.addressof(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"capset: {os.strerror(e)}")



_NR_CAPGET = 125
_NR_CAPSET = 126
_libc.syscall.restype = ctypes.c_long


_raised = threading.local()


def _held() -> set[int]:
    """Capabilities this thread has raised into its effective set (for the body)."""
    held: set[int] | None = getattr(_raised, "caps", None)
    if held is None:
        held = _raised.caps = set()
    return held


@contextmanager
def with_capability(cap: int) -> Iterator[None]:
    """Raise ``cap`` (from the permitted set) into this thread's effective set for the
    body, then restore the effective set (raw syscalls: this thread only). Nested uses
    for the same capability cost nothing."""
    held = _held()
    if cap in held:
        yield
        return
    held.add(cap)
    try:
        with _set_effective(cap, True):
            yield
    finally:
        held.discard(cap)


@contextmanager
def without_capability(cap: int) -> Iterator[None]:
    """The body runs with ``cap`` out of this thread's effective set."""
    held = _held()
    had = cap in held
    held.discard(cap)
    try:
        with _set_effective(cap, False):
            yield
    finally:
        if had:
            held.add(cap)


class PtraceCreds(CredSwitcher):
    """A task's filesystem credentials plus CAP_SYS_PTRACE, in one switch: emulated opens
    reach the task's root, cwd and dirfd through /proc/PID and its own /proc entries
    whatever its dumpability (container/opens.py)."""

    def __init__(self) -> None:
        super().__init__()
        self._plus: dict[int, tuple[Status, Status]] = {}

    def _with_ptrace(self, st: Status) -> Status:
        hit = self._plus.get(id(st))
        if hit is not None and hit[0] is st:
            return hit[1]
        plus = dataclasses.replace(st, coe=st.coe._replace(
            capeff=st.coe.capeff | 1 << CAP_SYS_PTRACE))
        if len(self._plus) >= 4096:
            self._plus.clear()
        self._plus[id(st)] = (st, plus)
        return plus

    def needed(self, st: Status) -> bool:
        return super().needed(self._with_ptrace(st))

    @contextmanager
    def as_task(self, st: Status) -> Iterator[None]:
        held = _held()
        had = CAP_SYS_PTRACE in held
        held.add(CAP_SYS_PTRACE)
        try:
            with super().as_task(self._with_ptrace(st)):
                yield
        finally:
            if not had:
                held.discard(CAP_SYS_PTRACE)


@contextmanager
def _set_effective(cap: int, on: bool) -> Iterator[None]:
    hdr = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
    old = (ctypes.c_uint32 * 6)()
    if _libc.syscall(ctypes.c_long(_NR_CAPGET), ctypes.c_void_p(ctypes.addressof(hdr)),
                     ctypes.c_void_p(ctypes.addressof(old))) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"capget: {os.strerror(e)}")
    new = (ctypes.c_uint32 * 6)(*old)
    if on:
        new[3 * (cap // 32)] |= 1 << (cap % 32)
    else:
        new[3 * (cap // 32)] &= ~(1 << (cap % 32)) & 0xFFFFFFFF
    hdr[0] = _CAP_V3
    if _libc.syscall(ctypes.c_long(_NR_CAPSET), ctypes.c_void_p(ctypes.addressof(hdr)),
                     ctypes.c_void_p(ctypes.addressof(new))) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"capset: {os.strerror(e)}")
    try:
        yield
    finally:
        hdr[0] = _CAP_V3
        _libc.syscall(ctypes.c_long(_NR_CAPSET), ctypes.c_void_p(ctypes.addressof(hdr)),
                      ctypes.c_void_p(ctypes.addressof(old)))
