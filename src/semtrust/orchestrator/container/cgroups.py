"""The container domain's cgroup v2: where it lives, who is in it, killing it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def cgroup2_root() -> Path:
    """Mount point of the cgroup v2 hierarchy (hybrid hosts: /sys/fs/cgroup/unified)."""
    for cand in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(cand, "cgroup.procs")) and os.path.exists(
                os.path.join(cand, "cgroup.subtree_control")):
            return Path(cand)
    return Path("/sys/fs/cgroup/unified")


def cgroup_of(pid: int) -> str | None:
    """The cgroup v2 path of ``pid`` ("0::" line of /proc/PID/cgroup), None if gone."""
    try:
        fd = os.open(f"/proc/{pid}/cgroup", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 8192)
    except OSError:
        return None
    finally:
        os.close(fd)
    for line in data.splitlines():
        if line.startswith(b"0::"):
            return line[3:].decode("utf-8", "replace")
    return None


def kill_cgroup(cgroup: str) -> None:
    """SIGKILL every process of a cgroup v2 (``cgroup.kill``, else one by one)."""
    d = cgroup2_root() / cgroup.lstrip("/")
    try:
        (d / "cgroup.kill").write_text("1")
        return
    except OSError:
        pass
    for _ in range(50):
        try:
            pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.01)

