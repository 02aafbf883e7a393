"""Every mount the container can open files through, and how each one is mediated.

fanotify gates a mount with ``FAN_MARK_MOUNT``: only opens through that mount (the
container's own vfsmount of a host volume, its /dev tmpfs, its sysfs) wait for us, so a
host process using the same filesystem elsewhere is never gated (``FAN_MARK_FILESYSTEM``
on a host filesystem would gate every host process). The kernel refuses permission
events on procfs (EINVAL, "unusual locks"), so procfs opens go through seccomp instead
(see :mod:`~semtrust.orchestrator.container.opens`). A mount that is neither marked nor
procfs cannot be mediated: the caller refuses to start an enforcing container then.

The keeper marks (marks on mounts need CAP_SYS_ADMIN, which the mediator dropped), on
the mediator's request, when runc hands over the first seccomp listener: runc has set up
the mount namespace by then and the workload has not run yet (its first mediated system
call waits until the mediator serves the listener, which it does only after marking).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semtrust.sensors.fanotify import Fanotify

#: Filesystems whose opens seccomp mediates (fanotify refuses permission events there).
SECCOMP_FSTYPES = frozenset({"proc"})
#: Bound on /proc/PID/mountinfo (a container with thousands of mounts is refused).
MAX_MOUNTINFO = 1 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_AT_EMPTY_PATH = 0x1000
_STATX_MNT_ID = 0x1000
_STATX_SIZE = 256
_STX_MNT_ID_OFFSET = 0x90  # struct statx: __u64 stx_mnt_id


def mount_id(fd: int) -> int:
    """The id of the mount ``fd`` was opened through (statx ``stx_mnt_id``)."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    rc = _libc.statx(ctypes.c_int(fd), b"", ctypes.c_int(_AT_EMPTY_PATH),
                     ctypes.c_uint(_STATX_MNT_ID), buf)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statx: {os.strerror(err)}")
    return int.from_bytes(buf.raw[_STX_MNT_ID_OFFSET:_STX_MNT_ID_OFFSET + 8], "little")


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/PID/mountinfo: id, mount point (as the process sees it), type."""

    mnt_id: int
    point: str
    fstype: str


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(s: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Mounts of a mountinfo text, in order (malformed lines are skipped)."""
    out: list[MountEntry] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        parts = left.split()
        if not sep or len(parts) < 5 or not parts[0].isdigit():
            continue
        fstype = right.split(" ", 1)[0]
        out.append(MountEntry(int(parts[0]), _unescape(parts[4]), fstype))
    return out


@dataclass
class MarkReport:
    """What marking a container's mounts gave: ids fanotify gates, mounts left to seccomp,
    mounts nobody can mediate (with the reason)."""

    marked: list[int] = field(default_factory=list)
    seccomp: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"marked": self.marked, "seccomp": self.seccomp, "failed": self.failed}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MarkReport:
        return cls(marked=[int(x) for x in d.get("marked", [])],
                   seccomp=[str(x) for x in d.get("seccomp", [])],
                   failed=[dict(x) for x in d.get("failed", [])])


def mark_container_mounts(fan: Fanotify, pid: int) -> MarkReport:
    """Mark every mount in ``pid``'s mount namespace that fanotify can gate.

    Each mount point is reached through ``/proc/PID/root``, so the mark lands on the
    container's own mount, never on the host's view of the same filesystem. A mount
    hidden under another one at the same point is not reachable by path and is left out
    (its id is not in ``marked``, so a descriptor through it still goes to seccomp).
    """
    rep = MarkReport()
    try:
        fd = os.open(f"/proc/{pid}/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, MAX_MOUNTINFO)
        finally:
            os.close(fd)
    except OSError as exc:
        rep.failed.append({"mount": "*", "fstype": "?",
                           "reason": f"cannot read the mount table: {exc.strerror}"})
        return rep
    if len(data) >= MAX_MOUNTINFO:
        rep.failed.append({"mount": "*", "fstype": "?", "reason": "mount table too large"})
        return rep
    root = f"/proc/{pid}/root"
    for m in parse_mountinfo(data.decode("utf-8", "surrogateescape")):
        if m.fstype in SECCOMP_FSTYPES:
            rep.seccomp.append(m.point)
            continue
        path = root + m.point  # "/proc/PID/root/": the trailing slash follows the link
        try:
            pfd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            rep.failed.append({"mount": m.point, "fstype": m.fstype,
                               "reason": exc.strerror or str(exc)})
            continue
        try:
            if mount_id(pfd) != m.mnt_id:
                continue  # overmounted: only the mount on top is reachable by path
            fan.mark_mount(f"/proc/self/fd/{pfd}")
            rep.marked.append(m.mnt_id)
        except OSError as exc:
            rep.failed.append({"mount": m.point, "fstype": m.fstype,
                               "reason": os.strerror(exc.errno) if exc.errno else str(exc)})
        finally:
            os.close(pfd)
    return rep
