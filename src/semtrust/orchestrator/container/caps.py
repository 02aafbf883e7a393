"""Capability sets of the mediator process (it keeps only what it needs)."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def with_capability(cap: int) -> Iterator[None]:
    """Raise ``cap`` (from the permitted set) into this thread's effective set for the
    body, then restore the effective set (raw syscalls: this thread only). Nested uses
    for the same capability cost nothing."""
    held: set[int] = getattr(_raised, "caps", None) or set()
    _raised.caps = held
    if cap in held:
        yield
        return
    held.add(cap)
    try:
        with _raise(cap):
            yield
    finally:
        held.discard(cap)


@contextmanager
def _raise(cap: int) -> Iterator[None]:
    hdr = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
    old = (ctypes.c_uint32 * 6)()
    if _libc.syscall(ctypes.c_long(_NR_CAPGET), ctypes.c_void_p(ctypes.addressof(hdr)),
                     ctypes.c_void_p(ctypes.addressof(old))) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"capget: {os.strerror(e)}")
    new = (ctypes.c_uint32 * 6)(*old)
    new[3 * (cap // 32)] |= 1 << (cap % 32)
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
