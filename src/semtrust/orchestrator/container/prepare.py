"""Setting up a container domain: state dir, rootfs copy, cgroup, runtime config."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from semtrust.errors import InputError, SemtrustError
from semtrust.orchestrator import bundle as bundlemod
from semtrust.orchestrator.container.profile import container_profile
from semtrust.orchestrator.container.state import (
    Plan,
    cleanup_state,
    hold_state_lock,
    safe_name,
    state_root,
    sweep_stale_state,
)

if TYPE_CHECKING:
    from semtrust.orchestrator.run import RunOptions


def find_runc() -> str:
    """The runc binary, or InputError (one line, exit 2)."""
    path = os.environ.get("SEMTRUST_RUNC") or shutil.which("runc") or (
        "/usr/sbin/runc" if os.access("/usr/sbin/runc", os.X_OK) else None)
    if path is None or not os.access(path, os.X_OK):
        raise InputError("runc not found (install the Debian package runc)", source="runc")
    return path



def prepare(bundle: bundlemod.Bundle, opts: RunOptions, *, container_id: str,
            args: Sequence[str] | None = None, runc_root: str | None = None,
            terminal: bool | None = False, in_place: bool = False,
            runc_global: Sequence[str] = ()) -> Plan:
    """Create the state dir, the rootfs mount and the runtime config.json (keeper side)."""
    runc = find_runc()
    base = state_root()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    sweep_stale_state(base)
    sdir = base / f"{safe_name(container_id)[:24]}-{os.getpid()}"  # sun_path <= 107
    if sdir.exists():
        shutil.rmtree(sdir)
    sdir.mkdir(mode=0o700)
    hold_state_lock(sdir)
    own_mount = False
    try:
        if in_place and bundlemod.is_own_filesystem(bundle.rootfs):
            rootfs = str(bundle.rootfs)
        else:
            rootfs = str(sdir / "rootfs")
            try:
                bundlemod.copy_rootfs(bundle.rootfs, Path(rootfs))
            except OSError as exc:
                raise SemtrustError(f"cannot set up the rootfs copy: {exc}") from None
            own_mount = True
        linux = bundle.config.get("linux") or {}
        cg = linux.get("cgroupsPath")
        if isinstance(cg, str) and cg:
            if ":" in cg:
                raise InputError("systemd cgroup paths are not supported; use the cgroupfs "
                                 "cgroup manager", source=str(bundle.path / "config.json"),
                                 field="linux.cgroupsPath")
            cgroup = cg if cg.startswith("/") else "/" + cg
        else:
            cgroup = f"/semtrust/{safe_name(container_id)[:24]}-{os.getpid()}"
        listener = str(sdir / "seccomp.sock")
        cfg = bundlemod.runtime_config(
            bundle, rootfs=rootfs, listener_path=listener, notify_syscalls=(),
            cgroups_path=cgroup, args=args, terminal=terminal,
            annotations={"io.semtrust.domain": opts.name or container_id})
        cfg["linux"]["seccomp"] = container_profile(
            (bundle.config.get("linux") or {}).get("seccomp"), listener)
        bdir = sdir / "bundle"
        bundlemod.write_config(cfg, bdir)
        plan = Plan(
            name=opts.name or container_id, container_id=container_id, state_dir=str(sdir),
            bundle_dir=str(bdir), rootfs=rootfs, own_mount=own_mount, cgroup=cgroup,
            listener=listener, runc=runc, runc_root=runc_root or str(sdir / "runc"),
            command=list(cfg["process"]["args"]), model=opts.model, enforce=opts.enforce,
            output=os.path.abspath(opts.output) if opts.output else None,
            trajectory=opts.trajectory, model_key=opts.model_key, tpm=opts.tpm, pcr=opts.pcr,
            base=opts.base.hex() if opts.base else None, tma_key=opts.tma_key,
            runc_global=list(runc_global), tma=opts.tma, export=opts.export,
            tma_tls=list(opts.tma_tls) if opts.tma_tls else None,
            pseudonyms=list(opts.pseudonyms), default_pseudonyms=opts.default_pseudonyms,
            allow_empty=opts.allow_empty)
        plan.save()
        return plan
    except BaseException:
        cleanup_state(sdir, own_mount)
        raise

