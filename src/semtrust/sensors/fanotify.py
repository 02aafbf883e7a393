"""fanotify permission events through ctypes (pyfanotify refuses permission events).

Why fanotify: a ``FAN_OPEN_PERM``/``FAN_OPEN_EXEC_PERM`` event carries an fd of the very
file being opened, so the inode facts and the content digest come from the object the
workload gets, not from a path argument that another thread may rewrite (no TOCTOU).

Rules this module keeps (see README, "container mode"):
* the caller must never open files on the marked filesystem from the thread that answers
  events (that open would wait for itself); hash through the event fd with ``pread``;
* the read buffer is bounded and the group's queue is the kernel's bounded default
  (no ``FAN_UNLIMITED_QUEUE``): an overflow is reported as an event with
  ``overflow=True`` so that the orchestrator can treat it as a trust event;
* every permission event is answered exactly once, also when the decision raises
  (``PermissionLoop`` denies then: fail closed).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

# fanotify_init flags
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_CONTENT = 0x00000004
FAN_UNLIMITED_QUEUE = 0x00000010
FAN_REPORT_PIDFD = 0x00000080
FAN_REPORT_TID = 0x00000100

# fanotify_mark flags
FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_MOUNT = 0x00000010
FAN_MARK_FLUSH = 0x00000080
FAN_MARK_FILESYSTEM = 0x00000100

# event mask bits
FAN_Q_OVERFLOW = 0x00004000
FAN_OPEN_PERM = 0x00010000
FAN_ACCESS_PERM = 0x00020000
FAN_OPEN_EXEC_PERM = 0x00040000
FAN_ONDIR = 0x40000000

FAN_ALLOW = 0x01
FAN_DENY = 0x02
FAN_NOFD = -1
FAN_EVENT_INFO_TYPE_PIDFD = 4
FANOTIFY_METADATA_VERSION = 3

AT_FDCWD = -100

_META = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata (24 bytes)
_INFO_HDR = struct.Struct("=BBH")  # struct fanotify_event_info_header
_RESPONSE = struct.Struct("=iI")  # struct fanotify_response

#: Bytes read per ``read(2)``: a bounded buffer (about 340 metadata+pidfd records).
READ_BUFFER = 8192

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_char_p,
]
_libc.fanotify_mark.restype = ctypes.c_int


class FanotifyError(OSError):
    """A fanotify system call failed (carries errno)."""


@dataclass(frozen=True, slots=True)
class FanEvent:
    """One event read from the group: the opened file's ``fd`` and the opener's ``pid``.

    ``pidfd`` is a pidfd of the opener (``FAN_REPORT_PIDFD``), or None when the kernel
    could not give one (the process already exited).  The receiver owns both fds.
    """

    mask: int
    fd: int
    pid: int
    pidfd: int | None

    @property
    def overflow(self) -> bool:
        """True for ``FAN_Q_OVERFLOW``: events were lost (the kernel allowed them)."""
        return bool(self.mask & FAN_Q_OVERFLOW)

    @property
    def is_exec(self) -> bool:
        """True when the file is opened for execution (``execve``, ``uselib``)."""
        return bool(self.mask & FAN_OPEN_EXEC_PERM)

    @property
    def is_permission(self) -> bool:
        """True when the opener waits for an answer."""
        return bool(self.mask & (FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM | FAN_ACCESS_PERM))

    def close(self) -> None:
        """Close the event's fds (after the answer was written)."""
        for fd in (self.fd, self.pidfd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def parse_events(buf: bytes) -> list[FanEvent]:
    """Decode a buffer returned by ``read(2)`` on a fanotify fd into events."""
    events: list[FanEvent] = []
    off = 0
    while off + _META.size <= len(buf):
        event_len, vers, _res, meta_len, mask, fd, pid = _META.unpack_from(buf, off)
        if vers != FANOTIFY_METADATA_VERSION or event_len < _META.size:
            raise FanotifyError(errno.EPROTO, f"unexpected fanotify metadata version {vers}")
        pidfd: int | None = None
        info = off + meta_len
        end = off + event_len
        while info + _INFO_HDR.size <= end:
            itype, _pad, ilen = _INFO_HDR.unpack_from(buf, info)
            if ilen < _INFO_HDR.size:
                break
            if itype == FAN_EVENT_INFO_TYPE_PIDFD:
                (value,) = struct.unpack_from("=i", buf, info + _INFO_HDR.size)
                pidfd = value if value >= 0 else None
            info += ilen
        events.append(FanEvent(mask=mask, fd=fd, pid=pid, pidfd=pidfd))
        off = end
    return events


class Fanotify:
    """A fanotify notification group of class CONTENT (permission events)."""

    def __init__(self, *, report_pidfd: bool = True, unlimited_queue: bool = False) -> None:
        flags = FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK
        if report_pidfd:
            flags |= FAN_REPORT_PIDFD
        if unlimited_queue:
            flags |= FAN_UNLIMITED_QUEUE
        fd = int(_libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise FanotifyError(err, f"fanotify_init: {os.strerror(err)}")
        self._fd = fd

    @classmethod
    def from_fd(cls, fd: int) -> Fanotify:
        """Adopt a group fd created by another process (passed down at spawn)."""
        os.set_blocking(fd, False)
        grp = cls.__new__(cls)
        grp._fd = fd
        return grp

    def fileno(self) -> int:
        """The group's fd (for poll/select, and to hand a copy to a watchdog)."""
        return self._fd

    def mark(self, path: str, *, mask: int, flags: int) -> None:
        """Add a mark: ``flags`` is FAN_MARK_FILESYSTEM or FAN_MARK_MOUNT (or 0: inode)."""
        rc = _libc.fanotify_mark(self._fd, FAN_MARK_ADD | flags, mask, AT_FDCWD,
                                 os.fsencode(path))
        if rc < 0:
            err = ctypes.get_errno()
            raise FanotifyError(err, f"fanotify_mark {path}: {os.strerror(err)}")

    def mark_filesystem(self, path: str) -> None:
        """Gate every open and exec on the filesystem that holds ``path``."""
        self.mark(path, mask=FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM, flags=FAN_MARK_FILESYSTEM)

    def mark_mount(self, path: str) -> None:
        """Gate opens and execs made through the mount that holds ``path`` only."""
        self.mark(path, mask=FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM, flags=FAN_MARK_MOUNT)

    def read(self) -> list[FanEvent]:
        """Read the events available now (non-blocking; [] when none)."""
        try:
            buf = os.read(self._fd, READ_BUFFER)
        except BlockingIOError:
            return []
        return parse_events(buf)

    def respond(self, fd: int, allow: bool) -> None:
        """Answer a permission event: FAN_ALLOW or FAN_DENY (the opener sees EPERM)."""
        os.write(self._fd, _RESPONSE.pack(fd, FAN_ALLOW if allow else FAN_DENY))

    def close(self) -> None:
        """Close the group; the kernel then allows events still pending (fail-open!)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


Decide = Callable[[FanEvent], bool]


class PermissionLoop:
    """Thread that answers permission events with a decision function.

    ``decide(event) -> allow`` runs on this thread; it must not open files on the marked
    filesystem.  An exception in ``decide`` denies the event and is passed to
    ``on_error``.  Overflow events go to ``on_overflow``.
    """

    def __init__(
        self,
        group: Fanotify,
        decide: Decide,
        *,
        on_overflow: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "semtrust-fanotify",
    ) -> None:
        self._group = group
        self._decide = decide
        self._on_overflow = on_overflow
        self._on_error = on_error
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.answered = 0

    def start(self) -> None:
        """Start answering."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (events arriving later stay pending)."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self._thread.join()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._group.fileno(), select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop_r in ready:
                return
            try:
                events = self._group.read()
            except InterruptedError:
                continue
            except OSError as exc:  # stop answering: waiting openers stay blocked (closed)
                if self._on_error is not None:
                    self._on_error(exc)
                return
            for ev in events:
                self._handle(ev)

    def _handle(self, ev: FanEvent) -> None:
        if ev.overflow:
            if self._on_overflow is not None:
                self._on_overflow()
            ev.close()
            return
        allow = False
        try:
            allow = bool(self._decide(ev))
        except BaseException as exc:  # answer anyway: a waiting opener must not hang
            allow = False
            if self._on_error is not None:
                self._on_error(exc)
        finally:
            if ev.is_permission and ev.fd >= 0:
                with contextlib.suppress(OSError):
                    self._group.respond(ev.fd, allow)
            ev.close()
            self.answered += 1


def supported() -> str | None:
    """None when permission events with pidfds work here, else the reason they do not."""
    try:
        grp = Fanotify()
    except OSError as exc:
        return f"fanotify permission events unavailable: {exc.strerror or exc}"
    grp.close()
    return None
