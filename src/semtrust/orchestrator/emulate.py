"""Open files the way a supervised task would: its root, cwd, credentials and umask.

Used to emulate ``open``-family calls when a model is enforced (the object that
is checked is the object the task gets, injected with ``NOTIF_ADDFD``), and to
observe files in learning mode. Credentials are switched per thread with raw
system calls (``setgroups``/``setfsgid``/``setfsuid``/``capset``) so other
supervisor threads are unaffected; glibc's wrappers would broadcast them.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from semtrust.orchestrator.tasks import Status

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

NR_SETGROUPS = 116
NR_SETFSUID = 122
NR_SETFSGID = 123
NR_CAPGET = 125
NR_CAPSET = 126
NR_OPENAT2 = 437
_CAP_V3 = 0x20080522

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
AT_FDCWD = -100

_how = ctypes.create_string_buffer(24)


def _ctypes_openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int:
    """``openat2(2)``; raises OSError with the kernel's errno."""
    struct.pack_into("=QQQ", _how, 0, flags & 0xFFFFFFFFFFFFFFFF, mode, resolve)
    fd = _libc.syscall(ctypes.c_long(NR_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(path),
                       _how, ctypes.c_size_t(24))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(fd)


_c_openat2: Callable[[int, bytes, int, int, int], int] | None
try:
    from semtrust.orchestrator._decide import openat2 as _c_openat2
except ImportError:  # not built
    _c_openat2 = None


def openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int:
    """``openat2(2)``; raises OSError with the kernel's errno (compiled when built: the
    resolution of every mediated path makes a few of these calls)."""
    if _c_openat2 is None:
        return _ctypes_openat2(dirfd, path, flags, mode, resolve)
    return _c_openat2(dirfd, path, flags & 0xFFFFFFFFFFFFFFFF, mode, resolve)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _sys(nr: int, *args: object) -> int:
    rc = _libc.syscall(ctypes.c_long(nr), *args)
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(rc)


class CredSwitcher:
    """Temporarily take a task's filesystem credentials on the calling thread (root only)."""

    def __init__(self) -> None:
        self.enabled = os.geteuid() == 0
        self._groups = os.getgroups()
        self._hdr = _CapHeader(_CAP_V3, 0)
        self._orig = (_CapData * 2)()
        self._new = (_CapData * 2)()
        self._own: tuple[int, int, tuple[int, ...], int] = (-1, -1, (), -1)
        if self.enabled:
            _sys(NR_CAPGET, ctypes.c_void_p(ctypes.addressof(self._hdr)),
                 ctypes.c_void_p(ctypes.addressof(self._orig)))
        eff = self._orig[0].effective | (self._orig[1].effective << 32)
        self._own = (os.geteuid(), os.getegid(), tuple(self._groups), eff)

    def needed(self, st: Status) -> bool:
        """Whether opening as ``st`` differs from opening as ourselves."""
        return self.enabled and (st.coe.fsuid, st.coe.fsgid, st.groups, st.coe.capeff) != self._own

    @contextmanager
    def as_task(self, st: Status) -> Iterator[None]:
        """Run the body with ``st``'s fsuid, fsgid, groups and effective capabilities."""
        if not self.enabled or (st.coe.fsuid, st.coe.fsgid, st.groups, st.coe.capeff) == self._own:
            yield
            return
        groups = st.groups
        garr = (ctypes.c_uint32 * max(1, len(groups)))(*groups)
        _sys(NR_SETGROUPS, ctypes.c_size_t(len(groups)), ctypes.c_void_p(ctypes.addressof(garr)))
        _libc.syscall(ctypes.c_long(NR_SETFSGID), ctypes.c_uint32(st.coe.fsgid))
        _libc.syscall(ctypes.c_long(NR_SETFSUID), ctypes.c_uint32(st.coe.fsuid))
        eff = st.coe.capeff
        for i in range(2):
            self._new[i].permitted = self._orig[i].permitted
            self._new[i].inheritable = self._orig[i].inheritable
            self._new[i].effective = (eff >> (32 * i)) & self._orig[i].permitted
        self._hdr.version = _CAP_V3
        self._hdr.pid = 0
        _libc.syscall(ctypes.c_long(NR_CAPSET), ctypes.c_void_p(ctypes.addressof(self._hdr)),
                      ctypes.c_void_p(ctypes.addressof(self._new)))
        try:
            yield
        finally:
            self._hdr.version = _CAP_V3
            _libc.syscall(ctypes.c_long(NR_CAPSET),
                          ctypes.c_void_p(ctypes.addressof(self._hdr)),
                          ctypes.c_void_p(ctypes.addressof(self._orig)))
            _libc.syscall(ctypes.c_long(NR_SETFSUID), ctypes.c_uint32(os.geteuid()))
            _libc.syscall(ctypes.c_long(NR_SETFSGID), ctypes.c_uint32(os.getegid()))
            og = self._groups
            oarr = (ctypes.c_uint32 * max(1, len(og)))(*og)
            _libc.syscall(ctypes.c_long(NR_SETGROUPS), ctypes.c_size_t(len(og)),
                          ctypes.c_void_p(ctypes.addressof(oarr)))
