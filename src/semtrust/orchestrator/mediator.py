"""Turn seccomp notifications into TSEM events, model them, answer the kernel.

One :class:`Mediator` per domain. ``handle(notification)`` reads the call's
arguments from the task (``/proc/PID/mem``), describes the object acted on in
the TSEM export shape, runs the events through the domain's TMA and answers:
CONTINUE (allowed, learning/sealed), an injected fd (an emulated open while
enforcing), or an errno. Anything that cannot be modeled is recorded as a
fault and, when enforcing, denied.

The pieces: :mod:`~semtrust.orchestrator.core` (dispatch, modeling, faults),
:mod:`~semtrust.orchestrator.resolve` (task-relative paths),
:mod:`~semtrust.orchestrator.objects` (file descriptions) and one handler module
per syscall family in :mod:`semtrust.orchestrator.handlers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from semtrust.orchestrator import syscalls as table
from semtrust.orchestrator.core import Ctx, MediatorCore, Pending, Unmodelable, _kernel_flags
from semtrust.orchestrator.handlers import (
    create,
    creds,
    files,
    inodes,
    memory,
    mounts,
    process,
    signals,
    sockets,
    system,
)
from semtrust.orchestrator.handlers.sockets import parse_sockaddr, sockname_addr
from semtrust.sensors.seccomp import SYSCALLS, Listener

if TYPE_CHECKING:
    from semtrust.orchestrator.domain import Domain

__all__ = ["Ctx", "Mediator", "MediatorCore", "Pending", "Unmodelable", "_kernel_flags",
           "parse_sockaddr", "sockname_addr"]

FAMILIES = (files, memory, sockets, signals, creds, process, inodes, mounts, system, create)


class Mediator(mounts.MountHandlers, memory.MemoryHandlers, inodes.InodeHandlers,
               create.CreateHandlers, sockets.SocketHandlers, process.ProcessHandlers,
               creds.CredHandlers, system.SystemHandlers):
    """Every handler family of one domain (see module docstring)."""

    def __init__(self, domain: Domain, listener: Listener) -> None:
        super().__init__(domain, listener)
        for fam in FAMILIES:
            for name, meth in fam.HANDLERS.items():
                # Only what the table mediates reaches a handler; a refused or inert
                # name is answered by the table's policy, not by a stale handler.
                e = table.BY_NAME[name]
                if e.cls == table.MEDIATED or name in ("open_by_handle_at", "uselib",
                                                       "io_uring_setup"):
                    self.handlers[SYSCALLS[name]] = getattr(self, meth)
