"""Opens and execs: file_open and bprm_committed_creds events."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct

from semtrust.events import (
    Coe,
    FileCell,
    GenericCell,
)
from semtrust.events.generic import generic_body
from semtrust.model.coefficient import task_identity
from semtrust.orchestrator.core import (
    _NOOP,
    _NR,
    AT_EMPTY_PATH,
    AT_SYMLINK_NOFOLLOW,
    FMODE_EXEC,
    O_ACCMODE,
    O_CLOEXEC,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_NOCTTY,
    O_NOFOLLOW,
    O_PATH,
    O_TMPFILE,
    O_TRUNC,
    VALID_OPEN_FLAGS,
    Ctx,
    Unmodelable,
    _Observe,
    _s32,
)
from semtrust.orchestrator.emulate import AT_FDCWD
from semtrust.orchestrator.objects import Describer
from semtrust.sensors.seccomp import SeccompError


class FileHandlers(Describer):
    """Opens and execs: file_open and bprm_committed_creds events."""

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
        if not path:
            self.lst.deny(c.n.id, errno.ENOENT)
            return
        creating = bool(flags & O_CREAT) or (flags & O_TMPFILE) == O_TMPFILE
        emulate = (self.d.enforcing or self.d.emulate_opens or creating) \
            and not flags & O_PATH
        if self.native is not None:
            self.native.note_path(path)
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
        except OSError as exc:
            # The kernel would fail the call the same way: fail it with that error rather
            # than let the kernel resolve again what we could not (never an allow).
            self.lst.deny(c.n.id, exc.errno or errno.EACCES)
            return
        try:
            try:
                desc = self._describe(c, fd, flags, readable=True)
            except PermissionError as exc:
                self.lst.deny(c.n.id, exc.errno or errno.EACCES)
                return
        finally:
            os.close(fd)
        if self.decide(c, [self.event(c, "file_open", self.file_cell(desc))]):
            self.lst.deny(c.n.id, errno.EPERM)
            return
        self._note_writable(flags, self.last_st)
        if self.lst.allow(c.n.id) and self.native is not None and not self.d.enforcing:
            self.native.learn(c, flags)

    def _open_emulated(self, c: Ctx, dirfd: int, path: bytes, flags: int, mode: int,
                       resolve: int, creating: bool) -> None:
        """Open the object ourselves as the task, check that very object, inject it.

        The path is resolved once, to an ``O_PATH`` descriptor (no side effects: a FIFO is
        not opened, a device not touched); the real open goes through that descriptor, so
        the object checked is the object opened and injected.
        """
        cloexec = bool(flags & O_CLOEXEC)
        res = resolve
        tmpfile = (flags & O_TMPFILE) == O_TMPFILE
        created = False
        fd = -1
        try:
            switch = self.creds.needed(c.st)
            if switch:
                self._hold_bases(c, dirfd, path)
            with self.creds.as_task(c.st) if switch else _NOOP:
                if tmpfile:
                    fd = self._open_in_task(c, dirfd, path, flags | O_NOCTTY | O_CLOEXEC,
                                            mode & ~c.st.umask, res)
                    created = True
                else:
                    fd, created = self._open_via_path_fd(c, dirfd, path, flags, mode, res,
                                                         creating)
        except _Observe:
            self._release_bases()
            self._open_observed(c, dirfd, path, flags, resolve)
            return
        except OSError as exc:
            self.lst.deny(c.n.id, exc.errno or errno.EACCES)
            return
        finally:
            self._release_bases()
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
            self._note_writable(flags, st)
            if flags & O_TRUNC and not created and stat.S_ISREG(st.st_mode):
                try:
                    with self.creds.as_task(c.st) if self.creds.needed(c.st) else _NOOP:
                        os.truncate(f"/proc/self/fd/{fd}", 0)
                except OSError as exc:
                    self.lst.deny(c.n.id, exc.errno or errno.EACCES)
                    return
            try:
                self.lst.addfd_send(c.n.id, fd, cloexec=cloexec)
            except SeccompError as exc:
                if exc.errno == errno.ENOENT:
                    return  # task gone
                raise
            if self.native is not None and not created:
                self.native.learn(c, flags)
        finally:
            if fd >= 0:
                os.close(fd)

    def _note_writable(self, flags: int, st: os.stat_result | None) -> None:
        """A domain process gets a regular file open for reading and writing: it can map
        it shared and writable and change its content with no new time stamps, so the
        file is hashed afresh at every later description, natively too."""
        if st is None or (flags & O_ACCMODE) != os.O_RDWR or not stat.S_ISREG(st.st_mode):
            return
        self.fi.note_writable(st.st_dev, st.st_ino)
        if self.native is not None:
            self.native.forget_object(st.st_dev, st.st_ino)

    def _open_via_path_fd(self, c: Ctx, dirfd: int, path: bytes, flags: int, mode: int,
                          res: int, creating: bool) -> tuple[int, bool]:
        """(fd, created) for a non-O_TMPFILE emulated open; raises OSError like the kernel."""
        # O_CREAT|O_EXCL never follows a symlink in the last place (it "exists").
        nofollow = O_NOFOLLOW if creating and flags & O_EXCL else flags & O_NOFOLLOW
        for _attempt in range(3):
            try:
                pfd = self._open_in_task(c, dirfd, path,
                                         os.O_PATH | os.O_CLOEXEC | nofollow
                                         | (flags & O_DIRECTORY), 0, res)
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
                st = self.stat_of(pfd)
                if stat.S_ISFIFO(st.st_mode):
                    raise _Observe  # opening would block us (or act as its partner)
                if stat.S_ISLNK(st.st_mode):
                    raise OSError(errno.ELOOP, "symbolic link")  # O_NOFOLLOW
                # O_TRUNC is applied only once the open is allowed (_truncate): the file
                # is described as the kernel's file_open hook sees it, before truncation.
                rflags = (flags | O_NOCTTY | O_CLOEXEC) & ~(O_CREAT | O_EXCL | O_NOFOLLOW
                                                            | O_TRUNC)
                fd = os.open(f"/proc/self/fd/{pfd}", rflags)
                if flags & O_TRUNC and (flags & O_ACCMODE) == os.O_RDONLY \
                        and stat.S_ISREG(st.st_mode) \
                        and not os.access(f"/proc/self/fd/{fd}", os.W_OK, effective_ids=True):
                    os.close(fd)  # O_TRUNC asks for write permission, even read-only
                    raise PermissionError(errno.EACCES, "no write permission to truncate")
                return fd, False
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
            if not path and not atflags & AT_EMPTY_PATH:
                raise OSError(errno.ENOENT, "empty path")
            fd = self._open_in_task(c, dirfd, path, oflags, 0, 0)
        except OSError as exc:
            self.lst.deny(c.n.id, exc.errno or errno.ENOENT)  # as the kernel would fail it
            return
        try:
            fst = os.fstat(fd)
            kind = self._exec_kind(fd) if stat.S_ISREG(fst.st_mode) else "none"
            if not fst.st_mode & 0o111 or kind == "none":
                self.lst.allow(c.n.id)  # EACCES/ENOEXEC from the kernel, no exec happens
                return
            exe_open = self._describe(c, fd, os.O_RDONLY | FMODE_EXEC, readable=True)
            model_file = self._models_exec_open(fd)
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
        if not model_file:  # another sensor (container mode's fanotify) models it
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
            # The call was interrupted (e.g. a Go runtime signal in runc init) and
            # will be notified again: keep the identity it had, or each retry would chain
            # a new one and learning would not be repeatable.
            proc.parent_task_id, proc.task_id, proc.fork_task_id = before

    def _models_exec_open(self, fd: int) -> bool:
        """Does this handler model the executable's file_open (``fd``: the executable)?"""
        return self.d.model_exec_file

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



#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "open": "_open", "openat": "_open", "openat2": "_open", "creat": "_open", "execve": "_exec",
    "execveat": "_exec", "open_by_handle_at": "_unmodelable", "uselib": "_unmodelable",
}
