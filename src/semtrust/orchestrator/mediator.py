"""Turn seccomp notifications into TSEM events, model them, answer the kernel.

One :class:`Mediator` per domain. ``handle(notification)`` reads the call's
arguments from the task (``/proc/PID/mem``), describes the object acted on in
the TSEM export shape, runs the events through the domain's TMA and answers:
CONTINUE (allowed, learning/sealed), an injected fd (an emulated open while
enforcing), or an errno. Anything that cannot be modeled is recorded as a
fault and, when enforcing, denied.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from semtrust.events import (
    Coe,
    Event,
    FileCell,
    FileDesc,
    GenericCell,
    Inet6Addr,
    InetAddr,
    MmapCell,
    OtherAddr,
    SockAddr,
    SockDesc,
    SocketAddrCell,
    SocketCreateCell,
    TaskKillCell,
    UnixAddr,
)
from semtrust.events.jsonexport import generic_body
from semtrust.events.record import Cell
from semtrust.model.coefficient import task_identity
from semtrust.orchestrator.emulate import (
    AT_FDCWD,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    CredSwitcher,
    openat2,
)
from semtrust.orchestrator.tasks import Process, Status
from semtrust.sensors.fileinfo import PROC_SUPER_MAGIC, FileInfo
from semtrust.sensors.seccomp import SYSCALLS, Listener, Notification, SeccompError

if TYPE_CHECKING:
    from semtrust.orchestrator.domain import Domain

O_ACCMODE = 0o3
O_CREAT = 0o100
O_EXCL = 0o200
O_NOCTTY = 0o400
O_TRUNC = 0o1000
O_NONBLOCK = 0o4000
O_DIRECTORY = 0o200000
O_NOFOLLOW = 0o400000
O_CLOEXEC = 0o2000000
O_PATH = 0o10000000
O_TMPFILE = 0o20000000 | O_DIRECTORY
O_LARGEFILE = 0o100000
FMODE_EXEC = 0x20
VALID_OPEN_FLAGS = 0o3 | 0o100 | 0o200 | 0o400 | 0o1000 | 0o2000 | 0o4000 | 0o4010000 | \
    0o10000 | 0o20000 | 0o40000 | 0o100000 | 0o200000 | 0o400000 | 0o1000000 | 0o2000000 | \
    0o10000000 | 0o20000000
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
MAP_ANONYMOUS = 0x20
PATH_MAX = 4096
MAX_SOCKADDR = 128
CAP_SETUID = 7
CAP_SETGID = 6

_NR = SYSCALLS


MAX_COEF_CACHE = 1 << 16
SWEEP_EVERY = 32  # forks between sweeps of exited processes (pid reuse, fd leaks)
MAX_DESC_CACHE = 1 << 16


_NOOP = contextlib.nullcontext()


class Pending(NamedTuple):
    """What enters a coefficient; also the key of the coefficient cache."""

    etype: str
    task_id: bytes
    coe: Coe
    cell: Cell


class _Observe(Exception):
    """This open cannot be emulated: describe it and let the kernel perform it."""


class Unmodelable(Exception):
    """The event happened but could not be described (vanished task or file...)."""


@dataclass(slots=True)
class Ctx:
    """One notification with the task it came from."""

    n: Notification
    tid: int
    proc: Process
    st: Status


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _kernel_flags(flags: int) -> int:
    """The ``f_flags`` the kernel keeps for an open file (spec: file.flags)."""
    return (flags | O_LARGEFILE) & ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_CLOEXEC)


class Mediator:
    """Syscall handlers of one domain (see module docstring)."""

    def __init__(self, domain: Domain, listener: Listener) -> None:
        self.d = domain
        self.lst = listener
        self.fi = FileInfo()
        self.creds = CredSwitcher()
        self.created: dict[tuple[int, int], bytes] = {}  # (dev, ino) -> creator task id
        self.seq = 0
        self.clones = 0
        try:
            self.binfmt_misc = bool(set(os.listdir("/proc/sys/fs/binfmt_misc"))
                                    - {"register", "status"})
        except OSError:
            self.binfmt_misc = False
        self._coef: dict[Pending, bytes] = {}
        self._fast: dict[tuple[str, bytes, int, int], tuple[Coe, Cell, bytes]] = {}
        self._fcells: dict[int, tuple[FileDesc, FileCell]] = {}
        self._desc: dict[tuple[object, ...], FileDesc] = {}
        h: dict[int, Callable[[Ctx], None]] = {}
        for name in ("open", "openat", "openat2", "creat"):
            h[_NR[name]] = self._open
        for name in ("execve", "execveat"):
            h[_NR[name]] = self._exec
        for name in ("mmap", "mprotect"):
            h[_NR[name]] = self._mmap
        h[_NR["socket"]] = self._socket
        for name in ("connect", "bind"):
            h[_NR[name]] = self._sockaddr
        for name in ("accept", "accept4"):
            h[_NR[name]] = self._accept
        h[_NR["listen"]] = self._listen
        for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
                     "pidfd_send_signal"):
            h[_NR[name]] = self._kill
        for name in ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
                     "setfsuid", "setfsgid", "setgroups", "capset"):
            h[_NR[name]] = self._setid
        for name in ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd"):
            h[_NR[name]] = self._ptrace
        for name in ("clone", "fork", "vfork", "clone3"):
            h[_NR[name]] = self._clone
        for name in ("open_by_handle_at", "uselib"):
            h[_NR[name]] = self._unmodelable
        h[_NR["io_uring_setup"]] = self._io_uring
        for name in ("unshare", "setns", "chroot", "pivot_root"):
            if name in _NR:
                h[_NR[name]] = self._nsop
        self.handlers = h

    # ------------------------------------------------------------------ entry
    def handle(self, n: Notification) -> None:
        """Decide one notification; always answers it (fail closed when enforcing)."""
        try:
            try:
                proc, st = self.d.tasks.thread(n.pid)
            except OSError as exc:
                raise Unmodelable(f"/proc/{n.pid}/status: {exc}") from None
            if proc.untrusted:
                # Fruit of the poisoned vine: no longer modeled; denied when enforcing.
                self.d.log_untrusted(proc, n.name)
                if self.d.enforcing:
                    self.lst.deny(n.id, errno.EPERM)
                else:
                    self.lst.allow(n.id)
                return
            if proc.exec_check is not None and \
                    not self.verify_exec(Ctx(n, n.pid, proc, st)):
                return
            handler = self.handlers.get(n.nr)
            if handler is None:
                self.lst.allow(n.id)
                return
            handler(Ctx(n, n.pid, proc, st))
        except Unmodelable as exc:
            if not self.lst.id_valid(n.id):
                # [issue4] The call is gone (task killed, or interrupted and to be notified
                # again, e.g. runc init's execve under Go runtime signals): nothing happened.
                return
            self.fault(n, str(exc))
            if self.d.enforcing:
                self.lst.deny(n.id, errno.EPERM)
            else:
                self.lst.allow(n.id)
        except SeccompError:
            raise
        except Exception as exc:  # a bug must not leave the task hanging
            self.fault(n, f"internal error: {exc!r}")
            if self.d.enforcing:
                self.lst.deny(n.id, errno.EPERM)
            else:
                self.lst.allow(n.id)

    def fault(self, n: Notification, reason: str) -> None:
        self.d.record_fault({"pid": n.pid, "syscall": n.name, "reason": reason})

    # ---------------------------------------------------------------- helpers
    def _mem(self, c: Ctx) -> int:
        if c.proc.mem_fd < 0:
            try:
                c.proc.mem_fd = os.open(f"/proc/{c.tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise Unmodelable(f"/proc/{c.tid}/mem: {exc.strerror}") from None
        return c.proc.mem_fd

    def read_mem(self, c: Ctx, addr: int, size: int) -> bytes:
        try:
            return os.pread(self._mem(c), size, addr)
        except OSError as exc:
            raise Unmodelable(f"read of task memory failed: {exc.strerror}") from None

    def read_path(self, c: Ctx, addr: int) -> bytes | None:
        """The path argument at ``addr``; None after failing the call as the kernel would
        (a bad pointer is the task's own error, not an unmodelable event)."""
        try:
            return self.read_str(c, addr)
        except OSError as exc:
            if isinstance(exc, Unmodelable):
                raise
            self.lst.deny(c.n.id, exc.errno or errno.EFAULT)
            return None

    def read_str(self, c: Ctx, addr: int) -> bytes:
        """A NUL-terminated string from the task, at most PATH_MAX bytes."""
        if addr == 0:
            raise OSError(errno.EFAULT, "NULL pointer")
        out = b""
        fd = self._mem(c)
        while len(out) < PATH_MAX:
            size = min(256, 4096 - (addr % 4096))
            try:
                chunk = os.pread(fd, size, addr)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    raise OSError(errno.EFAULT, "bad address") from None
                raise Unmodelable(f"read of task memory failed: {exc.strerror}") from None
            if not chunk:
                raise OSError(errno.EFAULT, "bad address")
            i = chunk.find(b"\0")
            if i >= 0:
                return out + chunk[:i]
            out += chunk
            addr += len(chunk)
        raise OSError(errno.ENAMETOOLONG, "path too long")

    def check_valid(self, c: Ctx) -> None:
        """After reading task memory: make sure it still was that task's."""
        if not self.lst.id_valid(c.n.id):
            raise Unmodelable("task went away during the decision")

    def event(self, c: Ctx, etype: str, cell: Cell, *, coe: Coe | None = None,
              task_id: bytes | None = None) -> Pending:
        """An event to model; the full Event is only built when it adds a point."""
        return Pending(etype, c.proc.task_id if task_id is None else task_id,
                       c.st.coe if coe is None else coe, cell)

    def _full(self, c: Ctx, p: Pending) -> Event:
        self.seq += 1
        return Event(type=p.etype, task_id=p.task_id, coe=p.coe, cell=p.cell, pid=c.tid,
                     number=self.seq, process=c.st.name, p_task_id=c.proc.parent_task_id,
                     ts=time.monotonic_ns())

    def decide(self, c: Ctx, events: list[Pending]) -> bool:
        """Model events; True if the call must be denied."""
        deny = False
        tma = self.d.tma
        cache = self._coef
        fast = self._fast
        for p in events:
            # Identity-keyed fast path: COE and cached cells are reused objects, and the
            # entry holds them alive, so their ids cannot be recycled while cached.
            fkey = (p.etype, p.task_id, id(p.coe), id(p.cell))
            hit = fast.get(fkey)
            ev: Event | None = None
            if hit is not None and hit[0] is p.coe and hit[1] is p.cell:
                co = hit[2]
            else:
                # File cells are already unique per file description (see file_cell):
                # hashing their value again would only cost time.
                by_value = not isinstance(p.cell, FileCell)
                known = cache.get(p) if by_value else None
                if known is None:
                    ev = self._full(c, p)
                    known = tma.coefficient(ev)
                    if by_value:
                        if len(cache) >= MAX_COEF_CACHE:
                            cache.clear()
                        cache[p] = known
                co = known
                if len(fast) >= MAX_COEF_CACHE:
                    fast.clear()
                fast[fkey] = (p.coe, p.cell, co)
            if ev is None and tma.is_valid(co) is None:
                ev = self._full(c, p)  # a new point: keep its description
            if self.d.model_event(c.proc, ev, co):
                deny = True
        return deny

    def finish(self, c: Ctx, events: list[Pending]) -> None:
        if self.decide(c, events):
            self.lst.deny(c.n.id, errno.EPERM)
        else:
            self.lst.allow(c.n.id)

    def file_cell(self, desc: FileDesc) -> FileCell:
        """One FileCell object per cached FileDesc (keeps the fast path's identity keys)."""
        hit = self._fcells.get(id(desc))
        if hit is not None and hit[0] is desc:
            return hit[1]
        cell = FileCell(desc)
        if len(self._fcells) >= MAX_DESC_CACHE:
            self._fcells.clear()
        self._fcells[id(desc)] = (desc, cell)
        return cell

    def _generic(self, c: Ctx, etype: str, body: dict[str, object]) -> None:
        ev = self.event(c, etype, GenericCell(generic_body(dict(sorted(body.items())))))
        self.finish(c, [ev])

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

    def _describe(self, c: Ctx, fd: int, flags: int, *, readable: bool,
                  st: os.stat_result | None = None) -> FileDesc:
        try:
            if st is None:
                st = os.fstat(fd)
            shown = self._display_path(c, fd)
            if shown.startswith("/proc/"):
                self._guard_proc(c, fd, st, shown)
            shown = _stable_path(c, shown)
            owner = self.created.get((st.st_dev, st.st_ino))
            kflags = _kernel_flags(flags)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                   st.st_mode, st.st_uid, st.st_gid, kflags, shown, owner)
            desc = self._desc.get(key)
            if desc is None:
                desc = self.fi.describe(fd, kflags, shown, st=st, owner=owner,
                                        hash_content=True)
                if len(self._desc) >= MAX_DESC_CACHE:
                    self._desc.clear()
                self._desc[key] = desc
            return desc
        except PermissionError:
            raise
        except OSError as exc:
            if not readable and exc.errno in (errno.EACCES, errno.EPERM):
                raise Unmodelable(f"cannot hash file: {exc.strerror}") from None
            raise Unmodelable(f"cannot describe file: {exc.strerror}") from None

    # ------------------------------------------------------------------ opens
    def _open(self, c: Ctx) -> None:
        a = c.n.args
        nr = c.n.nr
        mode = 0
        resolve = 0
        if nr == _NR["open"]:
            dirfd, paddr, flags, mode = AT_FDCWD, a[0], _s32(a[1]), a[2] & 0o7777
        elif nr == _NR["creat"]:
            dirfd, paddr, flags, mode = AT_FDCWD, a[0], O_CREAT | os.O_WRONLY | O_TRUNC, \
                a[1] & 0o7777
        elif nr == _NR["openat"]:
            dirfd, paddr, flags, mode = _s32(a[0]), a[1], _s32(a[2]), a[3] & 0o7777
        else:  # openat2
            dirfd, paddr = _s32(a[0]), a[1]
            size = a[3]
            if size < 24 or size > 4096:
                self.lst.deny(c.n.id, errno.EINVAL)
                return
            raw = self.read_mem(c, a[2], 24)
            if len(raw) < 24:
                self.lst.deny(c.n.id, errno.EFAULT)
                return
            f64, m64, resolve = struct.unpack("=QQQ", raw)
            flags, mode = _s32(f64), m64 & 0o7777
        path = self.read_path(c, paddr)
        if path is None:
            return
        if nr != _NR["openat2"]:
            flags &= VALID_OPEN_FLAGS  # open/openat ignore unknown bits; openat2 refuses them
        flags &= 0xFFFFFFFF
        path = self._target_path(c, path)
        if (path.startswith(b"/proc") or not path.startswith(b"/")) and \
                not self._guard_request(c, dirfd, path):
            self.lst.deny(c.n.id, errno.EACCES)
            return
        creating = bool(flags & O_CREAT) or (flags & O_TMPFILE) == O_TMPFILE
        emulate = (self.d.enforcing or creating) and not flags & O_PATH
        if creating or not emulate:
            # What we read must still be the notifying task's. (A plain emulated open needs
            # no check: ADDFD itself fails if the notification is no longer valid.)
            self.check_valid(c)
        if emulate:
            self._open_emulated(c, dirfd, path, flags, mode, resolve, creating)
        else:
            self._open_observed(c, dirfd, path, flags, resolve)

    def _open_observed(self, c: Ctx, dirfd: int, path: bytes, flags: int, resolve: int) -> None:
        """Describe what the call will open, then let the kernel open it (CONTINUE)."""
        oflags = os.O_PATH | os.O_CLOEXEC | (flags & (O_NOFOLLOW | O_DIRECTORY))
        try:
            fd = self._open_in_task(c, dirfd, path, oflags, 0, resolve)
        except OSError:
            # The kernel will fail the call the same way: no object, no event.
            self.lst.allow(c.n.id)
            return
        try:
            try:
                desc = self._describe(c, fd, flags, readable=True)
            except PermissionError as exc:
                self.lst.deny(c.n.id, exc.errno or errno.EACCES)
                return
        finally:
            os.close(fd)
        self.finish(c, [self.event(c, "file_open", self.file_cell(desc))])

    def _open_emulated(self, c: Ctx, dirfd: int, path: bytes, flags: int, mode: int,
                       resolve: int, creating: bool) -> None:
        """Open the object ourselves as the task, check that very object, inject it.

        The path is resolved once, to an ``O_PATH`` descriptor (no side effects: a FIFO is
        not opened, a device not touched); the real open goes through that descriptor, so
        the object checked is the object opened and injected.
        """
        cloexec = bool(flags & O_CLOEXEC)
        res = resolve | RESOLVE_NO_MAGICLINKS
        tmpfile = (flags & O_TMPFILE) == O_TMPFILE
        created = False
        fd = -1
        try:
            with self.creds.as_task(c.st) if self.creds.needed(c.st) else _NOOP:
                if tmpfile:
                    fd = self._open_in_task(c, dirfd, path, flags | O_NOCTTY | O_CLOEXEC,
                                            mode & ~c.st.umask, res)
                    created = True
                else:
                    fd, created = self._open_via_path_fd(c, dirfd, path, flags, mode, res,
                                                         creating)
        except _Observe:
            self._open_observed(c, dirfd, path, flags, resolve)
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP and not flags & O_NOFOLLOW:
                # A magic link (/dev/stdin -> /proc/self/fd/0): cannot be emulated
                # safely; check what it names and let the kernel open it.
                self._open_observed(c, dirfd, path, flags, resolve)
                return
            self.lst.deny(c.n.id, exc.errno or errno.EACCES)
            return
        try:
            st = os.fstat(fd)
            if created:
                self.created[(st.st_dev, st.st_ino)] = c.proc.task_id
            try:
                desc = self._describe(c, fd, flags, readable=(flags & O_ACCMODE) != os.O_WRONLY,
                                      st=st)
            except PermissionError as exc:
                self.lst.deny(c.n.id, exc.errno or errno.EACCES)
                return
            ev = self.event(c, "file_open", self.file_cell(desc))
            if self.decide(c, [ev]):
                self.lst.deny(c.n.id, errno.EPERM)
                return
            try:
                self.lst.addfd_send(c.n.id, fd, cloexec=cloexec)
            except SeccompError as exc:
                if exc.errno == errno.ENOENT:
                    return  # task gone
                raise
        finally:
            if fd >= 0:
                os.close(fd)

    def _open_via_path_fd(self, c: Ctx, dirfd: int, path: bytes, flags: int, mode: int,
                          res: int, creating: bool) -> tuple[int, bool]:
        """(fd, created) for a non-O_TMPFILE emulated open; raises OSError like the kernel."""
        for _attempt in range(3):
            try:
                pfd = self._open_in_task(c, dirfd, path,
                                         os.O_PATH | os.O_CLOEXEC
                                         | (flags & (O_NOFOLLOW | O_DIRECTORY)), 0, res)
            except FileNotFoundError:
                if not creating:
                    raise
                try:  # a new file cannot be a FIFO: create it directly
                    fd = self._open_in_task(c, dirfd, path,
                                            flags | O_EXCL | O_NOCTTY | O_CLOEXEC,
                                            mode & ~c.st.umask, res)
                    return fd, True
                except FileExistsError:
                    if flags & O_EXCL:
                        raise
                    continue  # created meanwhile by someone else: open what is there
            try:
                if creating and flags & O_EXCL:
                    raise FileExistsError(errno.EEXIST, "exists")
                st = os.fstat(pfd)
                if stat.S_ISFIFO(st.st_mode):
                    raise _Observe  # opening would block us (or act as its partner)
                if stat.S_ISLNK(st.st_mode):
                    raise OSError(errno.ELOOP, "symbolic link")  # O_NOFOLLOW
                rflags = (flags | O_NOCTTY | O_CLOEXEC) & ~(O_CREAT | O_EXCL | O_NOFOLLOW)
                return os.open(f"/proc/self/fd/{pfd}", rflags), False
            finally:
                os.close(pfd)
        raise OSError(errno.EAGAIN, "file kept appearing and vanishing")

    # ------------------------------------------------------------------- exec
    def _exec(self, c: Ctx) -> None:
        a = c.n.args
        if c.n.nr == _NR["execve"]:
            dirfd, paddr, atflags = AT_FDCWD, a[0], 0
        else:
            dirfd, paddr, atflags = _s32(a[0]), a[1], _s32(a[4])
        path = self.read_path(c, paddr)
        if path is None:
            return
        self.check_valid(c)
        # Fresh credentials: capabilities after exec follow from the current sets.
        self.d.tasks.invalidate(c.tid)
        try:
            proc, st = self.d.tasks.thread(c.tid)
        except OSError as exc:
            raise Unmodelable(str(exc)) from None
        c = Ctx(c.n, c.tid, proc, st)
        oflags = os.O_PATH | os.O_CLOEXEC
        if atflags & AT_SYMLINK_NOFOLLOW:
            oflags |= O_NOFOLLOW
        try:
            if not path and atflags & AT_EMPTY_PATH:
                fd = self._open_in_task(c, dirfd, b"", oflags, 0, 0)
            else:
                fd = self._open_in_task(c, dirfd, path, oflags, 0, 0)
        except OSError:
            self.lst.allow(c.n.id)  # the kernel fails it the same way; no event
            return
        try:
            fst = os.fstat(fd)
            kind = self._exec_kind(fd) if stat.S_ISREG(fst.st_mode) else "none"
            if not fst.st_mode & 0o111 or kind == "none":
                self.lst.allow(c.n.id)  # EACCES/ENOEXEC from the kernel, no exec happens
                return
            exe_open = self._describe(c, fd, os.O_RDONLY | FMODE_EXEC, readable=True)
        except PermissionError as exc:
            self.lst.deny(c.n.id, exc.errno or errno.EACCES)
            return
        finally:
            os.close(fd)
        coe0 = st.coe
        capeff = st.capbnd if coe0.euid == 0 else st.capamb
        coe1 = Coe(coe0.uid, coe0.euid, coe0.suid, coe0.gid, coe0.egid, coe0.sgid, coe0.fsuid,
                   coe0.fsgid, capeff)
        new_id = task_identity(proc.task_id, coe1, exe_open)
        events = [
            self.event(c, "file_open", FileCell(exe_open)),
            self.event(c, "bprm_committed_creds",
                       GenericCell(generic_body({"filename": exe_open.path.pathname})),
                       coe=coe1, task_id=new_id),
        ]
        if not self.d.model_exec_file:  # [issue4] fanotify models the exec open
            events = events[1:]
        if self.decide(c, events):
            self.lst.deny(c.n.id, errno.EPERM)
            return
        before = (proc.parent_task_id, proc.task_id, proc.fork_task_id)
        proc.parent_task_id = proc.task_id
        proc.task_id = new_id
        proc.fork_task_id = None
        if kind == "elf":
            try:
                old = os.stat(f"/proc/{c.tid}/exe")
                prev: tuple[int, int] | None = (old.st_dev, old.st_ino)
            except OSError:
                prev = None
            proc.exec_check = ((fst.st_dev, fst.st_ino), prev, before)
        self.d.tasks.invalidate_process(proc.tgid)
        if not self.lst.allow(c.n.id):
            # [issue4] The call was interrupted (e.g. a Go runtime signal in runc init) and
            # will be notified again: keep the identity it had, or each retry would chain
            # a new one and learning would not be repeatable.
            proc.parent_task_id, proc.task_id, proc.fork_task_id = before

    def _exec_kind(self, fd: int) -> str:
        """"elf", "script", "none" (the kernel would say ENOEXEC) or "any" (cannot tell)."""
        try:
            rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return "any"  # let the kernel decide (and report)
        try:
            head = os.pread(rfd, 4, 0)
        except OSError:
            return "any"
        finally:
            os.close(rfd)
        if head == b"\x7fELF":
            return "elf"
        if head[:2] == b"#!":
            return "script"
        return "any" if self.binfmt_misc else "none"

    def verify_exec(self, c: Ctx) -> bool:
        """First call after an allowed exec: is the running binary the one we checked?

        Narrows the exec race (path swapped between our check and the kernel's
        re-resolution): a swap is caught before the new program's first mediated call
        is answered. False means the process was disciplined (and, enforcing, killed).
        """
        check = c.proc.exec_check
        c.proc.exec_check = None
        if check is None:
            return True
        try:
            st = os.stat(f"/proc/{c.proc.tgid}/exe")
        except OSError:
            return True
        now = (st.st_dev, st.st_ino)
        if now == check[0]:
            return True  # the checked binary runs
        if now == check[1]:
            # The exec did not happen (the kernel failed or restarted it after our
            # CONTINUE: runc init's Go runtime retries interrupted execs). The identity
            # follows only execs that happened, so a retry does not chain a second one.
            proc = c.proc
            proc.parent_task_id, proc.task_id, proc.fork_task_id = check[2]
            return True
        self.fault(c.n, "executable changed between check and exec")
        with self.d.lock:
            self.d.tasks.mark_untrusted(c.proc.tgid)
        if self.d.enforcing:
            with contextlib.suppress(OSError):
                os.kill(c.proc.tgid, 9)
            self.lst.deny(c.n.id, errno.EPERM)
            return False
        return True

    # ------------------------------------------------------------------- mmap
    def _mmap(self, c: Ctx) -> None:
        a = c.n.args
        if c.n.nr == _NR["mmap"]:
            prot, mflags, fdn = a[2] & 0xFFFFFFFF, a[3] & 0xFFFFFFFF, _s32(a[4])
            file: FileDesc | None = None
            if not mflags & MAP_ANONYMOUS and fdn >= 0:
                file = self._fd_file(c, fdn)
        else:
            prot, mflags = a[2] & 0xFFFFFFFF, 0
            file = self._mapping_file(c, a[0])
        self.finish(c, [self.event(c, "mmap_file", MmapCell(prot, mflags, file))])

    def _fd_file(self, c: Ctx, fdn: int) -> FileDesc | None:
        try:
            fd = os.open(f"/proc/{c.tid}/fd/{fdn}", os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return None  # bad fd: the kernel fails the mmap with EBADF
        try:
            flags = os.O_RDONLY
            try:
                with open(f"/proc/{c.tid}/fdinfo/{fdn}", "rb") as fp:
                    for line in fp.read(4096).splitlines():
                        if line.startswith(b"flags:"):
                            flags = int(line.split()[1], 8)
            except (OSError, ValueError):
                pass
            try:
                return self._describe(c, fd, flags & ~O_CLOEXEC, readable=True)
            except PermissionError:
                raise Unmodelable("mapping of a file outside the domain") from None
        finally:
            os.close(fd)

    def _mapping_file(self, c: Ctx, addr: int) -> FileDesc | None:
        try:
            with open(f"/proc/{c.tid}/maps", "rb") as fp:
                data = fp.read(8 << 20)
        except OSError as exc:
            raise Unmodelable(f"/proc/{c.tid}/maps: {exc.strerror}") from None
        for line in data.splitlines():
            parts = line.split(None, 5)
            lo, _, hi = parts[0].partition(b"-")
            if int(lo, 16) <= addr < int(hi, 16):
                if len(parts) < 6 or not parts[5].startswith(b"/"):
                    return None
                try:
                    fd = os.open(f"/proc/{c.tid}/root" + os.fsdecode(parts[5]),
                                 os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    return None
                try:
                    return self._describe(c, fd, os.O_RDONLY, readable=True)
                finally:
                    os.close(fd)
        return None

    # ---------------------------------------------------------------- sockets
    def _socket(self, c: Ctx) -> None:
        a = c.n.args
        cell = SocketCreateCell(a[0] & 0xFFFFFFFF, a[1] & 0xF, a[2] & 0xFFFFFFFF, 0)
        self.finish(c, [self.event(c, "socket_create", cell)])

    def _pidfd(self, c: Ctx) -> int:
        if c.proc.pidfd < 0:
            try:
                c.proc.pidfd = os.pidfd_open(c.proc.tgid)
            except OSError as exc:
                raise Unmodelable(f"pidfd_open: {exc.strerror}") from None
        return c.proc.pidfd

    def _sock_of(self, c: Ctx, fdn: int) -> socket.socket | None:
        try:
            fd = pidfd_getfd(self._pidfd(c), fdn)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                return None
            raise Unmodelable(f"pidfd_getfd: {exc.strerror}") from None
        try:
            return socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return None  # not a socket: ENOTSOCK from the kernel

    def _sockdesc(self, c: Ctx, s: socket.socket) -> SockDesc:
        fam = s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        typ = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        proto = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
        return SockDesc(fam, typ, proto, c.proc.task_id)

    def _sockaddr(self, c: Ctx) -> None:
        a = c.n.args
        s = self._sock_of(c, _s32(a[0]))
        if s is None:
            self.lst.allow(c.n.id)
            return
        with s:
            desc = self._sockdesc(c, s)
        alen = min(a[2] & 0xFFFFFFFF, MAX_SOCKADDR)
        raw = self.read_mem(c, a[1], alen) if a[1] and alen else b""
        self.check_valid(c)
        etype = "socket_connect" if c.n.nr == _NR["connect"] else "socket_bind"
        addr = parse_sockaddr(raw)
        self.finish(c, [self.event(c, etype, SocketAddrCell(desc, addr))])

    def _accept(self, c: Ctx) -> None:
        s = self._sock_of(c, _s32(c.n.args[0]))
        if s is None:
            self.lst.allow(c.n.id)
            return
        with s:
            desc = self._sockdesc(c, s)
            addr = sockname_addr(s)
        self.finish(c, [self.event(c, "socket_accept", SocketAddrCell(desc, addr))])

    def _listen(self, c: Ctx) -> None:
        s = self._sock_of(c, _s32(c.n.args[0]))
        if s is None:
            self.lst.allow(c.n.id)
            return
        with s:
            desc = self._sockdesc(c, s)
        self._generic(c, "socket_listen", {"family": desc.family, "type": desc.type,
                                           "protocol": desc.protocol})

    # ------------------------------------------------------------------ tasks
    def _kill(self, c: Ctx) -> None:
        a = c.n.args
        nr = c.n.nr
        if nr == _NR["kill"] or nr == _NR["rt_sigqueueinfo"] or nr == _NR["tkill"]:
            target, sig = _s32(a[0]), _s32(a[1])
            host = self.d.host_pid(target) if target > 0 else None
        elif nr in (_NR["tgkill"], _NR["rt_tgsigqueueinfo"]):
            target, sig = _s32(a[0]), _s32(a[2])
            host = self.d.host_pid(target) if target > 0 else None
        else:  # pidfd_send_signal
            sig = _s32(a[1])
            host = self._pidfd_target(c, _s32(a[0]))
            target = host or 0
        if (host is not None and host in self.d.protected) or \
                (nr != _NR["pidfd_send_signal"] and target in self.d.protected_nspids):
            self.lst.deny(c.n.id, errno.EPERM)  # the listener holders are off limits
            return
        if target > 0 and host is None:
            tid_bytes, cross = bytes(32), 1
        elif host is None:
            tid_bytes, cross = bytes(32), 0  # process groups, -1: no single target
        else:
            p = self.d.tasks.procs.get(host)
            if p is None:  # not seen yet (no mediated call so far): register it now
                try:
                    p = self.d.tasks.thread(host)[0]
                except OSError:
                    p = None
            tid_bytes, cross = (p.task_id if p else bytes(32)), 0
        self.finish(c, [self.event(c, "task_kill", TaskKillCell(tid_bytes, sig, cross))])

    def _pidfd_target(self, c: Ctx, fdn: int) -> int | None:
        try:
            with open(f"/proc/{c.tid}/fdinfo/{fdn}", "rb") as fp:
                for line in fp.read(4096).splitlines():
                    if line.startswith(b"Pid:"):
                        v = int(line.split()[1])
                        return v if v > 0 else None
        except (OSError, ValueError):
            pass
        return None

    def _setid(self, c: Ctx) -> None:
        name = c.n.name
        self.d.tasks.invalidate(c.tid)
        if name == "capset":
            self._generic(c, "capset", {})
            return
        cap = CAP_SETGID if "gid" in name or name == "setgroups" else CAP_SETUID
        self._generic(c, "capable", {"cap": cap, "syscall": name})

    def _ptrace(self, c: Ctx) -> None:
        name = c.n.name
        if name == "ptrace" and c.n.args[0] == 0:
            self._generic(c, "ptrace_traceme", {})
            return
        # Never let the workload reach into a process outside the domain or into the
        # listener holder (it could steal the listener): denied in every mode.
        if name == "pidfd_getfd":
            host = self._pidfd_target(c, _s32(c.n.args[0]))
        else:
            pid = _s32(c.n.args[1] if name == "ptrace" else c.n.args[0])
            host = self.d.host_pid(pid) if pid > 0 and pid not in self.d.protected_nspids \
                else None
        if host is None or not self.d.in_domain(host):
            self.lst.deny(c.n.id, errno.EPERM)
            return
        self._generic(c, "ptrace_access_check", {"syscall": name})

    def _clone(self, c: Ctx) -> None:
        # Lineage only: children inherit the identity the parent has now.
        c.proc.fork_task_id = c.proc.task_id
        self.d.tasks.invalidate(c.tid)
        self.lst.allow(c.n.id)
        self.clones += 1
        if self.clones % SWEEP_EVERY == 0:
            self.d.tasks.sweep()

    def _nsop(self, c: Ctx) -> None:
        # unshare/setns/chroot/pivot_root: mounts, root or credentials may change for the
        # whole process: re-read them at its next call.
        self.d.tasks.invalidate_threads(c.proc.tgid)
        self.lst.allow(c.n.id)

    def _unmodelable(self, c: Ctx) -> None:
        raise Unmodelable(f"{c.n.name} cannot be modeled")

    def _io_uring(self, c: Ctx) -> None:
        # io_uring performs opens/connects without system calls: not mediable.
        self.lst.deny(c.n.id, errno.ENOSYS)


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


# --------------------------------------------------------------------- sockets


def parse_sockaddr(raw: bytes) -> SockAddr:
    """The export-shape address of a raw ``struct sockaddr``."""
    if len(raw) < 2:
        return OtherAddr(_sha(raw))
    fam = struct.unpack_from("=H", raw)[0]
    if fam == socket.AF_INET and len(raw) >= 8:
        return InetAddr(int.from_bytes(raw[2:4], "little"), int.from_bytes(raw[4:8], "little"))
    if fam == socket.AF_INET6 and len(raw) >= 24:
        flow = int.from_bytes(raw[4:8], "little")
        scope = int.from_bytes(raw[24:28], "little") if len(raw) >= 28 else 0
        return Inet6Addr(int.from_bytes(raw[2:4], "little"), flow, scope, raw[8:24])
    if fam == socket.AF_UNIX:
        p = raw[2:]
        if p[:1] == b"\0":
            return UnixAddr("@" + p[1:].decode("utf-8", "backslashreplace"))
        return UnixAddr(p.split(b"\0", 1)[0].decode("utf-8", "backslashreplace"))
    return OtherAddr(_sha(raw))


def sockname_addr(s: socket.socket) -> SockAddr:
    """The bound address of a listening socket (ports zeroed: accept's is never hashed)."""
    try:
        name = s.getsockname()
    except OSError:
        return OtherAddr(bytes(32))
    if s.family == socket.AF_INET and isinstance(name, tuple):
        return InetAddr(0, int.from_bytes(socket.inet_aton(name[0]), "little"))
    if s.family == socket.AF_INET6 and isinstance(name, tuple):
        return Inet6Addr(0, 0, 0, socket.inet_pton(socket.AF_INET6, name[0]))
    if s.family == socket.AF_UNIX:
        if isinstance(name, bytes):
            return UnixAddr("@" + name[1:].decode("utf-8", "backslashreplace"))
        return UnixAddr(str(name))
    return OtherAddr(_sha(repr(name).encode()))


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """Duplicate a task's descriptor (``pidfd_getfd(2)``)."""
    rc = _libc.syscall(ctypes.c_long(438), ctypes.c_int(pidfd), ctypes.c_int(targetfd),
                      ctypes.c_uint(0))
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(rc)
