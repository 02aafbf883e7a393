"""Red team, container mode: every filesystem an enforcing container can open is mediated.

A busybox bundle with a host volume at /vol, a secret in pid 1's environment, /dev and
/dev/shm tmpfs and a read-only /sys learns a benign run (`cat /etc/hostname`), then runs
attacks under `--enforce`. Each attack reaches a filesystem other than the container's
rootfs: a bind-mounted host directory, procfs, sysfs, a tmpfs. For each, the forbidden
effect must not happen and the event must be among the domain's forensics (the run's
report on stderr names it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from semtrust.orchestrator.bundle import build_busybox_bundle, load_bundle, write_config
from tests.integration.needs import need_container_host

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]
HOSTNAME = "escape-test\n"
ENV_SECRET = "ENV_TOKEN_5f1c0de"
HOST_SECRET = "host volume secret 93a1\n"
BENIGN = "cat /etc/hostname"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """(bundle, host volume dir, learned model of the benign run)."""
    need_container_host()
    tmp = tmp_path_factory.mktemp("escape")
    vol = tmp / "vol"
    vol.mkdir()
    (vol / "secret").write_text(HOST_SECRET)
    (vol / "data").write_text("original\n")
    bdir = build_busybox_bundle(tmp / "bundle", ["sh", "-c", BENIGN],
                                files={"/etc/hostname": HOSTNAME})
    cfg = load_bundle(bdir).config
    cfg["process"]["env"].append(f"TOKEN={ENV_SECRET}")
    cfg["mounts"] += [
        {"destination": "/vol", "type": "bind", "source": str(vol),
         "options": ["rbind", "rw"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]},
    ]
    write_config(cfg, bdir)
    (bdir / "rootfs" / "vol").mkdir()
    model = tmp / "benign.model"
    r = run("--name", f"esc-learn-{os.getpid()}", "--output", str(model),
            "--bundle", str(bdir))
    assert r.returncode == 0, r.stderr
    assert r.stdout == HOSTNAME
    yield bdir, vol, model


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEMTRUST, "run", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def attack(setup: tuple[Path, Path, Path], script: str) -> subprocess.CompletedProcess[str]:
    bdir, _vol, model = setup
    return run("--name", f"esc-{os.getpid()}", "--model", str(model), "--enforce",
               "--bundle", str(bdir), "--", "sh", "-c", f"{BENIGN}; {script}")


def forensic_lines(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith("semtrust:   ")]


def test_benign_run_enforces_clean(setup: tuple[Path, Path, Path]) -> None:
    r = attack(setup, "true")
    assert r.returncode == 0, r.stderr
    assert r.stdout == HOSTNAME
    assert "outside the model" not in r.stderr and "could not be modeled" not in r.stderr


def test_host_volume_read_is_denied(setup: tuple[Path, Path, Path]) -> None:
    r = attack(setup, "cat /vol/secret")
    assert HOST_SECRET.strip() not in r.stdout
    assert r.returncode != 0
    assert any("/vol/secret" in ln for ln in forensic_lines(r)), r.stderr


def test_host_volume_write_is_denied(setup: tuple[Path, Path, Path]) -> None:
    _bdir, vol, _model = setup
    r = attack(setup, "echo owned > /vol/data")
    assert (vol / "data").read_text() == "original\n"
    assert r.returncode != 0
    assert any("/vol/data" in ln for ln in forensic_lines(r)), r.stderr


def test_proc_pid1_environ_is_denied(setup: tuple[Path, Path, Path]) -> None:
    r = attack(setup, "cat /proc/1/environ")
    assert ENV_SECRET not in r.stdout
    assert r.returncode != 0
    # pid 1 is the shell itself: the model names its own entries /proc/self/...
    assert any("/proc/1/environ" in ln or "/proc/self/environ" in ln
               for ln in forensic_lines(r)), r.stderr


@pytest.mark.parametrize("where", ["/dev", "/dev/shm"])
def test_script_on_a_tmpfs_does_not_run(setup: tuple[Path, Path, Path], where: str) -> None:
    script = f"{where}/x.sh"
    r = attack(setup, f"echo 'echo PWNED' > {script}; sh {script}")
    assert "PWNED" not in r.stdout
    assert r.returncode != 0
    assert any(script in ln for ln in forensic_lines(r)), r.stderr


def test_sysfs_read_outside_the_model_is_denied(setup: tuple[Path, Path, Path]) -> None:
    r = attack(setup, "cat /sys/class/net/lo/address")
    assert "00:00:00:00:00:00" not in r.stdout
    assert r.returncode != 0
    assert any("/sys/" in ln and "address" in ln for ln in forensic_lines(r)), r.stderr
