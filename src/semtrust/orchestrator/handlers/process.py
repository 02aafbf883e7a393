"""Processes: ptrace and friends, forks (lineage), task_* events on other tasks."""

from __future__ import annotations

import errno

from semtrust.orchestrator.core import SWEEP_EVERY, Ctx, _s32
from semtrust.orchestrator.handlers.signals import SignalHandlers

PRIO_PROCESS = 0
IOPRIO_WHO_PROCESS = 1
_TASK_EVENT = {
    "setpriority": "task_setnice", "ioprio_set": "task_setioprio",
    "sched_setparam": "task_setscheduler", "sched_setscheduler": "task_setscheduler",
    "sched_setattr": "task_setscheduler", "sched_setaffinity": "task_setscheduler",
    "prlimit64": "task_prlimit",
}


class ProcessHandlers(SignalHandlers):
    """Processes: ptrace and friends, forks (lineage), task_* events on other tasks."""

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

    def _reach(self, c: Ctx) -> None:
        """kcmp, process_madvise, migrate_pages, move_pages, get_robust_list: another
        task's memory or descriptors; only inside the domain (every mode)."""
        a = c.n.args
        name = c.n.name
        if name == "process_madvise":
            host = self._pidfd_target(c, _s32(a[0]))
            ok = host is not None and self.d.in_domain(host)
        elif name == "kcmp":
            ok = all(self.target_ok(_s32(p)) for p in (a[0], a[1]))
        else:
            ok = self.target_ok(_s32(a[0]))
        if not ok:
            self.refuse_target(c, name)
            return
        self._generic(c, "ptrace_access_check", {"syscall": name})

    def _task_other(self, c: Ctx) -> None:
        """Priority, scheduling and limits of a task named by pid."""
        a = c.n.args
        name = c.n.name
        body: dict[str, object] = {"syscall": name}
        if name in ("setpriority", "ioprio_set"):
            which, who = a[0] & 0xFFFFFFFF, _s32(a[1])
            single = PRIO_PROCESS if name == "setpriority" else IOPRIO_WHO_PROCESS
            body["which"] = which
            # A group or a user (root: the orchestrator too) cannot be kept in the domain.
            if which != single or not self.target_ok(who):
                self.refuse_target(c, name)
                return
        elif not self.target_ok(_s32(a[0])):
            self.refuse_target(c, name)
            return
        self._generic(c, _TASK_EVENT[name], body)

    def _prctl(self, c: Ctx) -> None:
        # Credentials or dumpability may change: re-read them at the next call.
        self.d.tasks.invalidate(c.tid)
        self._generic(c, "task_prctl", {"option": c.n.args[0] & 0xFFFFFFFF,
                                        "arg2": c.n.args[1] & 0xFFFFFFFF})

    def _io_uring(self, c: Ctx) -> None:
        # io_uring performs opens/connects without system calls: not mediable.
        self.lst.deny(c.n.id, errno.ENOSYS)



#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "ptrace": "_ptrace", "process_vm_readv": "_ptrace", "process_vm_writev": "_ptrace",
    "pidfd_getfd": "_ptrace", "clone": "_clone", "fork": "_clone", "vfork": "_clone", "clone3":
    "_clone", "io_uring_setup": "_io_uring", "kcmp": "_reach", "process_madvise": "_reach",
    "migrate_pages": "_reach", "move_pages": "_reach", "get_robust_list": "_reach",
    "setpriority": "_task_other", "ioprio_set": "_task_other", "prctl": "_prctl",
    **{name: "_task_other" for name in ("sched_setparam", "sched_setscheduler",
                                        "sched_setattr", "sched_setaffinity", "prlimit64")},
}
