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
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from semtrust.orchestrator.bundle import build_busybox_bundle, load_bundle, write_config
from tests.integration.needs import need, need_container_host

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]
HERE = Path(__file__).resolve().parent
HOSTNAME = "escape-test\n"
ENV_SECRET = "ENV_TOKEN_5f1c0de"
HOST_SECRET = "host volume secret 93a1\n"
BENIGN = "cat /etc/hostname"


def _build_attacks(rootfs: Path, tmp: Path) -> None:
    """container_attacks.c, static, as /bin/ca in the rootfs."""
    need(shutil.which("gcc") is not None, "gcc not installed (Debian package gcc)")
    need(Path("/usr/lib/x86_64-linux-gnu/libc.a").exists(),
         "static libc not installed (Debian package libc6-dev)")
    subprocess.run(["gcc", "-static", "-O1", "-pthread", "-o", str(rootfs / "bin" / "ca"),
                    str(HERE / "container_attacks.c")], check=True, capture_output=True)
    (rootfs / "tmp" / "d").mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp" / "d" / "environ").write_text("benign\n")
    (rootfs / "tmp" / "f").mkdir(exist_ok=True)
    os.mkfifo(rootfs / "tmp" / "f" / "environ")
    (rootfs / "tmp" / "m").mkdir(exist_ok=True)
    (rootfs / "tmp" / "m" / "environ").symlink_to("/proc/self/fd/100")


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
    _build_attacks(bdir / "rootfs", tmp)
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
    # A file the domain creates is named by where it was created, not by its own name.
    assert any(script in ln or f"{where}/<created>" in ln for ln in forensic_lines(r)), r.stderr


def test_sysfs_read_outside_the_model_is_denied(setup: tuple[Path, Path, Path]) -> None:
    r = attack(setup, "cat /sys/class/net/lo/address")
    assert "00:00:00:00:00:00" not in r.stdout
    assert r.returncode != 0
    assert any("/sys/" in ln and "address" in ln for ln in forensic_lines(r)), r.stderr


def learn(setup: tuple[Path, Path, Path], script: str, tag: str) -> Path:
    """A model of ``BENIGN; script`` (the benign neighbour of an attack)."""
    bdir, _vol, _model = setup
    model = bdir.parent / f"{tag}.model"
    if not model.exists():
        r = run("--name", f"esc-l{tag}-{os.getpid()}", "--output", str(model), "--bundle",
                str(bdir), "--", "sh", "-c", f"{BENIGN}; {script}")
        assert r.returncode == 0, r.stderr
    return model


def enforce(setup: tuple[Path, Path, Path], model: Path, script: str
            ) -> subprocess.CompletedProcess[str]:
    bdir, _vol, _model = setup
    return run("--name", f"esc-{os.getpid()}", "--model", str(model), "--enforce",
               "--bundle", str(bdir), "--", "sh", "-c", f"{BENIGN}; {script}")


@pytest.mark.parametrize("mode", ["race-cwd", "race-dirfd", "race-fifo", "race-magic"])
def test_route_race_cannot_land_on_procfs(setup: tuple[Path, Path, Path], mode: str) -> None:
    """One thread opens "environ" (an allowed file in /tmp/d; a FIFO in /tmp/f) again and
    again; another moves the cwd (or the dirfd) between there and /proc/1 with no mediated
    call (or, race-magic, swaps the descriptor a magic link names). An open checked there
    and re-resolved by the kernel would read pid 1's environment: opens are emulated
    (FIFOs and magic links too), so what is checked is what is opened."""
    benign = {"race-fifo": "benign-fifo", "race-magic": "benign-magic"}.get(mode,
                                                                          "benign-race")
    model = learn(setup, f"/bin/ca {benign} 200", benign)
    r = enforce(setup, model, f"/bin/ca {mode} 5000")
    assert "LEAK" not in r.stdout and ENV_SECRET not in r.stdout, r.stdout
    assert "opens ok" in r.stdout, r.stderr  # it ran
    # pid 1 is the attack itself (sh execs the last command): /proc/self/environ
    assert any(ln.endswith(("/proc/PID/environ", "/proc/self/environ"))
               for ln in forensic_lines(r)), r.stdout + r.stderr


@pytest.mark.parametrize(("variant", "runs"), [("", True), ("flip", False)])
def test_memfd_exec_is_measured(setup: tuple[Path, Path, Path], variant: str,
                                runs: bool) -> None:
    """execveat of a memfd (a filesystem fanotify cannot mark): a copy of the allowed
    busybox runs; the same copy with one byte changed is a new file_open (its digest)."""
    model = learn(setup, "/bin/ca memfd-exec /bin/busybox", "memfd")
    r = enforce(setup, model, f"/bin/ca memfd-exec /bin/busybox {variant}")
    if runs:
        assert r.returncode == 0 and "RAN" in r.stdout, r.stderr
        return
    assert "RAN" not in r.stdout
    assert r.returncode != 0
    assert any(ln.split()[1:2] == ["file_open"] and "memfd:payload" in ln
               for ln in forensic_lines(r)), r.stderr


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A bundle whose root may mount (CAP_SYS_ADMIN); (bundle, unused, unused)."""
    need_container_host()
    tmp = tmp_path_factory.mktemp("admin")
    bdir = build_busybox_bundle(tmp / "bundle", ["sh", "-c", BENIGN],
                                files={"/etc/hostname": HOSTNAME})
    cfg = load_bundle(bdir).config
    for caps in cfg["process"]["capabilities"].values():
        caps.append("CAP_SYS_ADMIN")
    write_config(cfg, bdir)
    (bdir / "rootfs" / "mnt").mkdir(exist_ok=True)
    return bdir, tmp, tmp


MOUNT = "mount -t tmpfs t /mnt && cp /bin/busybox /mnt/busybox"


def test_exec_from_a_tmpfs_mounted_after_start(admin: tuple[Path, Path, Path]) -> None:
    """A tmpfs mounted inside the running container (the mount is in the model): the
    binary copied there runs as learned; changed by one appended byte, its exec is a new
    file_open (digest): the new mount was marked before the exec was decided."""
    model = learn(admin, f"{MOUNT} && echo -n >> /mnt/busybox && /mnt/busybox echo RAN", "mnt")
    ok = enforce(admin, model, f"{MOUNT} && echo -n >> /mnt/busybox && /mnt/busybox echo RAN")
    assert ok.returncode == 0 and "RAN" in ok.stdout, ok.stderr
    r = enforce(admin, model, f"{MOUNT} && echo x >> /mnt/busybox && /mnt/busybox echo RAN")
    assert "RAN" not in r.stdout
    assert r.returncode != 0
    # Either the exec's open (its digest) or the identity derived from it is new: which
    # one is decided first depends on whether the new mount was already marked.
    assert any((ln.split()[1:2] == ["file_open"] and "/mnt/" in ln)
               or "new program identity" in ln for ln in forensic_lines(r)), r.stderr


@pytest.mark.parametrize("abi", ["x32", "i386"])
def test_other_abis_are_killed(setup: tuple[Path, Path, Path], abi: str) -> None:
    """The profile lists x86_64 only: a call through the x32 or i386 ABI (numbers the
    table does not classify) kills the caller in every mode, learning included."""
    bdir, _vol, _model = setup
    r = run("--name", f"esc-abi-{os.getpid()}", "--bundle", str(bdir), "--", "sh", "-c",
            f"/bin/ca {abi}; echo status=$?")
    assert "ALIVE" not in r.stdout, r.stdout
    assert "status=159" in r.stdout, r.stdout + r.stderr  # 128 + SIGSYS
