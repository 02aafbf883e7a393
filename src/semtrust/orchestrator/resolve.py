"""Task-relative path resolution: a path means what it means to the task."""

from __future__ import annotations

import errno
import os

from semtrust.orchestrator.core import Ctx, MediatorCore, Unmodelable
from semtrust.orchestrator.emulate import (
    AT_FDCWD,
    RESOLVE_IN_ROOT,
    openat2,
)
from semtrust.sensors.fileinfo import PROC_SUPER_MAGIC


class Resolver(MediatorCore):
    """Paths and descriptors resolved as the task sees them (its root, cwd and fds)."""

    # ------------------------------------------------------------- file paths
    def _target_path(self, c: Ctx, path: bytes) -> bytes:
        """Rewrite /proc/self and /proc/thread-self: they would name the supervisor."""
        if path.startswith(b"/proc/") and (path.startswith(b"/proc/self")
                                            or path.startswith(b"/proc/thread-self")):
            host = self._sees_host_proc(c)
            pid = c.proc.tgid if host else c.proc.nspid
            if path == b"/proc/self" or path.startswith(b"/proc/self/"):
                path = b"/proc/%d" % pid + path[10:]
            elif path == b"/proc/thread-self" or path.startswith(b"/proc/thread-self/"):
                tid = c.tid if host else c.st.nspid
                path = b"/proc/%d/task/%d" % (pid, tid) + path[17:]
        return path

    def _sees_host_proc(self, c: Ctx) -> bool:
        """Does the task's /proc show host pids (our procfs) or its own namespace's?"""
        if c.proc.root == "/":
            return True
        try:
            return os.stat(f"/proc/{c.tid}/root/proc").st_dev == os.stat("/proc").st_dev
        except OSError:
            return False

    def _open_in_task(self, c: Ctx, dirfd: int, path: bytes, flags: int, mode: int,
                      resolve: int) -> int:
        """openat2 resolved from the task's root/cwd/dirfd; raises OSError as the kernel would."""
        path = self._target_path(c, path)
        own = -1
        try:
            if path.startswith(b"/"):
                if c.proc.root != "/":
                    own = os.open(f"/proc/{c.tid}/root", os.O_PATH | os.O_CLOEXEC)
                    resolve |= RESOLVE_IN_ROOT
                    base = own
                else:
                    base = AT_FDCWD
            elif dirfd == AT_FDCWD:
                own = os.open(f"/proc/{c.tid}/cwd", os.O_PATH | os.O_CLOEXEC)
                base = own
            else:
                try:
                    own = os.open(f"/proc/{c.tid}/fd/{dirfd}", os.O_PATH | os.O_CLOEXEC)
                except FileNotFoundError:
                    raise OSError(errno.EBADF, "bad dirfd") from None
                base = own
            if not path:
                if dirfd == AT_FDCWD:
                    raise OSError(errno.ENOENT, "empty path")
                return os.dup(base) if own >= 0 else os.open(".", os.O_PATH)
            return openat2(base, path, flags, mode, resolve)
        finally:
            if own >= 0:
                os.close(own)

    def _guard_request(self, c: Ctx, dirfd: int, path: bytes) -> bool:
        """Refuse paths into /proc/PID of a process outside the domain (or its holder)."""
        if not path.startswith(b"/"):
            try:
                base = os.readlink(f"/proc/{c.tid}/cwd" if dirfd == AT_FDCWD
                                   else f"/proc/{c.tid}/fd/{dirfd}")
            except OSError:
                return True
            if not base.startswith("/proc"):
                return True
            path = os.fsencode(base) + b"/" + path
        if not path.startswith(b"/proc/"):
            return True
        parts = os.path.normpath(path).split(b"/")
        if len(parts) >= 3 and parts[2].isdigit():
            return self._proc_pid_allowed(c, int(parts[2]))
        return True

    def _proc_pid_allowed(self, c: Ctx, pid: int) -> bool:
        """May the task open /proc/PID/... (PID as its own /proc shows it)?"""
        if not self._sees_host_proc(c):
            if pid in self.d.protected_nspids:
                return False
            host = self.d.host_pid(pid)
            return host is not None and self.d.in_domain(host)
        return self.d.in_domain(pid)

    def _display_path(self, c: Ctx, fd: int) -> str:
        try:
            p = os.readlink(f"/proc/self/fd/{fd}")
        except OSError as exc:
            raise Unmodelable(f"cannot name the file: {exc.strerror}") from None
        if p.startswith("anon_inode:"):
            # Only reachable through /proc/PID/fd magic links (e.g. a seccomp listener).
            raise PermissionError(errno.EACCES, "anonymous inode")
        if p == "/dev/userfaultfd":
            # Could stall the orchestrator's reads of task memory (see seccomp.build_filter).
            raise PermissionError(errno.EPERM, "userfaultfd")
        root = c.proc.root
        if root != "/" and (p == root or p.startswith(root + "/")):
            p = p[len(root):] or "/"
        return p

    def _guard_proc(self, c: Ctx, fd: int, st: os.stat_result, shown: str) -> None:
        """Refuse procfs entries of processes outside the domain (e.g. the supervisor)."""
        if self.fi.fs_info(fd, st.st_dev).magic != PROC_SUPER_MAGIC:
            return
        parts = shown.split("/")
        if (len(parts) >= 3 and parts[1] == "proc" and parts[2].isdigit()
                and not self._proc_pid_allowed(c, int(parts[2]))):
                raise PermissionError(errno.EACCES, "outside the domain")


# ----------------------------------------------------------------- stable names


def _stable_path(c: Ctx, p: str) -> str:
    """Names that differ from run to run (pids, pty and pipe numbers) made stable.

    ``/proc/<own pid>`` -> ``/proc/self``, its own thread -> ``/proc/thread-self``, other
    processes -> ``/proc/PID`` (``/task/TID``); ``/dev/pts/<n>`` -> ``/dev/pts/N``;
    ``pipe:[ino]`` -> ``pipe:``, ``socket:[ino]`` -> ``socket:``.
    """
    if p.startswith("/proc/"):
        parts = p.split("/")
        if len(parts) > 2 and parts[2].isdigit():
            n = int(parts[2])
            own = n in (c.proc.tgid, c.proc.nspid)
            parts[2] = "self" if own else "PID"
            if len(parts) > 4 and parts[3] == "task" and parts[4].isdigit():
                if own and int(parts[4]) in (c.tid, c.st.nspid):
                    parts[1:5] = ["proc", "thread-self"]
                else:
                    parts[4] = "TID"
            return "/".join(parts)
        return p
    if p.startswith("/dev/pts/") and p[9:].isdigit():
        return "/dev/pts/N"
    if p.endswith("]") and (p.startswith("pipe:[") or p.startswith("socket:[")):
        return p[:p.index("[")]
    return p


