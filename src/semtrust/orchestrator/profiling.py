"""Profiling the orchestrator, only when asked for in ``SEMTRUST_PROFILE``.

The orchestrator makes itself non-dumpable so that a workload running as the
same user cannot ptrace it or read its memory and forge verdicts. That also
blinds py-spy and perf. ``SEMTRUST_PROFILE`` (a comma-separated list, read by
``semtrust run``) opens two ways in, for benchmarks:

* ``cprofile:PATH`` writes a cProfile (pstats file, mode 0600) of the serve
  loop's thread to PATH when the run ends. The orchestrator stays
  non-dumpable; the only cost is speed while profiling.
* ``dumpable`` leaves the orchestrator dumpable, so ``py-spy record --pid``
  or ``perf record -p`` can attach. This is a security trade-off: any process
  of the same user (and a root workload that reaches the host's pid
  namespace) can then ptrace the orchestrator. A warning says so on every run.

Unset or empty, nothing changes; an unknown item is an error (exit 2), never
silently ignored.
"""

from __future__ import annotations

import contextlib
import marshal
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from semtrust.errors import InputError

ENV = "SEMTRUST_PROFILE"


@dataclass(frozen=True)
class ProfileRequest:
    """What ``SEMTRUST_PROFILE`` asks for."""

    cprofile: str | None = None
    dumpable: bool = False


def profile_request(environ: Mapping[str, str] | None = None) -> ProfileRequest:
    """Parse ``SEMTRUST_PROFILE``; nothing (the default) when unset or empty."""
    text = (os.environ if environ is None else environ).get(ENV, "")
    cprofile: str | None = None
    dumpable = False
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item == "dumpable":
            dumpable = True
        elif item.startswith("cprofile:") and len(item) > len("cprofile:"):
            cprofile = item[len("cprofile:"):]
        else:
            raise InputError(f"unknown item {item!r} (expected cprofile:PATH or dumpable)",
                             field=ENV)
    return ProfileRequest(cprofile, dumpable)


@contextlib.contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """Profile the block with cProfile and write the statistics to ``path``
    (readable by ``python -m pstats`` and snakeviz); no-op when ``path`` is None."""
    if path is None:
        yield
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        prof.create_stats()
        # Not Profile.dump_stats: the serve loop runs with umask 0, and a profile
        # names the workload's files; it is written for the caller only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fp:
            marshal.dump(prof.stats, fp)
