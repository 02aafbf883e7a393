"""Which sensor mediates a container's open: fanotify or seccomp, never both.

The container's seccomp profile sends every open to the mediator. An open whose object
lies on a mount fanotify gates (mounts.py) is let through untouched (CONTINUE): the
kernel's open then raises the fanotify permission event that models it. Any other open
(procfs, which refuses permission events, or a mount made after the marking) is
mediated like in process mode: described, modeled, and emulated when enforcing, so
the object checked is the object the task gets.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import threading
from collections.abc import Iterable

from semtrust.orchestrator.container.mounts import mount_id
from semtrust.orchestrator.core import Ctx
from semtrust.orchestrator.emulate import AT_FDCWD, RESOLVE_NO_MAGICLINKS
from semtrust.orchestrator.mediator import Mediator
from semtrust.sensors.fileinfo import PROC_SUPER_MAGIC
from semtrust.sensors.seccomp import SYSCALLS

O_NOFOLLOW = 0o400000
FANOTIFY, PROCFS, PROCESS = "fanotify", "procfs", "process"
_NR_OPEN = SYSCALLS.get("open", 2)
_NR_CREAT = SYSCALLS.get("creat", 85)
_SELF_FD = re.compile(rb"/proc/(?:self|thread-self)/fd/([0-9]{1,9})")
_NR_OPENAT = SYSCALLS.get("openat", 257)


class OpenRoutes:
    """The ids of the container's mounts that fanotify gates (grows as listeners arrive)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: frozenset[int] = frozenset()
        #: (st_dev, st_ino) of runc's exec FIFO: runc init opens it through its own fd
        #: to wait for ``start``; it is the runtime's handshake (its host path changes
        #: with every run), not the workload's, and is not modeled.
        self.handshake: tuple[int, int] | None = None

    def add(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._ids = self._ids | frozenset(ids)

    def gated(self, mnt_id: int) -> bool:
        return mnt_id in self._ids


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def mediator_class(routes: OpenRoutes) -> type[Mediator]:
    """A process-mode mediator whose opens on fanotify-gated mounts are left to fanotify."""

    class ContainerMediator(Mediator):
        def _open(self, c: Ctx) -> None:
            route, call = self._route(c)
            if route == FANOTIFY:
                self.lst.allow(c.n.id)  # fanotify models it when the kernel opens it
            elif route == PROCFS and call is not None:
                dirfd, path, flags, resolve = call
                if not self._guard_request(c, dirfd, self._target_path(c, path)):
                    self.lst.deny(c.n.id, errno.EACCES)
                    return
                self.check_valid(c)
                # Described and checked, then opened by the kernel: emulating procfs
                # opens would run into procfs's own checks against the mediator.
                self._open_observed(c, dirfd, path, flags, resolve)
            else:
                super()._open(c)

        def _route(self, c: Ctx) -> tuple[str, tuple[int, bytes, int, int] | None]:
            """Which sensor mediates this open (FANOTIFY, PROCFS or PROCESS), and the
            call's (dirfd, path, flags, resolve). PROCESS when unsure."""
            a = c.n.args
            nr = c.n.nr
            resolve = 0
            if nr in (_NR_OPEN, _NR_CREAT):
                dirfd, paddr = AT_FDCWD, a[0]
                flags = _s32(a[1]) if nr == _NR_OPEN else os.O_CREAT
            elif nr == _NR_OPENAT:
                dirfd, paddr, flags = _s32(a[0]), a[1], _s32(a[2])
            else:  # openat2: flags in the task's memory
                dirfd, paddr = _s32(a[0]), a[1]
                try:
                    raw = self.read_mem(c, a[2], 24) if 24 <= a[3] <= 4096 else b""
                except OSError:
                    return PROCESS, None
                if len(raw) < 24:
                    return PROCESS, None
                f64, _mode, resolve = struct.unpack("=QQQ", raw)
                flags = _s32(f64)
            try:
                path = self.read_str(c, paddr)
            except OSError:
                return PROCESS, None  # the process-mode handler answers as the kernel would
            call = (dirfd, path, flags, resolve)
            try:
                fd = self._open_in_task(c, dirfd, path,
                                        os.O_PATH | os.O_CLOEXEC | (flags & O_NOFOLLOW), 0,
                                        resolve | RESOLVE_NO_MAGICLINKS)
            except OSError as exc:
                # Missing, a magic link, a loop: the process-mode handler decides (it
                # reproduces the kernel's answer or checks what a magic link names).
                if exc.errno == errno.ELOOP and self._is_handshake(c, dirfd, path):
                    return FANOTIFY, call  # not modeled: see OpenRoutes.handshake
                if exc.errno == errno.ENOENT and flags & os.O_CREAT:
                    # A create: the new file lands on its directory's mount, and the
                    # kernel's open of it raises the fanotify event.
                    return self._route_parent(c, call), call
                return PROCESS, call
            try:
                if routes.gated(mount_id(fd)):
                    return FANOTIFY, call
                st = os.fstat(fd)
                if self.fi.fs_info(fd, st.st_dev).magic == PROC_SUPER_MAGIC:
                    return PROCFS, call
                return PROCESS, call
            except OSError:
                return PROCESS, call
            finally:
                os.close(fd)

        def _route_parent(self, c: Ctx, call: tuple[int, bytes, int, int]) -> str:
            dirfd, path, _flags, resolve = call
            parent = path.rstrip(b"/").rpartition(b"/")[0] if b"/" in path else b"."
            if path.startswith(b"/") and not parent:
                parent = b"/"
            try:
                fd = self._open_in_task(c, dirfd, parent, os.O_PATH | os.O_CLOEXEC, 0,
                                        resolve | RESOLVE_NO_MAGICLINKS)
            except OSError:
                return PROCESS
            try:
                return FANOTIFY if routes.gated(mount_id(fd)) else PROCESS
            except OSError:
                return PROCESS
            finally:
                os.close(fd)

        def _is_handshake(self, c: Ctx, dirfd: int, path: bytes) -> bool:
            """Is the path runc init's ``/proc/self/fd/N`` of the exec FIFO?"""
            m = _SELF_FD.fullmatch(path)
            if routes.handshake is None or m is None or dirfd != AT_FDCWD:
                return False
            try:
                st = os.stat(f"/proc/{c.tid}/fd/{int(m.group(1))}")
            except OSError:
                return False
            return (st.st_dev, st.st_ino) == routes.handshake

    return ContainerMediator
