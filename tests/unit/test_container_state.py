"""Which container state dirs a sweep may remove (no root needed: no mounts here)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from semtrust.orchestrator import container
from semtrust.orchestrator.container import STALE_AFTER_S, STATE_LOCK, sweep_stale_state


def _dir(base: Path, name: str, *, lock: bool = True, age: float = 2 * STALE_AFTER_S) -> Path:
    d = base / name
    (d / "rootfs").mkdir(parents=True)
    if lock:
        (d / STATE_LOCK).touch()
        then = time.time() - age
        os.utime(d / STATE_LOCK, (then, then))
    return d


def test_sweep_removes_only_unlocked_old_state(tmp_path: Path) -> None:
    stale = _dir(tmp_path, "stale-1")
    fresh = _dir(tmp_path, "fresh-2", age=0)
    unlocked = _dir(tmp_path, "nolock-3", lock=False)
    live = tmp_path / "live-4"
    live.mkdir()
    container.hold_state_lock(live)  # as prepare() does for a running keeper
    then = time.time() - 2 * STALE_AFTER_S
    os.utime(live / STATE_LOCK, (then, then))
    try:
        assert sweep_stale_state(tmp_path) == [stale]
        assert not stale.exists()
        assert fresh.exists() and unlocked.exists() and live.exists()
    finally:
        os.close(container.held_locks.pop(str(live)))
    assert sweep_stale_state(tmp_path) == [live]  # its holder is gone now


def test_sweep_of_a_missing_base_is_a_no_op(tmp_path: Path) -> None:
    assert sweep_stale_state(tmp_path / "none") == []
