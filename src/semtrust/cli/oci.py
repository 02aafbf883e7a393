"""``semtrust-runc``: an OCI runtime with runc's command line that models every container.

Container engines that take a custom runtime (Podman ``--runtime``, Docker
``--add-runtime``, containerd) call it exactly like runc. ``create`` and ``run`` put the
container in a new modeling domain (see :mod:`semtrust.orchestrator.container`); the model
comes from the bundle's annotations:

* ``io.semtrust.model``   sealed model file (absent: learn)
* ``io.semtrust.enforce`` ``true``/``1``: deny what the model does not hold (EPERM)
* ``io.semtrust.output``  write the learned model (or with enforcement, the model with its
  forensic points) here when the container ends
* ``io.semtrust.name``    domain name for ``semtrust console``/``list`` (default: the id)
* ``io.semtrust.key``     public key the model must be signed by
* ``io.semtrust.tma``     external TMA (``unix:PATH`` or ``tcp:HOST:PORT``); for tcp also
  ``io.semtrust.tma.cert``, ``io.semtrust.tma.cert-key``, ``io.semtrust.tma.ca``
* ``io.semtrust.export``  also publish every event record to ``mqtt://HOST:PORT/TOPIC``
* ``io.semtrust.rootfs``  ``copy`` (default): run on a tmpfs copy of the rootfs, so points do
  not depend on the engine's overlay mount (its s_uuid is random per mount); writes then
  stay in the copy.  ``inplace``: mark the engine's own rootfs mount (writes persist,
  models are tied to that mount).

Every other command (``start``, ``state``, ``kill``, ``delete``, ``exec``, ``ps``...) goes to
runc unchanged, with the same global options.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from semtrust.errors import InputError, SemtrustError

if TYPE_CHECKING:
    from semtrust.orchestrator.run import RunOptions

RUNC_DEFAULT_ROOT = "/run/runc"
#: ``python -c ENTRY ARGS...`` runs this wrapper (``-m`` would import the module twice).
ENTRY = "import sys; from semtrust.cli.oci import main; sys.exit(main(sys.argv[1:]))"
_GLOBAL_VALUE = {"--log", "--log-format", "--root", "--criu", "--rootless"}
_GLOBAL_FLAG = {"--debug", "--systemd-cgroup"}
_CREATE_VALUE = {"--bundle", "-b", "--console-socket", "--pid-file", "--preserve-fds"}
_TRUE = {"1", "true", "yes", "on"}


def _option_value(argv: list[str], i: int, name: str, eq: str, val: str) -> tuple[str, int]:
    """The value of option ``argv[i]``: after ``=``, or the next word (then skipped)."""
    if eq:
        return val, i
    if i + 1 >= len(argv):
        raise InputError(f"option {name} needs a value")
    return argv[i + 1], i + 1


def _split_global(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(global options except --root, --root value, rest starting at the command)."""
    glob: list[str] = []
    root: str | None = None
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name in _GLOBAL_VALUE:
            val, i = _option_value(argv, i, name, eq, val)
            if name == "--root":
                root = val
            else:
                glob += [name, val]
        elif name in _GLOBAL_FLAG:
            glob.append(a)
        elif a in ("-v", "--version", "-h", "--help"):
            return glob, root, [a]
        else:
            break
        i += 1
    return glob, root, argv[i:]


def _parse_create(args: list[str]) -> tuple[dict[str, str], list[str], str]:
    """Options of ``create``/``run``: (known values, other options, container id)."""
    vals: dict[str, str] = {}
    other: list[str] = []
    cid: str | None = None
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, val = a.partition("=")
        if name in _CREATE_VALUE:
            val, i = _option_value(args, i, name, eq, val)
            vals["--bundle" if name == "-b" else name] = val
        elif a.startswith("-"):
            other.append(a)
        elif cid is None:
            cid = a
        else:
            raise InputError(f"unexpected argument {a!r}")
        i += 1
    if not cid:
        raise InputError("missing container id")
    return vals, other, cid


