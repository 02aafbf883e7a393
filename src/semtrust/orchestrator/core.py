"""The mediation core: one notification in, events modeled, one answer out.

``MediatorCore.handle`` finds the task a notification came from, applies the
trust rules (an untrusted process is no longer modeled; denied when enforcing),
dispatches to the handler of the syscall's family and turns failures into
faults: anything that cannot be modeled is recorded and, when enforcing, denied.
"""

from __future__ import annotations

import contextlib
import errno
import os
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
)
from semtrust.events.generic import generic_body
from semtrust.events.record import Cell
from semtrust.orchestrator import syscalls as table
from semtrust.orchestrator.created import CreatedTable
from semtrust.orchestrator.emulate import (
    CredSwitcher,
)
from semtrust.orchestrator.tasks import Process, Status
from semtrust.sensors.fileinfo import DigestPending, FileInfo
from semtrust.sensors.seccomp import SYSCALLS, Listener, Notification, SeccompError

if TYPE_CHECKING:
    from semtrust.orchestrator.domain import Domain
    from semtrust.orchestrator.native import NativeDecisions

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
#: Calls after which a task's root may be another: every call of the mounts family.
_MOVES_ROOT = frozenset(e.nr for e in table.BY_NR.values() if e.family == "mounts")
#: Calls whose path argument the native path reads (open, mkdir: arg 0; the *at: arg 1).
_PATH_FIRST = frozenset(SYSCALLS[n] for n in ("open", "openat", "mkdir", "mkdirat"))
_PATH_AT_0 = frozenset(SYSCALLS[n] for n in ("open", "mkdir"))
#: Calls that leave a thread what it is (task identity, credentials, root): handling one
#: in Python keeps the thread answered natively. An untrusting outcome, or a check left
#: pending, still forgets the process (see ``handle``).
_KEEPS_THREAD = frozenset(SYSCALLS[n] for n in (
    "open", "openat", "openat2", "creat", "mmap", "mprotect", "pkey_mprotect",
    "mkdir", "mkdirat", "rename", "renameat", "renameat2"))


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



