"""Signals: task_kill events; the listener holders are off limits."""

from __future__ import annotations

import errno

from semtrust.events import (
    TaskKillCell,
)
from semtrust.orchestrator.core import _NR, Ctx, MediatorCore, _s32


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



#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "kill": "_kill", "tkill": "_kill", "tgkill": "_kill", "rt_sigqueueinfo": "_kill",
    "rt_tgsigqueueinfo": "_kill", "pidfd_send_signal": "_kill",
}
