"""Task-relative path resolution: a path means what it means to the task.

A path is resolved from the task's root, cwd or dirfd (``/proc/TID/root``,
``/proc/TID/cwd``, ``/proc/TID/fd/N``), never from ours. When it contains no
symlink the kernel resolves it in one ``openat2`` step with symlinks refused;
otherwise it is walked here one component at a time, so that every symlink is
read and followed as the task would follow it:

- plain symlinks by their text (absolute ones from the task's root), at most 40
  per resolution like the kernel, honouring ``fs.protected_symlinks``;
- procfs's ``self`` and ``thread-self`` as the task's own pid in *that* procfs
  (whatever pid namespace it shows), never as ours;
- magic links (``/proc/PID/fd/N``, ``cwd``, ``root``, ``exe``, ``map_files``,
  ``ns``) by opening them on our side, which yields the very object the task
  would reach.

Every procfs process directory a resolution enters is checked by *which process
it belongs to* (its pid namespace and pid there), not by the path it was reached
by, so a procfs mounted anywhere gets the same answer: entries of processes
outside the domain, and of the listener's holder and keeper, are refused.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat

from semtrust.orchestrator.core import Ctx, MediatorCore, Unmodelable
from semtrust.orchestrator.emulate import (
    AT_FDCWD,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    openat2,
)
from semtrust.sensors.fileinfo import PROC_SUPER_MAGIC

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
MAXSYMLINKS = 40  # the kernel's bound on symlinks followed in one resolution
MAX_ROOTS = 1024  # threads whose root is kept open
PROC_ROOT_INO = 1
NS_GET_PARENT = 0xB702
_MAX_CLIMB = 16
_O_PATH = os.O_PATH | os.O_CLOEXEC
_STEP = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_MISSING = -2  # _lookup_fast: the last component is missing and its parent is needed

_libc = ctypes.CDLL(None, use_errno=True)
_libc.readlinkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
_libc.readlinkat.restype = ctypes.c_ssize_t
_linkbuf = ctypes.create_string_buffer(4096)


def _readlink_fd(fd: int) -> bytes:
    """The text of the symlink open (O_PATH|O_NOFOLLOW) on ``fd``."""
    n = _libc.readlinkat(fd, b"", _linkbuf, 4096)
    if n < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return _linkbuf.raw[:n]


def _protected_symlinks() -> bool:
    try:
        with open("/proc/sys/fs/protected_symlinks", "rb") as fp:
            return fp.read().strip() != b"0"
    except OSError:
        return True


def _mnt_id(fd: int) -> int:
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as fp:
            for line in fp.read(4096).splitlines():
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


class _Walk:
    """State of one resolution: the task's root, the symlink budget, the task's flags."""

    __slots__ = ("_root_key", "depth", "fds", "links", "resolve", "root")

    def __init__(self, root: int, resolve: int) -> None:
        self.root = root
        self.resolve = resolve
        self.links = 0
        self.depth = 0  # components below the start (RESOLVE_BENEATH)
        self.fds: list[int] = []  # every descriptor to close at the end but the result
        self._root_key: tuple[int, int, int] | None = None

    def own(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def is_root(self, fd: int, st: os.stat_result) -> bool:
        if self._root_key is None:
            rs = os.fstat(self.root)
            self._root_key = (rs.st_dev, rs.st_ino, -2)
        if (st.st_dev, st.st_ino) != self._root_key[:2]:
            return False
        if self._root_key[2] == -2:
            self._root_key = (*self._root_key[:2], _mnt_id(self.root))
        return _mnt_id(fd) == self._root_key[2]


class Resolver(MediatorCore):
    """Paths and descriptors resolved as the task sees them (its root, cwd and fds)."""

    _protected_symlinks = _protected_symlinks()
    #: (tid, dirfd, path, root fd, start fd) opened ahead by ``_hold_bases``.
    _held: tuple[int, int, bytes, int, int] | None = None
    #: (fd, its stat) from the lookup that just returned fd (see ``stat_of``).
    _fst: tuple[int, os.stat_result] | None = None

    # ---------------------------------------------------------------- public
    def _open_in_task(self, c: Ctx, dirfd: int, path: bytes, flags: int, mode: int,
                      resolve: int) -> int:
        """``openat2(dirfd, path, flags, mode, resolve)`` as the task would do it.

        ``resolve`` holds the task's own ``RESOLVE_*`` flags. An empty ``path`` with a
        descriptor names that descriptor's object (``AT_EMPTY_PATH``; the caller decides
        whether the call allows it). Raises OSError as the
        kernel would (PermissionError for procfs entries of processes outside the
        domain), Unmodelable when the resolution cannot be done faithfully. A FIFO
        is opened non-blocking unless ``O_PATH`` is asked.
        """
        follow = not flags & os.O_NOFOLLOW
        creating = bool(flags & os.O_CREAT) and not flags & os.O_PATH
        tmpfile = (flags & os.O_TMPFILE) == os.O_TMPFILE
        pdir, name, obj = self._lookup(c, dirfd, path, follow=follow or tmpfile,
                                       resolve=resolve, need_parent=creating)
        try:
            if obj < 0:
                # Missing last component of an O_CREAT open: create it where it resolved.
                return openat2(pdir, name, flags | os.O_NOFOLLOW, mode, _STEP)
            st = self.stat_of(obj)
            if flags & os.O_PATH:
                if flags & os.O_DIRECTORY and not stat.S_ISDIR(st.st_mode):
                    raise OSError(errno.ENOTDIR, "not a directory")
                fd, obj = obj, -1
                self._fst = (fd, st)  # the caller's next stat_of(fd)
                return fd
            if tmpfile:
                return openat2(obj, b".", flags, mode, _STEP)
            if stat.S_ISLNK(st.st_mode):
                raise OSError(errno.ELOOP, "symbolic link")  # O_NOFOLLOW
            if creating and flags & os.O_EXCL:
                raise FileExistsError(errno.EEXIST, "exists")
            rflags = flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)
            if stat.S_ISFIFO(st.st_mode):
                rflags |= os.O_NONBLOCK  # never wait for a partner the workload controls
            # A reopen through the object itself: the kernel checks the inode's
            # permissions against the (switched) credentials, as for the task's open.
            return os.open(f"/proc/self/fd/{obj}", rflags | os.O_CLOEXEC, mode)
        finally:
            for fd in (pdir, obj):
                if fd >= 0:
                    os.close(fd)

    def stat_of(self, fd: int) -> os.stat_result:
        """``fstat(fd)``, or the stat just taken of that very descriptor by the lookup
        that returned it (one O_PATH object is otherwise stat'ed three times a call)."""
        kept, self._fst = self._fst, None
        if kept is not None and kept[0] == fd:
            return kept[1]
        return os.fstat(fd)

    # -------------------------------------------------------------- resolution
    def _hold_bases(self, c: Ctx, dirfd: int, path: bytes) -> None:
        """Open the task's root and start directory now, with our own credentials.

        ``/proc/TID/root``, ``cwd`` and ``fd/N`` need ptrace access to the task, which a
        task that changed its credentials (non-dumpable) does not give its own uid: they
        are opened before the credentials are switched for an emulated open, and the
        resolutions made under the task's credentials start from copies of them.
        """
        self._release_bases()
        if not path:
            return
        root, start = self._bases(c, dirfd, path)
        self._held = (c.tid, dirfd, path, root, start)

    def _release_bases(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            os.close(held[3])
            os.close(held[4])

    def _bases(self, c: Ctx, dirfd: int, path: bytes) -> tuple[int, int]:
        """(root fd, start fd) of a resolution, both O_PATH and owned by the caller."""
        held = self._held
        if held is not None and held[:3] == (c.tid, dirfd, path):
            root = os.dup(held[3])
            try:
                return root, os.dup(held[4])
            except BaseException:
                os.close(root)
                raise
        root = self._root_of(c)
        if path.startswith(b"/"):
            return root, os.dup(root)
        try:
            if dirfd == AT_FDCWD:
                start = os.open(f"/proc/{c.tid}/cwd", _O_PATH)
            else:
                try:
                    start = os.open(f"/proc/{c.tid}/fd/{dirfd}", _O_PATH)
                except FileNotFoundError:
                    raise OSError(errno.EBADF, "bad dirfd") from None
        except BaseException:
            os.close(root)
            raise
        return root, start

    def _root_of(self, c: Ctx) -> int:
        """The task's root (O_PATH, the caller's), from the kept ones when allowed."""
        keep = self.keep_roots()
        if keep:
            kept = self.roots.get(c.tid)
            if kept is not None:
                return os.dup(kept)
        try:
            root = os.open(f"/proc/{c.tid}/root", _O_PATH)
        except OSError as exc:
            raise Unmodelable(f"root of task {c.tid}: {exc.strerror}") from None
        if keep:
            if len(self.roots) >= MAX_ROOTS:
                self.drop_roots()
            self.roots[c.tid] = os.dup(root)
        return root

    def _lookup(self, c: Ctx, dirfd: int, path: bytes, *, follow: bool, resolve: int,
                need_parent: bool) -> tuple[int, bytes, int]:
        """(parent fd or -1, last name, object O_PATH fd or -1 when missing).

        The object is -1 only when the last component does not exist and
        ``need_parent`` is set (the parent is then an O_PATH fd of its directory).
        """
        self._fst = None  # a kept stat is only ever this lookup's own
        if not path:
            if dirfd == AT_FDCWD:
                raise OSError(errno.ENOENT, "empty path")
            try:
                obj = os.open(f"/proc/{c.tid}/fd/{dirfd}", _O_PATH)
            except FileNotFoundError:
                raise OSError(errno.EBADF, "bad fd") from None
            try:
                self._guard_object(c, obj)
            except BaseException:
                os.close(obj)
                raise
            return -1, b"", obj
        root, start = self._bases(c, dirfd, path)
        try:
            if resolve & RESOLVE_IN_ROOT:
                os.close(root)
                root = os.dup(start)
            fast = self._lookup_fast(c, root, start, path, follow, resolve, need_parent)
            if fast >= 0:
                return -1, b"", fast
            if fast == _MISSING:
                pdir = self._parent_fast(root, start, path, resolve)
                if pdir >= 0:
                    return pdir, path.rpartition(b"/")[2], -1
            w = _Walk(root, resolve)
            return self._walk(c, w, start, path, follow, need_parent)
        finally:
            os.close(root)
            os.close(start)

    def _lookup_fast(self, c: Ctx, root: int, start: int, path: bytes, follow: bool,
              resolve: int, need_parent: bool) -> int:
        """One kernel step when the path holds no symlink; -1 when it must be walked."""
        if b".." in path and not resolve & (RESOLVE_IN_ROOT | RESOLVE_BENEATH) \
                and c.proc.root != "/":
            return -1  # ".." must stop at the task's root, which may be below ours
        base = start
        res = _STEP | (resolve & (RESOLVE_NO_XDEV | RESOLVE_BENEATH | RESOLVE_IN_ROOT))
        if path.startswith(b"/"):
            if resolve & RESOLVE_BENEATH:
                raise OSError(errno.EXDEV, "absolute path beneath")
            base, res = root, res | RESOLVE_IN_ROOT
        try:
            fd = openat2(base, path, _O_PATH | (0 if follow else os.O_NOFOLLOW), 0, res)
        except OSError as exc:
            if exc.errno == errno.ENOENT and need_parent:
                return _MISSING  # the parent is needed (maybe in one step too)
            if exc.errno == errno.ELOOP:
                return -1  # a symlink on the way
            raise
        try:
            st = os.fstat(fd)
            if self._on_proc(fd, st):
                os.close(fd)
                return -1  # procfs entries are checked on the walk
        except OSError:
            os.close(fd)
            raise
        self._fst = (fd, st)
        return fd

    def _parent_fast(self, root: int, start: int, path: bytes, resolve: int) -> int:
        """The directory a missing last component would be created in, resolved in one
        kernel step like ``_lookup_fast``; -1 when the walk must decide (a symlink or
        procfs on the way, a name like '.', or anything unexpected)."""
        parent, _, name = path.rpartition(b"/")
        if not name or name in (b".", b".."):
            return -1
        res = _STEP | (resolve & (RESOLVE_NO_XDEV | RESOLVE_BENEATH | RESOLVE_IN_ROOT))
        base = start
        if path.startswith(b"/"):
            base, res = root, res | RESOLVE_IN_ROOT
            parent = parent or b"/"
        try:
            pdir = openat2(base, parent or b".", _O_PATH | os.O_DIRECTORY, 0, res)
        except OSError:
            return -1
        try:
            if self._on_proc(pdir, os.fstat(pdir)):
                raise OSError(errno.EAGAIN, "procfs: walk it")
            try:
                os.close(openat2(pdir, name, _O_PATH | os.O_NOFOLLOW, 0,
                                 _STEP | (resolve & RESOLVE_NO_XDEV)))
            except FileNotFoundError:
                return pdir  # still missing: create it there
            raise OSError(errno.EEXIST, "appeared meanwhile: walk it")
        except OSError:
            os.close(pdir)
            return -1

    def _walk(self, c: Ctx, w: _Walk, start: int, path: bytes, follow: bool,
              need_parent: bool) -> tuple[int, bytes, int]:
        cur = w.own(os.dup(start))
        cst = os.fstat(cur)
        if self._on_proc(cur, cst) and cst.st_ino != PROC_ROOT_INO:
            self._climb_check(c, cur)
        comps = path.split(b"/")[::-1]
        result: tuple[int, bytes, int] | None = None
        try:
            if path.startswith(b"/"):
                comps.pop()
            while comps:
                comp = comps.pop()
                last = not comps
                if comp in (b"", b"."):
                    if not stat.S_ISDIR(cst.st_mode):
                        raise OSError(errno.ENOTDIR, "not a directory")
                    if last:
                        result = (-1, b"", cur)
                    continue
                if not stat.S_ISDIR(cst.st_mode):
                    raise OSError(errno.ENOTDIR, "not a directory")
                if comp == b"..":
                    cur, cst = self._dotdot(w, cur, cst)
                    if last:
                        result = (-1, b"", cur)
                    continue
                try:
                    nxt = w.own(openat2(cur, comp, _O_PATH | os.O_NOFOLLOW, 0,
                                        _STEP | (w.resolve & RESOLVE_NO_XDEV)))
                except FileNotFoundError:
                    if last and need_parent:
                        result = (cur, comp, -1)
                        break
                    if need_parent and not any(comps):
                        # "missing/": O_CREAT makes no directory (the kernel says EISDIR)
                        raise IsADirectoryError(errno.EISDIR, "is a directory") from None
                    raise
                nst = os.fstat(nxt)
                if stat.S_ISLNK(nst.st_mode) and (follow or not last):
                    jump = self._follow(c, w, cur, cst, comp, nxt, nst, comps)
                    if jump is None:
                        continue
                    cur, cst = jump, os.fstat(jump)
                    if last:
                        result = (-1, b"", cur)
                    continue
                if self._on_proc(nxt, nst):
                    if not self._on_proc(cur, cst) or cst.st_dev != nst.st_dev:
                        # Entered procfs through a mount: maybe a subtree bound elsewhere.
                        if nst.st_ino != PROC_ROOT_INO:
                            self._climb_check(c, nxt)
                    elif cst.st_ino == PROC_ROOT_INO and comp.isdigit():
                        self._check_pid_dir(c, nxt)
                w.depth += 1
                if last:
                    result = (cur, comp, nxt)
                    break
                cur, cst = nxt, nst
            if result is None:
                raise OSError(errno.ENOENT, "empty path")
            return result
        finally:
            keep = {result[0], result[2]} if result is not None else set()
            for fd in w.fds:
                if fd not in keep:
                    os.close(fd)
            # The kept ones are the caller's now: dup-free hand over.

    def _dotdot(self, w: _Walk, cur: int, cst: os.stat_result) -> tuple[int, os.stat_result]:
        if w.resolve & RESOLVE_BENEATH:
            if w.depth <= 0:
                raise OSError(errno.EXDEV, "'..' leaves the start")
            w.depth -= 1
        if w.is_root(cur, cst):
            return cur, cst  # ".." of the task's root is its root
        nxt = w.own(openat2(cur, b"..", _O_PATH, 0, w.resolve & RESOLVE_NO_XDEV))
        return nxt, os.fstat(nxt)

    def _follow(self, c: Ctx, w: _Walk, cur: int, cst: os.stat_result, comp: bytes,
                link: int, lst: os.stat_result, comps: list[bytes]) -> int | None:
        """Follow the symlink ``comp`` of ``cur``: push its text onto ``comps`` (None),
        or return the object a magic link leads to."""
        if w.resolve & RESOLVE_NO_SYMLINKS:
            raise OSError(errno.ELOOP, "symbolic link")
        w.links += 1
        if w.links > MAXSYMLINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links")
        if self._on_proc(link, lst):
            if cst.st_ino == PROC_ROOT_INO and comp in (b"self", b"thread-self"):
                comps.extend(self._self_in(c, cur, comp == b"thread-self")[::-1])
                return None
            if cst.st_ino != PROC_ROOT_INO:
                # A magic link: the object it names, opened here, is the task's.
                if w.resolve & RESOLVE_NO_MAGICLINKS:
                    raise OSError(errno.ELOOP, "magic link")
                if w.resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT):
                    raise OSError(errno.EXDEV, "magic link in a scoped lookup")
                obj = w.own(openat2(cur, comp, _O_PATH, 0, 0))
                ost = os.fstat(obj)
                if self._on_proc(obj, ost) and stat.S_ISDIR(ost.st_mode) \
                        and ost.st_ino != PROC_ROOT_INO:
                    self._climb_check(c, obj)
                return obj
        if self._protected_symlinks and cst.st_mode & stat.S_ISVTX \
                and cst.st_mode & stat.S_IWOTH and lst.st_uid != cst.st_uid \
                and lst.st_uid != c.st.coe.fsuid:
            raise PermissionError(errno.EACCES, "protected symlink")
        text = _readlink_fd(link)
        if not text:
            raise OSError(errno.ENOENT, "empty symlink")
        parts = text.split(b"/")
        if text.startswith(b"/"):
            if w.resolve & RESOLVE_BENEATH:
                raise OSError(errno.EXDEV, "absolute symlink beneath")
            parts = parts[1:]
            comps.extend(parts[::-1])
            return w.own(os.dup(w.root))
        comps.extend(parts[::-1])
        return None

    # ------------------------------------------------------------------ procfs
    def _on_proc(self, fd: int, st: os.stat_result) -> bool:
        return self.fi.fs_info(fd, st.st_dev).magic == PROC_SUPER_MAGIC

    def _self_in(self, c: Ctx, procroot: int, thread: bool) -> list[bytes]:
        """The components ``self``/``thread-self`` stand for, for the task, in the procfs
        open on ``procroot`` (whose pid namespace may be any of the task's)."""
        try:
            own_ns = os.stat(f"/proc/{c.tid}/ns/pid").st_ino
            pids = _nspids(c.proc.tgid)
            tids = _nspids(c.tid) if thread else []
        except OSError as exc:
            raise Unmodelable(f"task {c.tid}: {exc.strerror}") from None
        for level, pid in enumerate(pids):
            try:
                d = openat2(procroot, str(pid).encode(), _O_PATH | os.O_DIRECTORY, 0, _STEP)
            except OSError:
                continue
            try:
                if _identity(d) != (own_ns, pids[-1]):
                    continue
            except OSError:
                continue
            finally:
                os.close(d)
            if not thread:
                return [str(pid).encode()]
            if level < len(tids):
                return [str(pid).encode(), b"task", str(tids[level]).encode()]
        # The kernel says the same: the task is not visible in that procfs.
        raise FileNotFoundError(errno.ENOENT, "task not in this procfs")

    def _check_pid_dir(self, c: Ctx, d: int) -> None:
        """Refuse a procfs process (or thread) directory of a process outside the domain."""
        try:
            ident = _identity(d)
            allowed = self._pid_allowed(d, ident)
        except OSError:
            allowed = False  # cannot tell (e.g. a process we may not inspect)
            ident = (0, 0)
        if not allowed:
            self.fault(c.n, f"procfs entry of pid {ident[1]} (pid namespace {ident[0]}), "
                            "a process outside the domain")
            raise PermissionError(errno.EACCES, "outside the domain")

    def _pid_allowed(self, d: int, ident: tuple[int, int]) -> bool:
        ns, pid = ident
        own = self.d._own_pidns
        if ns == own:
            return self.d.in_domain(pid)
        dom = self.d.pidns_ino
        if dom is None:
            return False
        if ns == dom:
            if pid in self.d.protected_nspids:
                return False
            host = self.d.host_pid(pid)
            return host is None or host not in self.d.protected
        # A pid namespace the workload made below its own?
        cur = os.open("ns/pid", os.O_RDONLY | os.O_CLOEXEC, dir_fd=d)
        try:
            for _ in range(33):
                try:
                    parent = fcntl.ioctl(cur, NS_GET_PARENT)
                except OSError:
                    return False
                os.close(cur)
                cur = parent
                ino = os.fstat(cur).st_ino
                if ino == dom:
                    return True
                if ino == own:
                    return False
            return False
        finally:
            os.close(cur)

    def _climb_check(self, c: Ctx, fd: int) -> None:
        """Check the process directory a procfs directory lies in (wherever mounted)."""
        dev = os.fstat(fd).st_dev
        d = os.dup(fd)
        try:
            for _ in range(_MAX_CLIMB):
                st = os.fstat(d)
                if st.st_dev != dev:
                    raise Unmodelable("a procfs subtree mounted outside its filesystem")
                if not stat.S_ISDIR(st.st_mode):
                    raise Unmodelable("a procfs file mounted outside its filesystem")
                if st.st_ino == PROC_ROOT_INO:
                    return
                if _is_pid_dir(d):
                    self._check_pid_dir(c, d)
                    return
                nxt = openat2(d, b"..", _O_PATH, 0, 0)
                os.close(d)
                d = nxt
            raise Unmodelable("procfs directory too deep to place")
        finally:
            os.close(d)

    def _guard_object(self, c: Ctx, fd: int) -> None:
        """An object reached without a path (a descriptor): check procfs directories."""
        st = os.fstat(fd)
        if self._on_proc(fd, st) and stat.S_ISDIR(st.st_mode) and st.st_ino != PROC_ROOT_INO:
            self._climb_check(c, fd)

    # ------------------------------------------------------------ compatibility
    def _target_path(self, c: Ctx, path: bytes) -> bytes:
        """The path unchanged: ``/proc/self`` and every other magic link are now resolved
        against the task by ``_open_in_task`` itself (kept for callers that still ask)."""
        return path

    def _guard_request(self, c: Ctx, dirfd: int, path: bytes) -> bool:
        """Always True: procfs entries are checked by process identity while
        ``_open_in_task`` resolves them (PermissionError), not by the path's text."""
        return True

    def _sees_host_proc(self, c: Ctx) -> bool:
        """Does the task's /proc show host pids (our procfs) or its own namespace's?"""
        if c.proc.root == "/":
            return True
        try:
            return os.stat(f"/proc/{c.tid}/root/proc").st_dev == os.stat("/proc").st_dev
        except OSError:
            return False

    def _proc_pid_allowed(self, c: Ctx, pid: int) -> bool:
        """May the task reach /proc/PID/... (PID as its own /proc shows it)?"""
        if not self._sees_host_proc(c):
            if pid in self.d.protected_nspids:
                return False
            host = self.d.host_pid(pid)
            return host is not None and self.d.in_domain(host)
        return self.d.in_domain(pid)

    def _display_path(self, c: Ctx, fd: int, st: os.stat_result | None = None) -> str:
        try:
            p = os.readlink(f"/proc/self/fd/{fd}")
            if st is None:
                st = os.fstat(fd)
        except OSError as exc:
            raise Unmodelable(f"cannot name the file: {exc.strerror}") from None
        self.last_link = os.fsencode(p)  # the name the description is made from
        if stat.S_ISCHR(st.st_mode) and st.st_rdev in _STALLING_DEVICES:
            # A filesystem or device the workload would serve itself: our opens, hashing
            # and reads of its memory could then wait on it forever.
            self.fault(c.n, f"{p}: a device that lets the workload stall the orchestrator")
            raise PermissionError(errno.EPERM, "device served by the workload")
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
        """A described procfs object: its process directory must be the domain's."""
        if not self._on_proc(fd, st):
            return
        if stat.S_ISDIR(st.st_mode) and st.st_ino != PROC_ROOT_INO:
            self._climb_check(c, fd)
        parts = shown.split("/")
        if (len(parts) >= 3 and parts[1] == "proc" and parts[2].isdigit()
                and not self._proc_pid_allowed(c, int(parts[2]))):
            raise PermissionError(errno.EACCES, "outside the domain")


def _misc_dev(name: str, minor: int | None) -> set[int]:
    """Device numbers of a misc device (by its fixed minor and as registered now)."""
    out = {os.makedev(10, minor)} if minor is not None else set()
    try:
        with open(f"/sys/class/misc/{name}/dev", encoding="ascii") as fp:
            major, _, mnr = fp.read().strip().partition(":")
            out.add(os.makedev(int(major), int(mnr)))
    except (OSError, ValueError):
        pass
    return out


_STALLING_DEVICES = frozenset(_misc_dev("fuse", 229) | _misc_dev("cuse", 203)
                              | _misc_dev("userfaultfd", None))


def _is_pid_dir(d: int) -> bool:
    try:
        s = os.stat("status", dir_fd=d, follow_symlinks=False)
        n = os.stat("ns", dir_fd=d, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(s.st_mode) and stat.S_ISDIR(n.st_mode)


def _identity(d: int) -> tuple[int, int]:
    """(pid namespace inode, pid there) of the process a procfs pid directory shows."""
    ns = os.stat("ns/pid", dir_fd=d).st_ino
    fd = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=d)
    try:
        data = os.read(fd, 16384)
    finally:
        os.close(fd)
    for line in data.splitlines():
        if line.startswith(b"NSpid:"):
            return ns, int(line.split()[-1])
    raise OSError(errno.EINVAL, "no NSpid")


def _nspids(tid: int) -> list[int]:
    """A task's pids from the host's pid namespace down to its own."""
    with open(f"/proc/{tid}/status", "rb") as fp:
        for line in fp.read(16384).splitlines():
            if line.startswith(b"NSpid:"):
                return [int(x) for x in line.split()[1:]]
    raise OSError(errno.EINVAL, "no NSpid")


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


