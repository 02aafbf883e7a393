"""Emulated FIFO opens: the object checked is the object opened, without blocking the loop.

A FIFO open blocks until the other end is opened. The seccomp loop cannot wait for
that, and letting the kernel open the path instead (CONTINUE) would resolve it again,
so a path swapped after the check could land elsewhere (the route race). So the FIFO
that was resolved once and checked is opened by a helper thread, as the task, through
that descriptor; the notification stays pending meanwhile and the helper injects the
result (``SECCOMP_IOCTL_NOTIF_ADDFD``) or the error. If the task stops waiting (killed,
or interrupted by a signal: its call is then notified again) or the domain stops, the
helper's open is released by opening the FIFO's other end for an instant.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from typing import TYPE_CHECKING

from semtrust.orchestrator.emulate import CredSwitcher
from semtrust.sensors.seccomp import Listener, SeccompError

if TYPE_CHECKING:
    from semtrust.orchestrator.tasks import Status

#: Bound on FIFO opens waiting for their other end at once (more fail with ENFILE).
MAX_PENDING = 256
#: How often a waiting helper checks that its task still waits.
POLL_S = 0.1

_pending = threading.BoundedSemaphore(MAX_PENDING)


def open_fifo_later(listener_fd: int, nid: int, pfd: int, flags: int, st: Status,
                    stop: threading.Event) -> bool:
    """Open the FIFO behind ``pfd`` (an O_PATH descriptor, taken over) with ``flags`` as
    the task ``st`` and answer notification ``nid`` from a helper thread. False (nothing
    taken over) when too many FIFO opens are pending already."""
    if not _pending.acquire(blocking=False):
        return False
    dups: list[int] = []
    try:
        for fd in (listener_fd, listener_fd, pfd):
            dups.append(os.dup(fd))
    except OSError:
        for fd in dups:
            os.close(fd)
        _pending.release()
        return False
    done = threading.Event()
    helper = threading.Thread(target=_helper, args=(dups[0], nid, pfd, flags, st, done),
                              name="semtrust-fifo", daemon=True)
    watch = threading.Thread(target=_watch, args=(dups[1], nid, dups[2], done, stop),
                             name="semtrust-fifo-watch", daemon=True)
    helper.start()
    watch.start()
    return True


def _helper(lfd: int, nid: int, pfd: int, flags: int, st: Status,
            done: threading.Event) -> None:
    lst = Listener(lfd)
    fd = -1
    try:
        creds = CredSwitcher()  # this thread's own: the switch is per thread
        rflags = (flags | os.O_NOCTTY | os.O_CLOEXEC) & ~(
            os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_TRUNC)
        try:
            with creds.as_task(st):
                fd = os.open(f"/proc/self/fd/{pfd}", rflags)
        except OSError as exc:
            with contextlib.suppress(SeccompError):
                lst.deny(nid, exc.errno or errno.EACCES)
            return
        with contextlib.suppress(SeccompError):  # ENOENT: the task stopped waiting
            lst.addfd_send(nid, fd, cloexec=bool(flags & os.O_CLOEXEC))
    finally:
        done.set()
        if fd >= 0:
            os.close(fd)
        os.close(pfd)
        lst.close()
        _pending.release()


def _watch(lfd: int, nid: int, pfd: int, done: threading.Event,
           stop: threading.Event) -> None:
    """Release the helper's open when nobody waits for it any more (own copies of the
    listener and FIFO descriptors: the helper closes its own when it is done)."""
    lst = Listener(lfd)
    try:
        while not done.wait(POLL_S):
            if stop.is_set() or not lst.id_valid(nid):
                with contextlib.suppress(OSError):
                    os.close(os.open(f"/proc/self/fd/{pfd}", os.O_RDWR | os.O_NONBLOCK
                                     | os.O_CLOEXEC))
    finally:
        os.close(pfd)
        lst.close()
