"""Container mode: an unmodified OCI container (runc) in a modeling domain.

Two processes share the work, so the one that touches the workload holds almost no
privilege and each can stop the container if the other dies (fail closed):

* the **keeper** (the ``semtrust run --bundle`` process, or the detached daemon of the
  OCI wrapper) keeps the capabilities runc needs: it copies the rootfs onto its own
  tmpfs, creates the fanotify group and marks that filesystem, starts runc, holds copies
  of the fanotify fd and of every seccomp listener fd, and kills the domain's cgroup if
  the mediator dies;
* the **mediator** (``python -m semtrust.orchestrator.container mediator PLAN``) holds
  the domain (TMA, trust table, management socket), answers fanotify permission events
  (file opens and execs, decided on the opened file itself) and serves every seccomp
  listener runc hands over through ``linux.seccomp.listenerPath`` with the process mode's
  mediator (everything else: exec identity, sockets, signals, set*id, ptrace, mmap).
  It drops every capability except CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH and CAP_KILL
  before it touches any workload event.

The seccomp profile is the process mode's allowlist (``profile.py``). Each open is
mediated once: the seccomp side emulates it (``opens.py``) and fanotify lets the
mediator's own open through; fanotify models what the kernel opens itself (executables
on the mounts it gates, the interpreters an exec loads).
"""

from __future__ import annotations

from semtrust.orchestrator.container.caps import MEDIATOR_CAPS, drop_capabilities
from semtrust.orchestrator.container.cgroups import cgroup2_root, cgroup_of, kill_cgroup
from semtrust.orchestrator.container.files import FileMediator
from semtrust.orchestrator.container.keeper import Keeper, open_fanotify, run_container
from semtrust.orchestrator.container.opener import O_LARGEFILE, opener_flags
from semtrust.orchestrator.container.prepare import find_runc, prepare
from semtrust.orchestrator.container.profile import container_profile, notify_syscalls
from semtrust.orchestrator.container.state import (
    STALE_AFTER_S,
    STATE_LOCK,
    Plan,
    cleanup_state,
    held_locks,
    hold_state_lock,
    state_lock_fd,
    state_root,
    sweep_stale_state,
)

__all__ = [
    "MEDIATOR_CAPS", "O_LARGEFILE", "STALE_AFTER_S", "STATE_LOCK", "FileMediator", "Keeper",
    "Plan", "cgroup2_root", "cgroup_of", "cleanup_state", "container_profile",
    "drop_capabilities", "find_runc", "held_locks", "hold_state_lock", "kill_cgroup",
    "notify_syscalls", "open_fanotify", "opener_flags", "prepare", "run_container",
    "state_lock_fd", "state_root", "sweep_stale_state",
]
