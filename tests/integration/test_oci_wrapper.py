"""`semtrust-runc`: driven with runc's command lines exactly as an engine does, and by podman."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from semtrust.cli.oci import ENTRY
from semtrust.orchestrator.bundle import build_busybox_bundle
from semtrust.orchestrator.container import STALE_AFTER_S, STATE_LOCK, state_root, sweep_stale_state
from tests.integration.needs import need, need_container_host

WRAPPER = [sys.executable, "-c", ENTRY]
HOSTNAME = "oci-test\n"
SECRET = "top secret\n"


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    need_container_host()


def _bundle(d: Path, args: list[str], annotations: dict[str, str]) -> Path:
    b = build_busybox_bundle(d, args, files={"/etc/hostname": HOSTNAME, "/etc/secret": SECRET})
    cfg = json.loads((b / "config.json").read_text())
    cfg["annotations"] = annotations
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def wrapper(root: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WRAPPER, "--root", str(root), *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def _state(root: Path, cid: str) -> dict[str, object]:
    r = wrapper(root, "state", cid)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def _wait_file(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} was not written"


def _lifecycle(tmp: Path, root: Path, cid: str, bundle: Path) -> tuple[int, str, str]:
    """create --pid-file, state, start, wait, delete --force — as podman/containerd do."""
    pidfile = tmp / f"{cid}.pid"
    out = open(tmp / f"{cid}.out", "w+")  # noqa: SIM115 - the container keeps it open
    err = open(tmp / f"{cid}.err", "w+")  # noqa: SIM115
    with out, err:
        c = subprocess.run([*WRAPPER, "--root", str(root), "create", "--bundle", str(bundle),
                            "--pid-file", str(pidfile), cid], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=err, timeout=120)
        assert c.returncode == 0, Path(err.name).read_text()
        pid = int(pidfile.read_text())
        st = _state(root, cid)
        assert st["status"] == "created" and st["pid"] == pid
        r = wrapper(root, "start", cid)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 60
        while _state(root, cid)["status"] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(root, cid)["status"] == "stopped"
        r = wrapper(root, "delete", "--force", cid)
        assert r.returncode == 0, r.stderr
        return 0, Path(out.name).read_text(), Path(err.name).read_text()


def _points(model: Path) -> list[str]:
    return sorted(ln.split()[1] for ln in model.read_text().splitlines()
                  if ln.startswith("state "))


def test_runc_command_lines_learn_and_enforce(tmp_path: Path) -> None:
    root = tmp_path / "runc-root"
    model = tmp_path / "learned.model"
    tag = uuid.uuid4().hex[:8]
    learn = _bundle(tmp_path / "learn", ["sh", "-c", "cat /etc/hostname"],
                    {"io.semtrust.output": str(model), "io.semtrust.name": f"oci-l-{tag}"})
    _, out, err = _lifecycle(tmp_path, root, f"learn-{tag}", learn)
    assert out == HOSTNAME, err
    _wait_file(model)  # the keeper writes it when the container has ended
    learned = _points(model)
    assert learned

    ok = _bundle(tmp_path / "ok", ["sh", "-c", "cat /etc/hostname"],
                 {"io.semtrust.model": str(model), "io.semtrust.enforce": "true"})
    _, out, err = _lifecycle(tmp_path, root, f"ok-{tag}", ok)
    assert out == HOSTNAME and "not permitted" not in err

    bad = _bundle(tmp_path / "bad", ["sh", "-c", "cat /etc/hostname; cat /etc/secret"],
                  {"io.semtrust.model": str(model), "io.semtrust.enforce": "1"})
    _, out, err = _lifecycle(tmp_path, root, f"bad-{tag}", bad)
    assert out == HOSTNAME
    assert "Operation not permitted" in err and "/etc/secret" in err


def test_kill_and_run(tmp_path: Path) -> None:
    root = tmp_path / "runc-root"
    tag = uuid.uuid4().hex[:8]
    cid = f"kill-{tag}"
    b = _bundle(tmp_path / "k", ["sh", "-c", "sleep 60"], {})
    # The container inherits create's stdio (as with runc): no pipes here.
    c = subprocess.run([*WRAPPER, "--root", str(root), "create", "--bundle", str(b), cid],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)
    assert c.returncode == 0
    assert wrapper(root, "start", cid).returncode == 0
    # create has exited; its detached keeper holds the state dir's lock, so a sweep (as the
    # next container start runs it) must leave this live container's state alone.
    mine = [d for d in state_root().iterdir() if d.name.startswith(cid)]
    assert len(mine) == 1
    old = time.time() - 2 * STALE_AFTER_S
    os.utime(mine[0] / STATE_LOCK, (old, old))
    assert mine[0] not in sweep_stale_state(state_root())
    assert _state(root, cid)["status"] == "running"
    r = wrapper(root, "kill", cid, "KILL")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    while _state(root, cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(root, cid)["status"] == "stopped"
    assert wrapper(root, "delete", cid).returncode == 0

    model = tmp_path / "run.model"
    rb = _bundle(tmp_path / "r", ["sh", "-c", "cat /etc/hostname; exit 3"],
                 {"io.semtrust.output": str(model)})
    r = wrapper(root, "run", "--bundle", str(rb), f"run-{tag}")
    assert r.returncode == 3, r.stderr
    assert r.stdout == HOSTNAME
    assert _points(model)


@pytest.mark.parametrize("case", ["no-bundle", "enforce-without-model", "bad-rootfs-mode",
                                  "no-id"])
def test_wrapper_bad_input(tmp_path: Path, case: str) -> None:
    root = tmp_path / "runc-root"
    ann = {"enforce-without-model": {"io.semtrust.enforce": "true"},
           "bad-rootfs-mode": {"io.semtrust.rootfs": "sideways"}}.get(case, {})
    b = _bundle(tmp_path / "b", ["true"], ann)
    if case == "no-bundle":
        args = ["create", "--bundle", str(tmp_path / "nothere"), "x1"]
    elif case == "no-id":
        args = ["create", "--bundle", str(b)]
    else:
        args = ["create", "--bundle", str(b), f"x-{uuid.uuid4().hex[:8]}"]
    r = wrapper(root, *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("semtrust-runc: "), r.stderr


def test_podman_end_to_end(tmp_path: Path) -> None:
    podman = shutil.which("podman")
    need(podman is not None, "podman not installed (Debian package podman)")
    assert podman is not None
    rootfs = tmp_path / "rootfs"
    build_busybox_bundle(tmp_path / "bb", ["sh"], files={"/etc/motd": "hello-motd\n",
                                                       "/etc/secret": SECRET})
    shutil.move(str(tmp_path / "bb" / "rootfs"), rootfs)
    tar = tmp_path / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(rootfs, arcname=".")
    image = f"localhost/semtrust-bbx-{uuid.uuid4().hex[:8]}:latest"
    imp = subprocess.run([podman, "import", str(tar), image], capture_output=True, text=True,
                         timeout=300)
    assert imp.returncode == 0, imp.stderr
    runtime = tmp_path / "semtrust-runc"
    runtime.write_text(f'#!/bin/sh\nexec {sys.executable} -c "{ENTRY}" "$@"\n')
    runtime.chmod(0o755)
    base = [podman, "--runtime", str(runtime), "--cgroup-manager", "cgroupfs", "run", "--rm",
            "--network", "none", "--ulimit", "nofile=20000:20000",
            "--ulimit", "nproc=32768:32768"]
    model = tmp_path / "podman.model"
    try:
        r = subprocess.run([*base, "--annotation", f"io.semtrust.output={model}", image,
                            "sh", "-c", "cat /etc/motd"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "hello-motd\n"
        _wait_file(model)
        assert any("/etc/motd" in ln for ln in model.read_text().splitlines())
        r = subprocess.run([*base, "--annotation", f"io.semtrust.model={model}",
                            "--annotation", "io.semtrust.enforce=true", image,
                            "sh", "-c", "cat /etc/motd; cat /etc/secret"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode != 0
        assert r.stdout == "hello-motd\n"
        assert "Operation not permitted" in r.stderr
        # Detached container + `podman exec`: runc exec hands the mediator a new listener.
        model2 = tmp_path / "exec.model"
        base_d = [b for b in base if b != "--rm"]
        r = subprocess.run([*base_d, "-d", "--annotation", f"io.semtrust.output={model2}",
                            image, "sh", "-c", "sleep 60"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        cid = r.stdout.strip()
        ex = subprocess.run([podman, "--runtime", str(runtime), "exec", cid, "cat", "/etc/motd"],
                            capture_output=True, text=True, timeout=120)
        subprocess.run([podman, "--runtime", str(runtime), "rm", "-f", "-t", "0", cid],
                       capture_output=True, timeout=120)
        assert ex.returncode == 0 and ex.stdout == "hello-motd\n", ex.stderr
        _wait_file(model2)
        assert any("/etc/motd" in ln for ln in model2.read_text().splitlines())
    finally:
        subprocess.run([podman, "rmi", "-f", image], capture_output=True, timeout=120)
