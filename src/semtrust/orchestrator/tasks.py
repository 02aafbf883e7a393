"""Processes of a modeling domain: credentials, task identity and trust.

TSEM keeps a task identity per process (spec §2.2): computed at exec over the
parent's identity, the COE and the executable, inherited at fork. Trust is
sticky and inherited: once a process is untrusted, it and every descendant
stay untrusted. This module keeps both, keyed by host thread-group id, plus a
per-thread cache of ``/proc/TID/status`` that the mediator invalidates whenever a
mediated call can change credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from semtrust.events import Coe

ZERO = bytes(32)


#: (parent_task_id, task_id, fork_task_id) of a process.
Identity = tuple[bytes, bytes, bytes | None]
#: (checked exe dev/ino, previous exe dev/ino, identity before the exec).
ExecCheck = tuple[tuple[int, int], tuple[int, int] | None, Identity]


@dataclass(slots=True)
class Status:
    """What ``/proc/TID/status`` says about one thread."""

    name: str
    tgid: int
    ppid: int
    nspid: int
    coe: Coe
    capbnd: int
    capamb: int
    umask: int
    groups: tuple[int, ...]


def read_status(tid: int) -> Status:
    """Parse ``/proc/TID/status`` (one bounded read). Raises OSError if the task is gone."""
    fd = os.open(f"/proc/{tid}/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 16384)
    finally:
        os.close(fd)
    f: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        k, _, v = line.partition(":")
        f[k] = v.strip()
    try:
        uids = [int(x) for x in f["Uid"].split()]
        gids = [int(x) for x in f["Gid"].split()]
        nspid = f.get("NSpid", str(tid)).split()
        coe = Coe(uids[0], uids[1], uids[2], gids[0], gids[1], gids[2], uids[3], gids[3],
                  int(f["CapEff"], 16))
        return Status(
            name=f.get("Name", ""),
            tgid=int(f["Tgid"]),
            ppid=int(f["PPid"]),
            nspid=int(nspid[-1]),
            coe=coe,
            capbnd=int(f.get("CapBnd", "0"), 16),
            capamb=int(f.get("CapAmb", "0"), 16),
            umask=int(f.get("Umask", "0022"), 8),
            groups=tuple(int(x) for x in f.get("Groups", "").split()),
        )
    except (KeyError, ValueError, IndexError) as exc:
        raise OSError(f"unparseable /proc/{tid}/status: {exc}") from None


def task_root(tgid: int) -> str:
    """The root directory of a process, as a path the supervisor can resolve under.

    A pivot_root'ed container in its own mount namespace reads as "/" through
    readlink: compare the directories themselves and name such a root through /proc, so
    that paths resolve inside the container, not on the host.
    """
    try:
        root = os.readlink(f"/proc/{tgid}/root")
        if root == "/":
            mine, theirs = os.stat("/"), os.stat(f"/proc/{tgid}/root")
            if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
                root = f"/proc/{tgid}/root"
            elif os.stat(f"/proc/{tgid}/ns/mnt").st_ino != _OWN_MNTNS:
                # Same root directory, other mounts (unshare -m + bind mounts):
                # resolve through the task's own root so its mounts are the ones walked.
                root = f"/proc/{tgid}/root"
        return root
    except OSError:
        return "/"


try:
    _OWN_MNTNS = os.stat("/proc/self/ns/mnt").st_ino
except OSError:
    _OWN_MNTNS = 0


@dataclass(slots=True)
class Process:
    """One process (thread group) of the domain."""

    tgid: int
    parent: int
    task_id: bytes = ZERO
    parent_task_id: bytes = ZERO
    fork_task_id: bytes | None = None
    untrusted: bool = False
    nspid: int = 0
    comm: str = ""
    root: str = "/"
    children: set[int] = field(default_factory=set)
    mem_fd: int = -1
    pidfd: int = -1
    # After an allowed exec of an ELF file: (checked dev/ino, previous exe dev/ino, identity
    # before the exec), verified at the process's next mediated call (Mediator.verify_exec).
    exec_check: ExecCheck | None = None
    # After an allowed executable file mapping: the (dev, ino) of every file the process
    # may have executable mappings of, verified against /proc/PID/maps at its next
    # mediated call (Mediator.verify_maps).
    map_check: bytes | None = None  # the task identity the mapping was made under
    map_known: set[tuple[int, int]] = field(default_factory=set)
    map_known_id: bytes | None = None  # the program image map_known belongs to


class TaskTable:
    """Per-process identity and trust, per-thread credential cache."""

    def __init__(self) -> None:
        self.procs: dict[int, Process] = {}
        self.threads: dict[int, tuple[int, Status | None]] = {}  # tid -> (tgid, status)
        self.by_nspid: dict[int, int] = {}
        # Bumped by everything that changes what a known thread is (credentials, trust,
        # identity, which threads exist): the native decision path re-registers threads.
        self.generation = 0

    def thread(self, tid: int) -> tuple[Process, Status]:
        """The process of thread ``tid`` and the thread's current credentials."""
        ent = self.threads.get(tid)
        if ent is not None and ent[1] is not None:
            return self.procs[ent[0]], ent[1]
        st = read_status(tid)
        proc = self.procs.get(st.tgid)
        if proc is None:
            proc = self._new_process(st)
        else:
            # Re-read with the credentials: runc init opens files before its
            # pivot_root, and exec may follow a chroot; the root must be the current one.
            proc.root = task_root(st.tgid)
        proc.comm = st.name
        self.threads[tid] = (st.tgid, st)
        return proc, st

    def _new_process(self, st: Status) -> Process:
        parent = self.procs.get(st.ppid)
        proc = Process(st.tgid, st.ppid, nspid=st.nspid, comm=st.name)
        proc.root = task_root(st.tgid)
        if parent is not None:
            inherited = parent.fork_task_id if parent.fork_task_id is not None \
                else parent.task_id
            proc.task_id = inherited
            proc.parent_task_id = parent.parent_task_id
            proc.untrusted = parent.untrusted
            parent.children.add(st.tgid)
        self.procs[st.tgid] = proc
        self.by_nspid[st.nspid] = st.tgid
        return proc

    def invalidate(self, tid: int) -> None:
        """Forget the cached credentials of ``tid`` (they may change with this call)."""
        self.generation += 1
        ent = self.threads.get(tid)
        if ent is not None:
            self.threads[tid] = (ent[0], None)

    def invalidate_threads(self, tgid: int) -> None:
        """Forget the credentials and root of every thread of a process (chroot, setns...)."""
        self.generation += 1
        for tid, ent in list(self.threads.items()):
            if ent[0] == tgid:
                self.threads[tid] = (tgid, None)

    def invalidate_process(self, tgid: int) -> None:
        """Forget every thread of a process (exec replaces them all)."""
        self.generation += 1
        for tid, ent in list(self.threads.items()):
            if ent[0] == tgid:
                del self.threads[tid]
        proc = self.procs.get(tgid)
        if proc is not None and proc.mem_fd >= 0:
            os.close(proc.mem_fd)
            proc.mem_fd = -1

    def mark_untrusted(self, tgid: int) -> list[int]:
        """Mark a process and all its known descendants untrusted; return those newly marked."""
        self.generation += 1
        marked: list[int] = []
        todo = [tgid]
        seen: set[int] = set()
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            p = self.procs.get(t)
            if p is None:
                continue
            if not p.untrusted:
                p.untrusted = True
                marked.append(t)
            todo.extend(p.children)
        return marked

    def sweep(self) -> int:
        """Forget processes and threads that have exited; return how many processes went.

        Run regularly (every few forks) so a recycled pid never inherits a dead
        process's identity, trust or cached credentials, and descriptors do not leak.
        """
        self.generation += 1
        # list() snapshots: several serve() threads may share this table.
        for tid in [t for t in list(self.threads) if not os.path.exists(f"/proc/{t}")]:
            self.threads.pop(tid, None)
        dead = [t for t in list(self.procs) if not os.path.exists(f"/proc/{t}")]
        for tgid in dead:
            p = self.procs.pop(tgid, None)
            if p is None:
                continue
            for fd in (p.mem_fd, p.pidfd):
                if fd >= 0:
                    os.close(fd)
            if self.by_nspid.get(p.nspid) == tgid:
                del self.by_nspid[p.nspid]
            parent = self.procs.get(p.parent)
            if parent is not None:
                parent.children.discard(tgid)
                parent.children.update(p.children)  # keep descendants reachable
            for kid in p.children:
                k = self.procs.get(kid)
                if k is not None:
                    k.parent = p.parent
        return len(dead)

    def untrusted(self) -> list[int]:
        return [p.tgid for p in self.procs.values() if p.untrusted]

    def close(self) -> None:
        for p in self.procs.values():
            for fd in (p.mem_fd, p.pidfd):
                if fd >= 0:
                    os.close(fd)
            p.mem_fd = p.pidfd = -1
