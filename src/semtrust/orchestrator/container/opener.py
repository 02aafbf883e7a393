"""The opener's flags for a fanotify event, read from its blocked system call."""

from __future__ import annotations

import os
import time

O_LARGEFILE = 0o100000
FMODE_EXEC = 0x20
_OPEN_NRS = {2: 1, 257: 2}  # open: flags in arg 1, openat: arg 2
_NR_CREAT = 85
_NR_OPENAT2 = 437  # flags in a struct in the caller's memory, which it could change
_EXEC_NRS = frozenset({59, 322, 134})  # execve, execveat, uselib
# How long to wait for an opener that has queued its event but not yet gone to sleep.
_SETTLE_S = 0.05


def opener_flags(pid: int, is_exec: bool) -> int | None:
    """``file.flags`` of an open fanotify holds: from the blocked call's own arguments.

    fanotify does not report the opener's flags; the opener is blocked inside the call,
    so ``/proc/PID/syscall`` shows them (value arguments, not memory: no race).
    None for the ``FAN_OPEN_PERM`` that follows ``FAN_OPEN_EXEC_PERM`` for the same exec
    open (the kernel sends both): it was modeled once already.

    The opener queues the event before it sleeps; read in between, its syscall file says
    "running". Taking that for "no open call" modeled a bogus read-only open of every
    binary whose exec notice arrived early (a flake seen in container runs). So a thread
    that is still running is read again, briefly, until it sleeps in its call.
    """
    if is_exec:
        return O_LARGEFILE | FMODE_EXEC
    deadline = 0.0
    pause = 20e-6
    while True:
        flags = _syscall_flags(pid, pid)  # the main thread first: no directory listing
        running = flags == _RUNNING
        if flags != _NOT_OPEN and not running:
            return flags
        for tid in _threads_first(pid)[1:]:
            flags = _syscall_flags(pid, tid)
            if flags == _RUNNING:
                running = True
            elif flags != _NOT_OPEN:
                return flags
        now = time.monotonic()
        if not running or (deadline and now >= deadline):
            return O_LARGEFILE  # openat2 or an in-kernel open: read-only
        if not deadline:
            deadline = now + _SETTLE_S
        time.sleep(pause)
        pause = min(2 * pause, 0.002)


_NOT_OPEN = -1
_RUNNING = -2


def _syscall_flags(pid: int, tid: int) -> int | None:
    """Flags of the open-family call ``tid`` is blocked in; None inside an exec;
    ``_RUNNING`` if it is not asleep; ``_NOT_OPEN`` if it is in no such call."""
    try:
        fd = os.open(f"/proc/{pid}/task/{tid}/syscall", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return _NOT_OPEN
    try:
        parts = os.read(fd, 512).split()
    except OSError:
        return _NOT_OPEN
    finally:
        os.close(fd)
    if parts[:1] == [b"running"]:
        return _RUNNING
    if not parts or not parts[0].lstrip(b"-").isdigit():
        return _NOT_OPEN
    nr = int(parts[0])
    if nr in _EXEC_NRS:
        return None
    if nr in _OPEN_NRS and len(parts) > _OPEN_NRS[nr] + 1:
        flags = int(parts[_OPEN_NRS[nr] + 1], 16) & 0xFFFFFFFF
    elif nr == _NR_CREAT:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    elif nr == _NR_OPENAT2:
        return O_LARGEFILE
    else:
        return _NOT_OPEN
    return (flags | O_LARGEFILE) & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_TRUNC
                                     | os.O_CLOEXEC)


def _threads_first(pid: int) -> list[int]:
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]
    tids.sort(key=lambda t: t != pid)
    return tids[:64]

