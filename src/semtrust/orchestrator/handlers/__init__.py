"""Syscall handlers, one module per family (files, memory, sockets, signals, ...).

Each module defines one mixin of :class:`semtrust.orchestrator.core.MediatorCore`
and a ``HANDLERS`` table from syscall name to the method that mediates it.
"""