def _options_from_annotations(ann: dict[str, str], cid: str, source: str) -> RunOptions:
    from semtrust.orchestrator.run import RunOptions

    model = ann.get("io.semtrust.model") or None
    enforce = ann.get("io.semtrust.enforce", "").strip().lower() in _TRUE
    if enforce and model is None:
        raise InputError("io.semtrust.enforce needs io.semtrust.model", source=source,
                         field="annotations")
    return RunOptions(command=[], name=ann.get("io.semtrust.name") or cid, model=model,
                      enforce=enforce, output=ann.get("io.semtrust.output") or None,
                      model_key=ann.get("io.semtrust.key") or None,
                      tma=ann.get("io.semtrust.tma") or None,
                      export=ann.get("io.semtrust.export") or None,
                      tma_tls=_tma_tls(ann, source))


def _tma_tls(ann: dict[str, str], source: str) -> tuple[str, str, str] | None:
    files = [ann.get(f"io.semtrust.tma.{k}") or None for k in ("cert", "cert-key", "ca")]
    if not any(files):
        return None
    if not all(files):
        raise InputError("io.semtrust.tma.cert, .cert-key and .ca go together", source=source,
                         field="annotations")
    return files[0] or "", files[1] or "", files[2] or ""


def _in_place(ann: dict[str, str]) -> bool:
    mode = ann.get("io.semtrust.rootfs", "copy").strip().lower()
    if mode not in ("copy", "inplace"):
        raise InputError("io.semtrust.rootfs must be 'copy' or 'inplace'", field="annotations")
    return mode == "inplace"


def _runc(glob: list[str], root: str | None, args: Sequence[str]) -> int:
    from semtrust.orchestrator.container import find_runc

    argv = [find_runc(), *glob]
    if root is not None:
        argv += ["--root", root]
    return subprocess.call([*argv, *args])