class MediatorCore:
    """State shared by every handler family, the dispatch and the modeling step.

    Handler families (``semtrust.orchestrator.handlers``) are mixins of this class;
    :class:`semtrust.orchestrator.mediator.Mediator` combines them.
    """

    def __init__(self, domain: Domain, listener: Listener) -> None:
        self.d = domain
        self.lst = listener
        self.fi = FileInfo()
        self.creds = CredSwitcher()
        self.created = CreatedTable()  # objects the domain made (see created.py)
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
        self._pseudonym_epoch = -1
        self.handlers: dict[int, Callable[[Ctx], None]] = {}
        # The native decision path, when the serve loop runs one (see native.py), and
        # what it learns from: the last coefficient decided and whether the last
        # description was of a plain object (not created, not procfs).
        self.native: NativeDecisions | None = None
        self.last_co = b""
        self.last_plain = False
        self.last_link = b""
        # (notification id, path) of an open whose path the native path already read.
        self.path_read: tuple[int, bytes] | None = None
        # Roots kept per thread (resolve.py): open O_PATH descriptors of /proc/TID/root,
        # valid while no call that may change a root is in flight. A thread that made
        # such a call is in ``root_unstable`` until its next call (which proves the
        # first one finished): until then no root is kept, ours or the native path's.
        self.roots: dict[int, int] = {}
        self.roots_gen = -1
        # Only where one listener sees every call of the domain (process mode): with
        # several (container mode's runc exec), another loop's pivot_root is not seen.
        self.roots_allowed = False
        self.root_unstable: set[int] = set()
        self.last_st: os.stat_result | None = None

    def verify_exec(self, c: Ctx) -> bool:  # the file family overrides it
        return True

    def verify_maps(self, c: Ctx) -> bool:  # the memory family overrides it
        return True

    # ------------------------------------------------------------------ entry
    def handle(self, n: Notification) -> None:
        """Decide one notification; always answers it (fail closed when enforcing)."""
        native = self.native
        if native is not None and n.nr not in _KEEPS_THREAD:
            # This call may change what the thread is. (Whatever changes tasks also bumps
            # the task table's generation, and pending exec or mapping checks are looked
            # at below; opens and mappings change nothing else of the thread.)
            native.unregister(n.pid)
        unstable = self.root_unstable
        if unstable:
            unstable.discard(n.pid)  # its previous call is over
        if n.nr in _MOVES_ROOT:
            # chroot, pivot_root, setns, unshare, the mount family: any task's root may
            # be another one once this call is done.
            unstable.add(n.pid)
            self.drop_roots()
        proc: Process | None = None
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
            if proc.map_check is not None and \
                    not self.verify_maps(Ctx(n, n.pid, proc, st)):
                return
            handler = self.handlers.get(n.nr)
            if handler is None:
                self._unhandled(n)
                return
            handler(Ctx(n, n.pid, proc, st))
        except Unmodelable as exc:
            if not self.lst.id_valid(n.id):
                # The call is gone (task killed, or interrupted and to be notified
                # again, e.g. runc init's execve under Go runtime signals): nothing happened.
                return
            self.fault(n, str(exc))
            if self.d.enforcing:
                self.lst.deny(n.id, errno.EPERM)
            else:
                self.lst.allow(n.id)
        except (SeccompError, DigestPending):
            raise  # DigestPending: answered when the digest is there (Domain.serve)
        except Exception as exc:  # a bug must not leave the task hanging
            self.fault(n, f"internal error: {exc!r}")
            if self.d.enforcing:
                self.lst.deny(n.id, errno.EPERM)
            else:
                self.lst.allow(n.id)
        finally:
            if native is not None and proc is not None and (
                    proc.untrusted or proc.exec_check is not None
                    or proc.map_check is not None):
                # Checks pending for a process (any of its threads): none is answered
                # natively until Python has made them.
                native.forget_process(proc.tgid)

    def drop_roots(self) -> None:
        """Close every kept root (ours and the native path's)."""
        roots, self.roots = self.roots, {}
        for fd in roots.values():
            os.close(fd)
        if self.native is not None:
            self.native.fp.drop_roots()

    def keep_roots(self) -> bool:
        """May a thread's root be kept now? (Dropped when the task table changed.)"""
        gen = self.d.tasks.generation
        if gen != self.roots_gen:
            self.drop_roots()
            self.roots_gen = gen
        return self.roots_allowed and not self.root_unstable

    def fault(self, n: Notification, reason: str) -> None:
        self.d.record_fault({"pid": n.pid, "syscall": n.name, "reason": reason})

    def _unhandled(self, n: Notification) -> None:
        """A call no handler models: refused by the table (or unknown to it) or a mediated
        family that is not there; a fault with its arguments, denied when enforcing."""
        e = table.lookup(n.nr)
        if e is not None and e.cls == table.INERT:
            self.lst.allow(n.id)  # only a profile that notifies more than the table does
            return
        if e is None:
            reason, err = "syscall unknown to the table: refused", table.UNKNOWN_ERRNO
        elif e.cls == table.REFUSED:
            reason, err = f"refused: {e.why}", e.errno
        else:
            reason, err = f"no handler for the {e.family} family: unmodelable", errno.EPERM
        if not self.lst.id_valid(n.id):
            return
        self.d.record_fault({"pid": n.pid, "syscall": n.name, "reason": reason,
                             "args": [f"{a:#x}" for a in n.args]})
        if self.d.enforcing:
            self.lst.deny(n.id, err)
        else:
            self.lst.allow(n.id)

    # ---------------------------------------------------------------- helpers
    def _mem(self, c: Ctx) -> int:
        if c.proc.mem_fd < 0:
            try:
                c.proc.mem_fd = os.open(f"/proc/{c.tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise Unmodelable(f"/proc/{c.tid}/mem: {exc.strerror}") from None
        return c.proc.mem_fd

    def _fresh_mem(self, c: Ctx) -> bool:
        """Reopen the task's memory file; True if it named an address space that is gone.

        The file follows the address space it was opened on: one opened while an exec
        was pending (another thread's call in that window) reads as empty afterwards.
        """
        if c.proc.mem_fd < 0:
            return False
        try:
            fresh = os.open(f"/proc/{c.tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        old, c.proc.mem_fd = c.proc.mem_fd, fresh
        os.close(old)
        return True

    def read_mem(self, c: Ctx, addr: int, size: int) -> bytes:
        try:
            data = os.pread(self._mem(c), size, addr)
            if not data and size and self._fresh_mem(c):
                data = os.pread(self._mem(c), size, addr)
            return data
        except OSError as exc:
            raise Unmodelable(f"read of task memory failed: {exc.strerror}") from None

    def read_path(self, c: Ctx, addr: int) -> bytes | None:
        """The path argument at ``addr``; None after failing the call as the kernel would
        (a bad pointer is the task's own error, not an unmodelable event)."""
        pre, self.path_read = self.path_read, None
        if pre is not None and pre[0] == c.n.id and c.n.nr in _PATH_FIRST \
                and addr == c.n.args[0 if c.n.nr in _PATH_AT_0 else 1]:
            return pre[1]  # read once, by the native path, for this very notification
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
        refreshed = False
        while len(out) < PATH_MAX:
            size = min(256, 4096 - (addr % 4096))
            try:
                chunk = os.pread(fd, size, addr)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    raise OSError(errno.EFAULT, "bad address") from None
                raise Unmodelable(f"read of task memory failed: {exc.strerror}") from None
            if not chunk and not refreshed and self._fresh_mem(c):
                refreshed = True
                fd = self._mem(c)
                continue
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
        if tma.pseudonym_epoch != self._pseudonym_epoch:
            # Cached coefficients were computed under another pseudonym set.
            self._coef.clear()
            self._fast.clear()
            self._pseudonym_epoch = tma.pseudonym_epoch
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
            self.last_co = co
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


    def _pidfd(self, c: Ctx) -> int:
        if c.proc.pidfd < 0:
            try:
                c.proc.pidfd = os.pidfd_open(c.proc.tgid)
            except OSError as exc:
                raise Unmodelable(f"pidfd_open: {exc.strerror}") from None
        return c.proc.pidfd

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


    def _unmodelable(self, c: Ctx) -> None:
        raise Unmodelable(f"{c.n.name} cannot be modeled")
