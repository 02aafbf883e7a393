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

from semtrust.orchestrator.core import Ctx, MediatorCore, Pending, Unmodelable, _kernel_flags
from semtrust.orchestrator.handlers import (
    create,
    creds,
    files,
    memory,
    process,
    signals,
    sockets,
)
from semtrust.orchestrator.handlers.sockets import parse_sockaddr, sockname_addr
from semtrust.sensors.seccomp import SYSCALLS, Listener

if TYPE_CHECKING:
    from semtrust.orchestrator.domain import Domain

__all__ = ["Ctx", "Mediator", "MediatorCore", "Pending", "Unmodelable", "_kernel_flags",
           "parse_sockaddr", "sockname_addr"]

FAMILIES = (files, memory, sockets, signals, creds, process, create)


class Mediator(files.FileHandlers, memory.MemoryHandlers, sockets.SocketHandlers,
               signals.SignalHandlers, creds.CredHandlers, process.ProcessHandlers,
               create.CreateHandlers):
    """Every handler family of one domain (see module docstring)."""

    def __init__(self, domain: Domain, listener: Listener) -> None:
        super().__init__(domain, listener)
        for fam in FAMILIES:
            for name, meth in fam.HANDLERS.items():
                if name in SYSCALLS:
                    self.handlers[SYSCALLS[name]] = getattr(self, meth)
