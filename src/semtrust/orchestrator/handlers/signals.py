"""Signals: task_kill events, SIGIO ownership; the listener holders are off limits.

``fcntl(F_SETOWN/F_SETOWN_EX)`` and ``ioctl(FIOSETOWN/SIOCSPGRP)`` choose who gets
SIGIO (or the ``F_SETSIG`` signal, SIGKILL included) with no later system call:
the owner must be a process of the domain, never the holder or keeper, in every
mode.
"""

from __future__ import annotations

import errno
import os
import struct

from semtrust.events import (
    TaskKillCell,
)
from semtrust.orchestrator.core import _NR, Ctx, MediatorCore, _s32
from semtrust.orchestrator.syscalls import (
    F_SETOWN,
    F_SETOWN_EX,
    F_SETSIG,
    FIOSETOWN,
    SIOCSPGRP,
)

F_OWNER_TID = 0
F_OWNER_PID = 1
F_OWNER_PGRP = 2


class SignalHandlers(MediatorCore):
    """Signals: task_kill events; the listener holders are off limits."""

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


    # ------------------------------------------------------------ SIGIO owner
    def target_ok(self, nspid: int) -> bool:
        """Is ``nspid`` (as the workload names it) an unprotected process of the domain?"""
        if nspid <= 0 or nspid in self.d.protected_nspids:
            return False
        host = self.d.host_pid(nspid)
        return host is not None and host not in self.d.protected and self.d.in_domain(host)

    def group_ok(self, pgid: int) -> bool:
        """Is every member of process group ``pgid`` an unprotected domain process?"""
        if pgid <= 0:
            return False
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return False
        host_pgid = self.d.host_pid(pgid)
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat", "rb") as fp:
                    stat = fp.read(1024)
                fields = stat[stat.rindex(b")") + 2:].split()
                group = int(fields[2])
            except (OSError, ValueError, IndexError):
                continue
            if group in (pgid, host_pgid) and (pid in self.d.protected
                                               or not self.d.in_domain(pid)):
                return False
        return True

    def refuse_target(self, c: Ctx, what: str) -> None:
        """Denied in every mode: the call would reach outside the domain."""
        self.fault(c.n, f"{what}: target outside the domain or protected")
        self.lst.deny(c.n.id, errno.EPERM)

    def _owner(self, c: Ctx, cmd: int, kind: int, who: int) -> None:
        if who == 0:
            owner = "none"
        elif kind == F_OWNER_PGRP:
            if not self.group_ok(who):
                self.refuse_target(c, f"SIGIO owner group {who}")
                return
            owner = "group"
        elif not self.target_ok(who):
            self.refuse_target(c, f"SIGIO owner {who}")
            return
        else:
            owner = "task" if kind == F_OWNER_TID else "process"
        self.check_valid(c)
        self._generic(c, "file_fcntl", {"syscall": c.n.name, "cmd": cmd, "owner": owner})

    def _fcntl(self, c: Ctx) -> None:
        a = c.n.args
        cmd = a[1] & 0xFFFFFFFF
        if cmd == F_SETSIG:
            self._generic(c, "file_fcntl", {"syscall": "fcntl", "cmd": cmd,
                                            "sig": a[2] & 0xFFFFFFFF})
        elif cmd == F_SETOWN:
            who = _s32(a[2])
            self._owner(c, cmd, F_OWNER_PGRP if who < 0 else F_OWNER_PID, abs(who))
        elif cmd == F_SETOWN_EX:
            raw = self.read_mem(c, a[2], 8)
            if len(raw) < 8:
                self.lst.deny(c.n.id, errno.EFAULT)
                return
            kind, who = struct.unpack("=ii", raw)
            if kind not in (F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP):
                self.lst.deny(c.n.id, errno.EINVAL)
                return
            self._owner(c, cmd, kind, who)
        else:
            self.lst.allow(c.n.id)

    def _ioctl(self, c: Ctx) -> None:
        a = c.n.args
        cmd = a[1] & 0xFFFFFFFF
        if cmd in (FIOSETOWN, SIOCSPGRP):
            raw = self.read_mem(c, a[2], 4)
            if len(raw) < 4:
                self.lst.deny(c.n.id, errno.EFAULT)
                return
            who = struct.unpack("=i", raw)[0]
            self._owner(c, cmd, F_OWNER_PGRP if who < 0 else F_OWNER_PID, abs(who))
            return
        # Terminal input injection (TIOCSTI, TIOCLINUX): a file_ioctl event.
        self._generic(c, "file_ioctl", {"syscall": "ioctl", "cmd": cmd})


#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "fcntl": "_fcntl", "ioctl": "_ioctl",
    "kill": "_kill", "tkill": "_kill", "tgkill": "_kill", "rt_sigqueueinfo": "_kill",
    "rt_tgsigqueueinfo": "_kill", "pidfd_send_signal": "_kill",
}
