"""State directories of container domains: the plan, the liveness lock, stale sweeps."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from semtrust.orchestrator import bundle as bundlemod

if TYPE_CHECKING:
    from semtrust.orchestrator.run import RunOptions


def state_root() -> Path:
    """Where container domains keep their state (root only)."""
    return Path(os.environ.get("SEMTRUST_STATE_DIR") or "/run/semtrust/containers")



def safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)[:64] or "domain"



@dataclass
class Plan:
    """Everything the keeper and the mediator agree on (written as JSON in the state dir)."""

    name: str
    container_id: str
    state_dir: str
    bundle_dir: str
    rootfs: str
    own_mount: bool
    cgroup: str
    listener: str
    runc: str
    runc_root: str
    command: list[str] = field(default_factory=list)
    model: str | None = None
    enforce: bool = False
    output: str | None = None
    trajectory: bool = False
    model_key: str | None = None
    tpm: str | None = None
    pcr: int | None = None
    base: str | None = None
    tma_key: str | None = None
    runc_global: list[str] = field(default_factory=list)
    tma: str | None = None  # external TMA address, its TLS files, MQTT export (semtrust.tma)
    tma_tls: list[str] | None = None
    export: str | None = None
    pseudonyms: list[str] = field(default_factory=list)
    default_pseudonyms: bool = True
    allow_empty: bool = False

    def save(self) -> Path:
        path = Path(self.state_dir) / "plan.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
        return path

    @classmethod
    def load(cls, path: str) -> Plan:
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))

    def run_options(self) -> RunOptions:
        from semtrust.orchestrator.run import RunOptions

        return RunOptions(command=self.command, name=self.name, output=self.output,
                          trajectory=self.trajectory, model=self.model, enforce=self.enforce,
                          tpm=self.tpm, pcr=self.pcr,
                          base=bytes.fromhex(self.base) if self.base else None,
                          tma_key=self.tma_key, model_key=self.model_key, tma=self.tma,
                          tma_tls=_tls_files(self.tma_tls), export=self.export,
                          pseudonyms=list(self.pseudonyms),
                          default_pseudonyms=self.default_pseudonyms,
                          allow_empty=self.allow_empty)

    def runc_argv(self, *args: str) -> list[str]:
        return [self.runc, *self.runc_global, "--root", self.runc_root, *args]


def _tls_files(files: list[str] | None) -> tuple[str, str, str] | None:
    return (files[0], files[1], files[2]) if files and len(files) == 3 else None



STATE_LOCK = "lock"
STALE_AFTER_S = 60.0
held_locks: dict[str, int] = {}  # state dir -> lock fd, open for this process's life


def hold_state_lock(sdir: Path) -> None:
    """Mark ``sdir`` live: an exclusive flock held as long as this process, a process
    forked from it, or a keeper it passes the fd to (``state_lock_fd``) lives. It is
    close-on-exec, so runc and an exec'd mediator do not keep it."""
    fd = os.open(sdir / STATE_LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    held_locks[str(sdir)] = fd


def state_lock_fd(sdir: str | Path) -> int:
    """The lock fd of a state dir this process prepared (pass it to a detached keeper)."""
    return held_locks[str(sdir)]


def sweep_stale_state(base: Path) -> list[Path]:
    """Remove what a killed keeper left: state dirs whose lock nobody holds.

    A keeper killed with SIGKILL takes its container with it (fail closed) but cannot
    unmount its rootfs copy. A dir counts as stale only if it has a lock file older than
    ``STALE_AFTER_S`` (so one being created right now is safe) that we can lock.
    """
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for sdir in entries:
        lock = sdir / STATE_LOCK
        try:
            if time.time() - lock.stat().st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live keeper holds it
        finally:
            os.close(fd)
        rootfs = sdir / "rootfs"
        if os.path.ismount(rootfs):
            bundlemod.umount(rootfs)
        shutil.rmtree(sdir, ignore_errors=True)
        removed.append(sdir)
    return removed


def cleanup_state(sdir: Path, own_mount: bool) -> None:
    """Unmount our rootfs copy and remove the state dir."""
    if own_mount:
        bundlemod.umount(sdir / "rootfs")
    shutil.rmtree(sdir, ignore_errors=True)

