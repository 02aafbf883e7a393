"""The container's seccomp side: opens emulated, execs described, mounts re-marked.

Every open a container task makes reaches the mediator (the profile notifies the open
family) and is emulated in every mode, as process mode does when enforcing: the path is
resolved once in the task to an ``O_PATH`` descriptor, opened through it as the task,
described, checked and injected (``SECCOMP_IOCTL_NOTIF_ADDFD``). The object checked is
the object the task gets, wherever it lies (a marked mount, procfs, a mount made later):
a symlink, cwd or dirfd swapped after the check cannot redirect the open, because the
kernel never resolves the path again. The mediator's own open of a file on a marked
mount raises a fanotify event from the mediator's pid, which the file mediator allows
without modeling (it was modeled here), so each open is modeled once.

What the kernel still opens itself is left to fanotify: executables (exec checks there
are on the opened file, no path race) and the interpreters an exec loads. Opens that
the process mode leaves to the kernel are handled here too: a FIFO is opened by a helper
thread through the descriptor that was checked (``fifo.py``: its open blocks until the
other end opens); a magic link at the end of a path (``/proc/self/fd/N``, ``/dev/stdin``)
is followed once here, symlinks leading to it expanded in the task. What still goes to
the kernel after a check (a magic link inside a path) is accepted by fanotify on a marked
mount only if it is of the object that was described (``OpenRoutes.expect``).

An exec of a file on a mount fanotify does not gate (a memfd, a mount made after start)
is modeled here with its ``file_open`` (content digest). A mount-family call marks the
task's mount table dirty: at the domain's next mediated call the keeper marks the new
mounts before that call is decided, so an interpreter an exec loads from a new mount is
seen by fanotify.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from semtrust.orchestrator import syscalls as table
from semtrust.orchestrator.container.caps import (
    CAP_DAC_READ_SEARCH,
    CAP_SYS_PTRACE,
    PtraceCreds,
    with_capability,
    without_capability,
)
from semtrust.orchestrator.container.fifo import open_fifo_later
from semtrust.orchestrator.container.mounts import mount_id
from semtrust.orchestrator.core import O_PATH, Ctx, _Observe, _s32
from semtrust.orchestrator.emulate import AT_FDCWD, RESOLVE_NO_MAGICLINKS
from semtrust.orchestrator.mediator import Mediator
from semtrust.sensors.fileinfo import PROC_SUPER_MAGIC
from semtrust.sensors.seccomp import Listener, Notification

if TYPE_CHECKING:
    from semtrust.orchestrator.domain import Domain

_SELF_FD = re.compile(rb"/proc/(?:self|thread-self)/fd/([0-9]{1,9})")
_NR_OPEN = table.NUMBERS["open"]
_NR_OPENAT = table.NUMBERS["openat"]
#: Calls after which a task's mounts may differ: its mount table is read again (and
#: clone/clone3 with CLONE_NEWNS).
MOUNT_CHANGING = frozenset({"mount", "umount2", "pivot_root", "move_mount", "fsmount",
                            "open_tree", "open_tree_attr", "unshare", "setns"})
CLONE_NEWNS = 0x00020000
#: Bound on descriptions waiting for the kernel's open of the same object (fallbacks).
MAX_EXPECTED = 4096
#: An expected open the kernel did not make within this time is dropped.
EXPECT_TTL_NS = 5_000_000_000


class OpenRoutes:
    """What the seccomp side and the file mediator share: the ids of the mounts fanotify
    gates, the runc handshake FIFO, opens described here that the kernel makes next, and
    the tasks whose mounts changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: frozenset[int] = frozenset()
        #: (st_dev, st_ino) of runc's exec FIFO: runc init opens it through its own fd
        #: to wait for ``start``; it is the runtime's handshake (its host path changes
        #: with every run), not the workload's, and is not modeled.
        self.handshake: tuple[int, int] | None = None
        self._expected: dict[tuple[int, int, int], list[int]] = {}
        self._dirty: set[int] = set()
        #: Marks the mounts of a pid's namespace (the keeper does it); set by the mediator.
        self.remark: Callable[[int], None] | None = None
        self._remark_lock = threading.Lock()
        self._marking = False

    def add(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._ids = self._ids | frozenset(ids)

    def gated(self, mnt_id: int) -> bool:
        return mnt_id in self._ids

    # ---------------------------------------------------- opens the kernel makes
    def expect(self, tgid: int, dev: int, ino: int) -> None:
        """The kernel is about to open (dev, ino) for ``tgid``; it was modeled already."""
        now = time.monotonic_ns()
        with self._lock:
            if len(self._expected) >= MAX_EXPECTED:
                self._expected.clear()
            times = self._expected.setdefault((tgid, dev, ino), [])
            if len(times) >= 64:
                times.pop(0)
            times.append(now)

    def consume(self, tgid: int, dev: int, ino: int) -> bool:
        """Was this open by ``tgid`` of (dev, ino) expected (and so already modeled)?"""
        now = time.monotonic_ns()
        with self._lock:
            times = self._expected.get((tgid, dev, ino))
            while times:
                t = times.pop(0)
                if now - t < EXPECT_TTL_NS:
                    if not times:
                        del self._expected[(tgid, dev, ino)]
                    return True
            self._expected.pop((tgid, dev, ino), None)
            return False

    # ------------------------------------------------------------ mount changes
    def changed(self, pid: int) -> None:
        with self._lock:
            self._dirty.add(pid)

    def refresh(self, pid: int) -> None:
        """Mark the mounts of every task whose mount table changed, and of ``pid`` (the
        caller about to be decided: the task that mounted may have exited)."""
        if (not self._dirty and not self._marking) or self.remark is None:
            return
        with self._remark_lock:  # a call decided meanwhile waits for the marks
            self._marking = True
            try:
                with self._lock:
                    if not self._dirty:
                        return
                    pids, self._dirty = self._dirty | {pid}, set()
                for p in sorted(pids):
                    self.remark(p)
            finally:
                self._marking = False


class _NotALink(Exception):
    """A path that failed without a link in its last component: the first error stands."""


def mediator_class(routes: OpenRoutes) -> type[Mediator]:
    """The process-mode mediator with container mode's opens, execs and mounts."""

    class ContainerMediator(Mediator):
        def __init__(self, domain: Domain, listener: Listener) -> None:
            super().__init__(domain, listener)
            self.creds = PtraceCreds()

        def handle(self, n: Notification) -> None:
            e = table.lookup(n.nr)
            if e is not None and e.when and not e.applies(n.args):
                # Only a bundle rule with conditions of its own sends these: inert.
                self.lst.allow(n.id)
                return
            if e is not None and e.cls == table.REFUSED and e.in_kernel:
                self.lst.deny(n.id, e.errno)  # as the process mode's filter does
                return
            routes.refresh(n.pid)
            new_ns = n.name in MOUNT_CHANGING or self._clones_mount_ns(n)
            super().handle(n)
            if new_ns:
                routes.changed(n.pid)

        def _clones_mount_ns(self, n: Notification) -> bool:
            """clone/clone3 with CLONE_NEWNS (clone3's flags are the first field of its
            struct in task memory; unreadable counts as yes)."""
            if n.name == "clone":
                return bool(n.args[0] & CLONE_NEWNS)
            if n.name != "clone3":
                return False
            try:
                raw = os.pread(self._mem(Ctx(n, n.pid, *self.d.tasks.thread(n.pid))), 8,
                               n.args[0])
            except (OSError, KeyError):
                return True
            return len(raw) < 8 or bool(int.from_bytes(raw, "little") & CLONE_NEWNS)

        def _open(self, c: Ctx) -> None:
            if routes.handshake is not None and self._is_handshake(c):
                self.lst.allow(c.n.id)  # runc's own FIFO, not on a marked mount
                return
            super()._open(c)  # emulated: Domain.emulate_opens

        def _open_observed(self, c: Ctx, dirfd: int, path: bytes, flags: int,
                           resolve: int) -> None:
            """What the process mode opens through the kernel after its check: a FIFO
            (opened here by a helper thread instead, fifo.py), a magic link, O_PATH."""
            if not flags & O_PATH:
                pfd = -1
                with contextlib.suppress(OSError), with_capability(CAP_SYS_PTRACE):
                    pfd = self._open_in_task(c, dirfd, path, os.O_PATH | os.O_CLOEXEC
                                             | (flags & (os.O_NOFOLLOW | os.O_DIRECTORY)),
                                             0, resolve | RESOLVE_NO_MAGICLINKS)
                if pfd < 0 and not flags & os.O_NOFOLLOW:
                    with contextlib.suppress(OSError, _NotALink), \
                            with_capability(CAP_SYS_PTRACE):
                        pfd = self._resolve_magic(c, dirfd, path, flags,
                                                  resolve | RESOLVE_NO_MAGICLINKS)
                if pfd >= 0:
                    try:
                        if stat.S_ISFIFO(os.fstat(pfd).st_mode):
                            fifo, pfd = pfd, -1
                            self._open_fifo(c, fifo, flags)
                            return
                    finally:
                        if pfd >= 0:
                            os.close(pfd)
                self._expect_kernel_open(c, dirfd, path, flags, resolve)
            super()._open_observed(c, dirfd, path, flags, resolve)

        def _open_fifo(self, c: Ctx, pfd: int, flags: int) -> None:
            """Check the FIFO ``pfd`` names, then have a helper open it (takes ``pfd``)."""
            try:
                try:
                    desc = self._describe(c, pfd, flags, readable=True)
                except PermissionError as exc:
                    self.lst.deny(c.n.id, exc.errno or errno.EACCES)
                    return
                self.check_valid(c)
                if self.decide(c, [self.event(c, "file_open", self.file_cell(desc))]):
                    self.lst.deny(c.n.id, errno.EPERM)
                    return
                if open_fifo_later(self.lst.fd, c.n.id, pfd, flags, c.st, self.d.stop):
                    pfd = -1  # the helper's now
                else:
                    self.lst.deny(c.n.id, errno.ENFILE)
            finally:
                if pfd >= 0:
                    os.close(pfd)

        def _expect_kernel_open(self, c: Ctx, dirfd: int, path: bytes, flags: int,
                                resolve: int) -> None:
            """A magic link: the kernel opens it after our check. On a marked mount,
            fanotify then sees that open: tell it which object was checked."""
            with contextlib.suppress(OSError):
                fd = self._open_in_task(c, dirfd, path, os.O_PATH | os.O_CLOEXEC
                                        | (flags & os.O_NOFOLLOW), 0, resolve)
                try:
                    if routes.gated(mount_id(fd)):
                        st = os.fstat(fd)
                        routes.expect(c.proc.tgid, st.st_dev, st.st_ino)
                finally:
                    os.close(fd)

        def _open_in_task(self, c: Ctx, dirfd: int, path: bytes, flags: int, mode: int,
                          resolve: int) -> int:
            # Reaching the task's root, cwd and dirfd through /proc/PID is our access,
            # not the task's: a task that is not dumpable (runc init, a daemon that
            # cleared it) would otherwise have every emulated open refused.
            with with_capability(CAP_SYS_PTRACE):
                return super()._open_in_task(c, dirfd, path, flags, mode, resolve)

        def _open_via_path_fd(self, c: Ctx, dirfd: int, path: bytes, flags: int,
                              mode: int, res: int, creating: bool) -> tuple[int, bool]:
            """As the process mode's, and also through a magic link (_resolve_magic).

            The task's own /proc/PID entries: the kernel lets a process open those
            whatever its dumpability or capabilities (runc init is not dumpable), which a
            check against the mediator would refuse. So the open runs with CAP_SYS_PTRACE
            kept (PtraceCreds); an object it gives that is not the task's own and on
            procfs is opened again without it."""
            try:
                with with_capability(CAP_SYS_PTRACE):
                    fd, created = super()._open_via_path_fd(c, dirfd, path, flags, mode,
                                                            res, creating)
            except PermissionError:
                fd = self._open_own_fd_dir(c, dirfd, path, flags, res)
                if fd < 0:
                    raise
                return fd, False
            except OSError as exc:
                # ELOOP: a magic link; ENOENT: maybe a symlink into /proc/self, which
                # names the mediator (absent from the container's procfs), not the task.
                if exc.errno not in (errno.ELOOP, errno.ENOENT) or flags & os.O_NOFOLLOW:
                    raise
                try:
                    return self._open_magic(c, dirfd, path, flags, res, creating), False
                except _NotALink:
                    raise exc from None
            try:
                if created or self._own_or_not_proc(c, fd):
                    return fd, created
            except OSError:
                pass
            os.close(fd)
            with without_capability(CAP_SYS_PTRACE):
                return super()._open_via_path_fd(c, dirfd, path, flags, mode, res,
                                                 creating)

        def _open_own_fd_dir(self, c: Ctx, dirfd: int, path: bytes, flags: int,
                             res: int) -> int:
            """The task's own /proc/PID/fd (or fdinfo) directory, which the kernel lets a
            process list even when it is root's (a process that is not dumpable, such as
            runc init after it switched to the container's user). -1 if not that."""
            if flags & os.O_ACCMODE != os.O_RDONLY:
                return -1
            with with_capability(CAP_SYS_PTRACE):
                pfd = self._open_in_task(c, dirfd, path, os.O_PATH | os.O_CLOEXEC
                                         | os.O_DIRECTORY, 0, res)
            try:
                parts = os.readlink(f"/proc/self/fd/{pfd}").split("/")
                if parts[:2] != ["", "proc"] or len(parts) not in (4, 6) \
                        or parts[-1] not in ("fd", "fdinfo") or not parts[2].isdigit() \
                        or int(parts[2]) not in (c.proc.nspid, c.proc.tgid) \
                        or (len(parts) == 6 and parts[3] != "task") \
                        or self.fi.fs_info(pfd, os.fstat(pfd).st_dev).magic \
                        != PROC_SUPER_MAGIC:
                    return -1
                with with_capability(CAP_DAC_READ_SEARCH):
                    return os.open(f"/proc/self/fd/{pfd}", (flags | os.O_CLOEXEC)
                                   & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC))
            finally:
                os.close(pfd)

        def _open_magic(self, c: Ctx, dirfd: int, path: bytes, flags: int, res: int,
                        creating: bool) -> int:
            """Open what a path ending in a magic link names, resolved once."""
            pfd = self._resolve_magic(c, dirfd, path, flags, res)
            try:
                if creating and flags & os.O_EXCL:
                    raise FileExistsError(errno.EEXIST, "exists")
                if stat.S_ISFIFO(os.fstat(pfd).st_mode):
                    raise _Observe  # a pipe or FIFO: _open_observed hands it to a helper
                rflags = (flags | os.O_NOCTTY | os.O_CLOEXEC) & ~(
                    os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_TRUNC)
                if self._own_or_not_proc(c, pfd):
                    return os.open(f"/proc/self/fd/{pfd}", rflags)
                with without_capability(CAP_SYS_PTRACE):
                    return os.open(f"/proc/self/fd/{pfd}", rflags)
            finally:
                os.close(pfd)

        def _resolve_magic(self, c: Ctx, dirfd: int, path: bytes, flags: int,
                           res: int) -> int:
            """An O_PATH descriptor of what ``path`` names when its last component is a
            magic link (``/proc/PID/fd/N``, ``cwd``, ``root``, ``exe``), possibly reached
            through ordinary symlinks (``/dev/stdin``): symlinks are expanded here, in
            the task, and the magic link is followed once, so the object checked is the
            object opened. A magic link in the middle of a path raises ELOOP (the caller
            falls back to the kernel's open)."""
            for hop in range(40):
                try:
                    return self._open_in_task(c, dirfd, path, os.O_PATH | os.O_CLOEXEC
                                              | (flags & os.O_DIRECTORY), 0, res)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOENT):
                        raise
                    if hop == 0 and exc.errno == errno.ENOENT:
                        first: OSError | None = exc
                    else:
                        first = None
                path = self._target_path(c, path)
                head, _sep, last = path.rpartition(b"/")
                if not last or last in (b".", b".."):
                    raise _NotALink if first else OSError(errno.ELOOP, "link inside the path")
                parent = head if head else (b"/" if path.startswith(b"/") else b".")
                try:
                    pd = self._open_in_task(c, dirfd, parent, os.O_PATH | os.O_DIRECTORY
                                            | os.O_CLOEXEC, 0, res)
                except OSError:
                    if first:
                        raise _NotALink from None
                    raise
                try:
                    try:
                        st = os.stat(last, dir_fd=pd, follow_symlinks=False)
                    except OSError:
                        if first:
                            raise _NotALink from None
                        raise
                    if not stat.S_ISLNK(st.st_mode):
                        if first:
                            raise _NotALink
                        raise OSError(errno.ELOOP, "not a link")
                    if self.fi.fs_info(pd, os.fstat(pd).st_dev).magic == PROC_SUPER_MAGIC:
                        return self._follow_proc_link(c, pd, last)
                    target = os.readlink(last, dir_fd=pd)
                finally:
                    os.close(pd)
                path = target if target.startswith(b"/") else parent + b"/" + target
            raise OSError(errno.ELOOP, "too many symbolic links")

        def _follow_proc_link(self, c: Ctx, pd: int, last: bytes) -> int:
            """Follow procfs link ``last`` in directory ``pd`` (/proc/PID/fd...), as the
            task may: only links of domain processes; others' without CAP_SYS_PTRACE."""
            parts = os.readlink(f"/proc/self/fd/{pd}").split("/")
            pid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
            if pid is None or not self._proc_pid_allowed(c, pid):
                raise PermissionError(errno.EACCES, "outside the domain")
            if pid in (c.proc.nspid, c.proc.tgid):
                with with_capability(CAP_SYS_PTRACE):
                    return os.open(last, os.O_PATH | os.O_CLOEXEC, dir_fd=pd)
            with without_capability(CAP_SYS_PTRACE):
                return os.open(last, os.O_PATH | os.O_CLOEXEC, dir_fd=pd)

        def _own_or_not_proc(self, c: Ctx, fd: int) -> bool:
            st = os.fstat(fd)
            if self.fi.fs_info(fd, st.st_dev).magic != PROC_SUPER_MAGIC:
                return True
            parts = os.readlink(f"/proc/self/fd/{fd}").split("/")
            return len(parts) < 3 or parts[1] != "proc" or not parts[2].isdigit() \
                or int(parts[2]) in (c.proc.nspid, c.proc.tgid)

        def _models_exec_open(self, fd: int) -> bool:
            """fanotify models execs from the mounts it gates; this handler the rest
            (a memfd, a mount made after start)."""
            try:
                return not routes.gated(mount_id(fd))
            except OSError:
                return True

        def _is_handshake(self, c: Ctx) -> bool:
            """Is this runc init's ``open("/proc/self/fd/N")`` of the exec FIFO?"""
            a = c.n.args
            if c.n.nr == _NR_OPEN:
                paddr = a[0]
            elif c.n.nr == _NR_OPENAT and _s32(a[0]) == AT_FDCWD:
                paddr = a[1]
            else:
                return False
            try:
                m = _SELF_FD.fullmatch(self.read_str(c, paddr))
            except OSError:
                return False
            if m is None:
                return False
            try:
                st = os.stat(f"/proc/{c.tid}/fd/{int(m.group(1))}")
            except OSError:
                return False
            return (st.st_dev, st.st_ino) == routes.handshake

    return ContainerMediator

