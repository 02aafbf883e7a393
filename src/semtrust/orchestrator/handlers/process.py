"""Processes: ptrace and friends, forks (lineage), namespaces, io_uring."""

from __future__ import annotations

import errno

from semtrust.orchestrator.core import SWEEP_EVERY, Ctx, MediatorCore, _s32


class ProcessHandlers(MediatorCore):
    """Processes: ptrace and friends, forks (lineage), namespaces, io_uring."""

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

    def _io_uring(self, c: Ctx) -> None:
        # io_uring performs opens/connects without system calls: not mediable.
        self.lst.deny(c.n.id, errno.ENOSYS)



#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "ptrace": "_ptrace", "process_vm_readv": "_ptrace", "process_vm_writev": "_ptrace",
    "pidfd_getfd": "_ptrace", "clone": "_clone", "fork": "_clone", "vfork": "_clone", "clone3":
    "_clone", "unshare": "_nsop", "setns": "_nsop", "chroot": "_nsop", "pivot_root": "_nsop",
    "io_uring_setup": "_io_uring",
}