def _create(glob: list[str], root: str | None, args: list[str]) -> int:
    """``create``: set up the domain, then let runc create the container."""
    from semtrust.orchestrator import bundle as bundlemod
    from semtrust.orchestrator.container import (
        cleanup_state,
        open_fanotify,
        prepare,
        state_lock_fd,
    )

    vals, other, cid = _parse_create(args)
    bdir = vals.get("--bundle", os.getcwd())
    bundle = bundlemod.load_bundle(bdir)
    opts = _options_from_annotations(bundle.annotations, cid, str(Path(bdir) / "config.json"))
    plan = prepare(bundle, opts, container_id=cid, runc_root=root or RUNC_DEFAULT_ROOT,
                   terminal=None, in_place=_in_place(bundle.annotations), runc_global=glob)
    try:
        fan = open_fanotify(plan.rootfs)
    except SemtrustError:
        cleanup_state(Path(plan.state_dir), plan.own_mount)
        raise
    status_r, status_w = os.pipe()
    go_r, go_w = os.pipe()
    keeper = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "_keeper", plan.state_dir,
         str(fan.fileno()), str(status_w), str(go_r)],
        # The state dir's lock goes along: the keeper outlives this process and the
        # lock is what tells a later sweep that the container's state is in use.
        pass_fds=(fan.fileno(), status_w, go_r, state_lock_fd(plan.state_dir)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(status_w)
    os.close(go_r)
    fan.close()
    try:
        report = os.read(status_r, 4096)
    finally:
        os.close(status_r)
    if report[:1] != b"R":
        os.close(go_w)
        keeper.wait()
        msg = report[1:].decode("utf-8", "replace").strip().removeprefix("semtrust: ")
        raise SemtrustError(msg or "the mediator did not start")
    cargs = ["create", "--bundle", plan.bundle_dir]
    for k in ("--pid-file", "--console-socket", "--preserve-fds"):
        if k in vals:
            cargs += [k, vals[k]]
    code = subprocess.call(plan.runc_argv(*cargs, *other, cid))
    os.write(go_w, b"C" if code == 0 else b"F")
    os.close(go_w)
    return code


def _keeper_main(state_dir: str, fan_fd: int, status_fd: int, go_fd: int) -> int:
    """Detached keeper of an OCI-created container (see container.Keeper)."""
    from semtrust.orchestrator.container import Keeper, Plan, cleanup_state
    from semtrust.sensors.fanotify import Fanotify

    plan = Plan.load(str(Path(state_dir) / "plan.json"))
    fan = Fanotify.from_fd(fan_fd)
    keeper = Keeper(plan, fan, detach_stdio=True)
    try:
        ok = keeper.wait_ready()
        if ok:
            report = b"R"
        else:  # pass the mediator's one-line reason to the create process
            keeper.finish(timeout=5)
            report = b"E"
            with contextlib.suppress(OSError):
                lines = (Path(state_dir) / "mediator.log").read_bytes().strip().splitlines()
                report += lines[-1][-1000:] if lines else b""
        with contextlib.suppress(OSError):
            os.write(status_fd, report)
        os.close(status_fd)
        if not ok:
            keeper.finish(timeout=5)
            return 2
        # runc create hands the seccomp listener over while we wait: keep serving the
        # mediator (it asks us to mark the container's mounts then).
        if not keeper.watch(go_fd):
            return 1
        go = os.read(go_fd, 1)
        os.close(go_fd)
        if go != b"C":
            return 1
        try:
            out = subprocess.run(plan.runc_argv("state", plan.container_id),
                                 capture_output=True, timeout=30, check=True)
            pid = int(json.loads(out.stdout)["pid"])
            pidfd = os.pidfd_open(pid)
        except (OSError, ValueError, KeyError, subprocess.SubprocessError):
            return 1
        try:
            keeper.watch(pidfd)
        finally:
            os.close(pidfd)
        return 0
    finally:
        if keeper.mediator_alive:
            keeper.finish(timeout=30)
        fan.close()
        cleanup_state(Path(plan.state_dir), plan.own_mount)


def _run(glob: list[str], root: str | None, args: list[str]) -> int:
    """``run``: foreground like runc run; ``--detach`` is create + start."""
    from semtrust.orchestrator import bundle as bundlemod
    from semtrust.orchestrator.container import run_container

    vals, other, cid = _parse_create(args)
    if "-d" in other or "--detach" in other:
        rest = [a for a in args if a not in ("-d", "--detach")]
        code = _create(glob, root, rest)
        return code or _runc(glob, root or RUNC_DEFAULT_ROOT, ["start", cid])
    bdir = vals.get("--bundle", os.getcwd())
    bundle = bundlemod.load_bundle(bdir)
    opts = _options_from_annotations(bundle.annotations, cid, str(Path(bdir) / "config.json"))
    extra = [a for a in other if a not in ("--keep",)]
    for k in ("--pid-file", "--console-socket", "--preserve-fds"):
        if k in vals:
            extra += [k, vals[k]]
    return run_container(opts, bdir, None, container_id=cid,
                         runc_root=root or RUNC_DEFAULT_ROOT, runc_options=extra,
                         in_place=_in_place(bundle.annotations), terminal=None,
                         runc_global=glob)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``semtrust-runc`` (exit code as runc's)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_keeper"] and len(args) == 5:
        return _keeper_main(args[1], int(args[2]), int(args[3]), int(args[4]))
    try:
        glob, root, rest = _split_global(args)
        if not rest:
            raise InputError("missing command (create, start, state, kill, delete, run, ...)",
                             source="semtrust-runc")
        cmd, cargs = rest[0], rest[1:]
        if cmd == "create":
            return _create(glob, root, cargs)
        if cmd == "run":
            return _run(glob, root, cargs)
        return _runc(glob, root, rest)
    except SemtrustError as exc:
        print(f"semtrust-runc: {exc}", file=sys.stderr)
        return 2


def cli() -> None:
    """Console-script wrapper."""
    sys.exit(main())


@click.command("oci", context_settings={"ignore_unknown_options": True,
                                        "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def oci(args: tuple[str, ...]) -> None:
    """OCI runtime with runc's command line (same as semtrust-runc); see README."""
    sys.exit(main(list(args)))


if __name__ == "__main__":
    cli()
