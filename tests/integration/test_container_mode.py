"""Container mode: `semtrust run --bundle` with runc, fanotify file mediation, cgroup domain.

Real runc, real fanotify, real seccomp; a busybox bundle built here. Needs root (CI is).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from semtrust.orchestrator.bundle import build_busybox_bundle, load_bundle, write_config
from semtrust.orchestrator.container import (
    MEDIATOR_CAPS,
    STALE_AFTER_S,
    STATE_LOCK,
    cgroup2_root,
    state_root,
    sweep_stale_state,
)
from tests.integration.needs import need, need_container_host

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]
HOSTNAME = "semtrust-test\n"
SECRET = "top secret\n"


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    need_container_host()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return build_busybox_bundle(tmp_path / "bundle", ["sh", "-c", "cat /etc/hostname"],
                                files={"/etc/hostname": HOSTNAME, "/etc/secret": SECRET})


def semtrust(*args: str, env: dict[str, str] | None = None, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEMTRUST, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def points(model: Path) -> list[str]:
    return sorted(line.split()[1] for line in model.read_text().splitlines()
                  if line.startswith("state "))


def _tree_digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        h.update(str(p.relative_to(d)).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def learned(bundle: Path, tmp_path: Path) -> Path:
    model = tmp_path / "learned.model"
    r = semtrust("run", "--name", f"ct-learn-{os.getpid()}", "--output", str(model),
                 "--bundle", str(bundle))
    assert r.returncode == 0, r.stderr
    assert r.stdout == HOSTNAME
    return model


@pytest.fixture
def learned_sleep(bundle: Path, tmp_path: Path) -> Path:
    """A model of `sleep N; cat /etc/hostname` (N is not part of any event)."""
    model = tmp_path / "sleep.model"
    r = semtrust("run", "--output", str(model), "--bundle", str(bundle), "--",
                 "sh", "-c", "sleep 0; cat /etc/hostname")
    assert r.returncode == 0, r.stderr
    return model


def test_learn_then_enforce_allows_the_learned_behaviour(bundle: Path, learned: Path) -> None:
    pts = points(learned)
    assert pts, learned.read_text()
    text = learned.read_text()
    assert "/etc/hostname" in text and "/bin/busybox" in text
    r = semtrust("run", "--model", str(learned), "--enforce", "--bundle", str(bundle))
    assert r.returncode == 0, r.stderr
    assert r.stdout == HOSTNAME
    assert "outside the model" not in r.stderr


def test_enforce_denies_a_new_file_and_names_it(bundle: Path, learned: Path,
                                                tmp_path: Path) -> None:
    out = tmp_path / "after.model"
    r = semtrust("run", "--model", str(learned), "--enforce", "--output", str(out),
                 "--bundle", str(bundle), "--", "sh", "-c", "cat /etc/hostname; cat /etc/secret")
    assert r.returncode != 0
    assert r.stdout == HOSTNAME  # the learned part still works
    assert "Operation not permitted" in r.stderr
    assert SECRET.strip() not in r.stdout
    forensic = [ln for ln in r.stderr.splitlines() if ln.startswith("semtrust:   ")]
    assert any("file_open" in ln and "/etc/secret" in ln for ln in forensic), r.stderr
    # The written model keeps the forensic point next to the learned ones.
    assert len(points(out)) == len(points(learned)) + 1


def test_learning_twice_gives_the_same_points(bundle: Path, learned: Path,
                                              tmp_path: Path) -> None:
    again = tmp_path / "again.model"
    r = semtrust("run", "--output", str(again), "--bundle", str(bundle))
    assert r.returncode == 0, r.stderr
    assert points(again) == points(learned)


def test_each_open_is_mediated_once_with_container_paths(bundle: Path, tmp_path: Path) -> None:
    traj = tmp_path / "traj.json"
    r = semtrust("run", "--output", str(traj), "--trajectory", "--bundle", str(bundle))
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in traj.read_text().splitlines()]
    opens = [e for e in events if e["event"]["type"] == "file_open"]
    paths = [e["file_open"]["file"]["path"]["pathname"] for e in opens]
    # Container-relative, never the host path of the rootfs copy.
    assert "/etc/hostname" in paths and "/bin/busybox" in paths
    assert not any(str(state_root()) in p for p in paths)
    # The exec of /bin/busybox is one file_open (O_LARGEFILE|FMODE_EXEC): not also the
    # kernel's OPEN_PERM that follows OPEN_EXEC_PERM, nor seccomp's execve notification.
    # (busybox sh runs its applets by exec'ing /proc/self/exe: one exec per process here.)
    exe = [e["file_open"]["file"]["flags"] for e in opens
           if e["file_open"]["file"]["path"]["pathname"] == "/bin/busybox"]
    execs = [e for e in events if e["event"]["type"] == "bprm_committed_creds"]
    assert exe and set(exe) == {"32800"} and len(exe) == len(execs), (exe, len(execs))
    # tmpfs copy: s_uuid is zeroed in the coefficient; s_id is the stable "tmpfs".
    host = next(e for e in opens if e["file_open"]["file"]["path"]["pathname"] == "/etc/hostname")
    assert host["file_open"]["file"]["inode"]["s_id"] == "tmpfs"
    # Opens are emulated by the seccomp side; fanotify lets the mediator's own open of
    # the file through, so /etc/hostname (read once by cat) is one event, not two.
    assert paths.count("/etc/hostname") == 1, paths


# The writer is waited for before the next open: its SIGCHLD arriving while sh's open
# waits for the mediator would interrupt that open (README, container limits: runc 1.1
# cannot ask for SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV).
FIFO_AND_PROC = ("mkfifo /dev/f && { echo through-fifo > /dev/f & cat /dev/f; wait; } && "
                 "cat /proc/self/status /proc/1/cmdline > /dev/null && echo x > /dev/new && "
                 "cat /dev/new /dev/null")


def test_fifo_procfs_and_created_files_learn_twice_and_enforce_clean(bundle: Path,
                                                                    tmp_path: Path) -> None:
    """FIFOs are opened by the kernel after the check (fanotify accepts exactly the object
    described), procfs and new files are emulated: the same points twice, and the model
    enforces the same run without a denial."""
    models = []
    for i in range(2):
        m = tmp_path / f"m{i}.model"
        r = semtrust("run", "--output", str(m), "--bundle", str(bundle), "--", "sh", "-c",
                     FIFO_AND_PROC)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "through-fifo\nx\n", r.stdout + r.stderr
        models.append(m)
    assert points(models[0]) == points(models[1])
    r = semtrust("run", "--model", str(models[0]), "--enforce", "--bundle", str(bundle), "--",
                 "sh", "-c", FIFO_AND_PROC)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "through-fifo\nx\n"
    assert "outside the model" not in r.stderr and "could not be modeled" not in r.stderr


def test_bundle_on_disk_is_not_modified(bundle: Path, tmp_path: Path) -> None:
    before = _tree_digest(bundle)
    r = semtrust("run", "--bundle", str(bundle), "--", "sh", "-c",
                 "echo x > /tmp/f; cat /etc/hostname")
    assert r.returncode == 0, r.stderr
    assert _tree_digest(bundle) == before


def test_command_overrides_process_args(bundle: Path) -> None:
    r = semtrust("run", "--bundle", str(bundle), "--", "sh", "-c", "echo override; exit 7")
    assert r.stdout == "override\n"
    assert r.returncode == 7


def test_domain_is_its_own_cgroup_with_only_container_processes(bundle: Path,
                                                               tmp_path: Path) -> None:
    from semtrust.orchestrator.mgmt import request

    name = f"ct-cg-{os.getpid()}"
    p = subprocess.Popen([*SEMTRUST, "run", "--name", name, "--bundle", str(bundle), "--",
                          "sh", "-c", "sleep 30"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        info = _wait_container(name, p)
        cg = cgroup2_root() / info["cgroup"].lstrip("/")
        assert info["cgroup_id"] == os.stat(cg).st_ino
        procs = [int(x) for x in (cg / "cgroup.procs").read_text().split()]
        assert procs, "the container has processes"
        med = request(name, {"op": "info"})["pid"]
        assert med not in procs and p.pid not in procs and os.getpid() not in procs
        ns: set[int] = set()
        for x in procs:  # no mediation fd leaked into the container
            try:  # a process that exits meanwhile (runc's init hand-over) holds nothing
                fds = os.listdir(f"/proc/{x}/fd")
                ns.add(os.stat(f"/proc/{x}/ns/pid").st_ino)
            except FileNotFoundError:
                continue
            for fd in fds:
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{x}/fd/{fd}")
                    assert "fanotify" not in target and "seccomp" not in target
        assert ns, "every container process vanished while being checked"
        assert ns != {os.stat("/proc/self/ns/pid").st_ino}
        # The mediator kept only the capabilities it needs (README: privileges).
        status = Path(f"/proc/{med}/status").read_text()
        capeff = int(next(ln for ln in status.splitlines()
                          if ln.startswith("CapEff:")).split()[1], 16)
        assert capeff == sum(1 << c for c in MEDIATOR_CAPS)
        assert not capeff & (1 << 21)  # no CAP_SYS_ADMIN: marking mounts is the keeper's
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)


def _wait_container(name: str, p: subprocess.Popen[str], timeout: float = 60
                    ) -> dict[str, object]:
    from semtrust.errors import SemtrustError
    from semtrust.orchestrator.mgmt import request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.poll() is None, p.communicate()
        try:
            info = request(name, {"op": "container"})
            if info.get("cgroup_id"):
                cg = cgroup2_root() / str(info["cgroup"]).lstrip("/")
                procs = (cg / "cgroup.procs").read_text().split()
                # Started: the workload's `sleep` runs. (Waiting only for "no runc:[2:INIT]"
                # returned while runc's short-lived [0:PARENT]/[1:CHILD] stages were the
                # cgroup's only members, before INIT existed; they then exited under the
                # caller's checks.)
                if any(Path(f"/proc/{x}/comm").read_text().strip() == "sleep" for x in procs):
                    return dict(info)
        except (SemtrustError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError("container did not start")


def test_mediator_death_kills_the_container(bundle: Path, learned_sleep: Path) -> None:
    """Fail closed: the keeper kills the domain's cgroup when the mediator dies."""
    from semtrust.orchestrator.mgmt import request

    name = f"ct-fc-{os.getpid()}"
    p = subprocess.Popen([*SEMTRUST, "run", "--name", name, "--model", str(learned_sleep),
                          "--enforce", "--bundle", str(bundle), "--",
                          "sh", "-c", "sleep 30; cat /etc/hostname"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info = _wait_container(name, p)
    cg = cgroup2_root() / str(info["cgroup"]).lstrip("/")
    med = request(name, {"op": "info"})["pid"]
    os.kill(med, signal.SIGKILL)
    out, err = p.communicate(timeout=25)  # far below the 30 s sleep
    assert p.returncode != 0
    assert HOSTNAME.strip() not in out
    assert "fail closed" in err
    assert not cg.exists() or not (cg / "cgroup.procs").read_text().split()


def test_keeper_death_kills_the_container(bundle: Path, learned_sleep: Path) -> None:
    """Fail closed the other way: the mediator kills the cgroup when the keeper dies."""
    name = f"ct-kd-{os.getpid()}"
    p = subprocess.Popen([*SEMTRUST, "run", "--name", name, "--model", str(learned_sleep),
                          "--enforce", "--bundle", str(bundle), "--",
                          "sh", "-c", "sleep 30; cat /etc/hostname"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info = _wait_container(name, p)
    cg = cgroup2_root() / str(info["cgroup"]).lstrip("/")
    p.kill()
    out, _ = p.communicate(timeout=30)
    try:
        def members() -> list[str]:  # runc removes the cgroup once the container is dead
            try:
                return (cg / "cgroup.procs").read_text().split()
            except FileNotFoundError:
                return []

        deadline = time.monotonic() + 25  # far below the container's 30 s sleep
        while members() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not members()
        assert HOSTNAME.strip() not in out
        # The keeper could not unmount its rootfs copy: the next start sweeps it away once
        # nobody holds the state dir's lock (the mediator lets go when it exits).
        rootfs = Path(str(info["rootfs"]))
        assert os.path.ismount(rootfs)
        old = time.time() - 2 * STALE_AFTER_S
        os.utime(rootfs.parent / STATE_LOCK, (old, old))
        deadline = time.monotonic() + 20
        while rootfs.parent.exists() and time.monotonic() < deadline:
            sweep_stale_state(state_root())
            time.sleep(0.1)
        assert not rootfs.parent.exists() and not os.path.ismount(rootfs)
    finally:  # if the sweep did not, leave the machine clean
        rootfs = Path(str(info["rootfs"]))
        subprocess.run(["umount", "-l", str(rootfs)], capture_output=True)
        shutil.rmtree(rootfs.parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            cg.rmdir()


def test_host_opens_on_the_rootfs_are_allowed_and_not_modeled(bundle: Path,
                                                              learned_sleep: Path,
                                                              tmp_path: Path) -> None:
    name = f"ct-out-{os.getpid()}"
    stats = tmp_path / "stats.json"
    out = tmp_path / "out.model"
    env = dict(os.environ, SEMTRUST_STATS=str(stats))
    p = subprocess.Popen([*SEMTRUST, "run", "--name", name, "--model", str(learned_sleep),
                          "--enforce", "--output", str(out), "--bundle", str(bundle), "--",
                          "sh", "-c", "sleep 5; cat /etc/hostname"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    info = _wait_container(name, p)
    rootfs = Path(str(info["rootfs"]))
    # A host process reads the marked filesystem, even a file outside the model.
    assert (rootfs / "etc" / "secret").read_text() == SECRET
    r = subprocess.run(["cat", str(rootfs / "etc" / "secret")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout == SECRET
    o, e = p.communicate(timeout=120)
    assert p.returncode == 0, e
    assert o == HOSTNAME
    s = json.loads(stats.read_text())
    assert s["file_events_outside"] >= 2
    assert s["forensics"] == 0
    assert points(out) == points(learned_sleep)


@pytest.mark.parametrize("case", ["missing", "no-config", "bad-json", "not-oci", "no-rootfs"])
def test_bad_bundles_are_one_line_exit_2(tmp_path: Path, case: str) -> None:
    b = tmp_path / "b"
    if case != "missing":
        b.mkdir()
        (b / "rootfs").mkdir()
    if case == "bad-json":
        (b / "config.json").write_text('{"ociVersion": "1.0.2",\n  "process": [}\n')
    elif case == "not-oci":
        (b / "config.json").write_text(json.dumps({"ociVersion": "1.0.2",
                                                   "root": {"path": "rootfs"}}))
    elif case == "no-rootfs":
        (b / "config.json").write_text(json.dumps({
            "ociVersion": "1.0.2", "root": {"path": "nothere"},
            "process": {"args": ["sh"], "cwd": "/"}}))
    r = semtrust("run", "--bundle", str(b))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("semtrust: "), r.stderr
    assert "Traceback" not in r.stderr


def test_bad_model_is_one_line_exit_2(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.model"
    bad.write_text("state nothex\nend\n")
    r = semtrust("run", "--model", str(bad), "--enforce", "--bundle", str(bundle))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("semtrust: ") and "bad.model" in lines[0], \
        r.stderr


def test_runc_missing_is_one_line_exit_2(bundle: Path) -> None:
    env = dict(os.environ, SEMTRUST_RUNC="/nonexistent/runc")
    r = semtrust("run", "--bundle", str(bundle), env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "runc" in lines[0], r.stderr


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    base = state_root()
    if base.exists():  # state dirs are NAME-<keeper pid>: none may outlive its keeper
        left = [p.name for p in base.iterdir()
                if not Path(f"/proc/{p.name.rsplit('-', 1)[-1]}").exists()]
        assert not left


def test_container_cannot_escape_mediation(bundle: Path, tmp_path: Path) -> None:
    """Nested seccomp listeners, io_uring and userfaultfd are refused by the profile.

    Without the profile rule the kernel answers a second listener with EBUSY (16); the
    profile's own refusal (EPERM) is what this checks.
    """
    cc = shutil.which("gcc")
    need(cc is not None, "gcc not installed (Debian package gcc)")
    probe = bundle / "rootfs" / "bin" / "escape_probe"
    src = Path(__file__).parent.parent / "data" / "probes" / "escape_probe.c"
    subprocess.run([str(cc), "-static", "-O2", "-o", str(probe), str(src)], check=True)
    r = semtrust("run", "--bundle", str(bundle), "--", "/bin/escape_probe")
    assert r.returncode == 0, r.stderr
    assert "listener rc -1 errno 1\n" in r.stdout, r.stdout
    assert "io_uring rc -1 errno 38\n" in r.stdout, r.stdout
    assert "userfaultfd rc -1 errno 1\n" in r.stdout, r.stdout


def test_runc_init_as_another_user_without_no_new_privs(tmp_path: Path) -> None:
    """noNewPrivileges false (podman's default) and a non-root user: runc installs the
    profile before it switches to the user, so its own calls (setgroups, setresuid,
    capset, listing its /proc/self/fd as a process that is not dumpable) are mediated.
    They run as without semtrust, learn the same points twice and enforce clean."""
    b = build_busybox_bundle(tmp_path / "bundle", ["sh", "-c", "cat /etc/hostname; id"],
                             files={"/etc/hostname": HOSTNAME})
    cfg = load_bundle(b).config
    cfg["process"]["noNewPrivileges"] = False
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5]}
    write_config(cfg, b)
    models = []
    for i in range(2):
        m = tmp_path / f"m{i}.model"
        r = semtrust("run", "--output", str(m), "--bundle", str(b))
        assert r.returncode == 0, r.stderr
        assert r.stdout == HOSTNAME + "uid=1000 gid=1000 groups=5\n", r.stdout + r.stderr
        assert "could not be modeled" not in r.stderr
        models.append(m)
    assert points(models[0]) == points(models[1])
    r = semtrust("run", "--model", str(models[0]), "--enforce", "--bundle", str(b))
    assert r.returncode == 0, r.stderr
    assert "outside the model" not in r.stderr and "could not be modeled" not in r.stderr
