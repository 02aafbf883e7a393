"""The workload cannot reach its management socket or the orchestrator; users can.

Also: an unprivileged user learns and enforces a model (the CI use case).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

import semtrust
from tests.integration.needs import need

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")

PROBE = r"""
import ctypes, json, os, socket, struct, sys, time
while not os.path.exists(sys.argv[3]):  # the test writes the orchestrator's pid there
    time.sleep(0.02)
sup = int(open(sys.argv[3]).read())
res = {"sup": sup}
open("/proc/self/status").read()  # our own process: fine
holder = [l for l in open("/proc/self/status") if l.startswith("PPid:")][0].split()[1]
try:  # the listener holder (pid 1 here) is off limits, and so is everything outside
    open(f"/proc/{holder}/status").read()
    res["holder_status"] = 0
except OSError as e:
    res["holder_status"] = e.errno
stolen = []
for n in range(3, 12):  # try to steal the listener from the holder
    for path in (f"/proc/{holder}/fd/{n}", f"/proc/1/fd/{n}"):
        try:
            stolen.append(os.open(path, os.O_RDONLY))
        except OSError:
            pass
libc0 = ctypes.CDLL(None, use_errno=True)
try:
    pfd = os.pidfd_open(1)
    for n in range(3, 12):
        fd = libc0.syscall(438, pfd, n, 0)
        if fd >= 0:
            stolen.append(fd)
except OSError:
    pass
res["stolen"] = [os.readlink(f"/proc/self/fd/{fd}") for fd in stolen]
kills = []
for target in (1, 2):  # the holder and the keeper of the listener
    try:
        os.kill(target, 9)
        kills.append(0)
    except OSError as e:
        kills.append(e.errno)
res["kills"] = kills
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    req = json.dumps({"op": "show", "what": "points"}).encode()
    s.sendall(struct.pack(">I", len(req)) + req)
    hdr = s.recv(4)
    body = b""
    n = struct.unpack(">I", hdr)[0]
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            break
        body += chunk
    res["mgmt"] = json.loads(body)
except OSError as e:
    res["mgmt"] = {"ok": False, "error": f"errno {e.errno}"}
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
rc = libc.ptrace(16, sup, None, None)  # PTRACE_ATTACH
res["ptrace"] = 0 if rc == 0 else ctypes.get_errno()
for f in ("mem", "environ"):
    try:
        open(f"/proc/{sup}/{f}", "rb").read(1)
        res[f] = 0
    except OSError as e:
        res[f] = e.errno
print(json.dumps(res), flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
"""


def _sock_dir() -> Path:
    from semtrust.orchestrator.mgmt import runtime_dir

    return runtime_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="the interesting case is a root workload")
def test_workload_cannot_reach_mgmt_socket_or_orchestrator(tmp_path: Path) -> None:
    py = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    name = f"isol-{os.getpid()}"
    sock = _sock_dir() / f"{name}.sock"
    go = tmp_path / "go"
    pidfile = tmp_path / "pid"
    p = subprocess.Popen([*SEMTRUST, "run", "--name", name, "--", py, "-I", str(script),
                          str(sock), str(go), str(pidfile)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    tmp = tmp_path / "pid.tmp"
    tmp.write_text(str(p.pid))
    tmp.rename(pidfile)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        res = json.loads(line)
        assert res["sup"] == p.pid
        assert res["holder_status"] != 0 and res["stolen"] == [], res
        assert res["kills"] == [1, 1], res
        # Unreachable (its directory is covered in the workload's mount namespace), or
        # refused if it were reachable.
        assert res["mgmt"]["ok"] is False, res
        assert "refused" in res["mgmt"]["error"] or res["mgmt"]["error"] == "errno 2", res
        assert res["ptrace"] != 0, "the workload attached to its orchestrator"
        assert res["mem"] != 0 and res["environ"] != 0, res
        # The owner on the host can talk to the domain.
        r = subprocess.run([*SEMTRUST, "console", name, "show", "points"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.split()) > 5 and all(len(x) == 64 for x in r.stdout.split())
        for what in ("state", "measurement", "aggregate", "counts", "trajectory", "model",
                     "forensics"):
            r = subprocess.run([*SEMTRUST, "console", name, "show", what],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, (what, r.stderr)
        r = subprocess.run([*SEMTRUST, "list"], capture_output=True, text=True, timeout=30)
        assert name in r.stdout
    finally:
        go.touch()
        p.wait(timeout=60)
    assert p.returncode == 0
    assert not sock.exists()
    r = subprocess.run([*SEMTRUST, "console", name, "show", "state"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def _unprivileged_python(copy_to: Path | None = None
                         ) -> tuple[list[str], dict[str, str]] | None:
    """A python the 'nobody' user can run, with our sources and dependencies on its path.

    The dependencies are those of the environment running the tests. With ``copy_to``
    (a directory every user can traverse), sources and dependencies are copied there
    and made world-readable first: a checkout under a private home directory, or one
    cloned with umask 077, is unreadable to other users however its venv was made.
    """
    py = "/usr/bin/python3"
    if not os.access(py, os.X_OK):
        return None
    site = Path(sysconfig.get_paths()["purelib"])
    src = Path(semtrust.__file__).resolve().parents[1]
    if copy_to is not None:
        shutil.copytree(src / "semtrust", copy_to / "src" / "semtrust", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(site, copy_to / "site", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "pip", "pip-*",
                                                      "_pytest", "hypothesis", "mypy*"))
        src, site = copy_to / "src", copy_to / "site"
        _world_readable(copy_to)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{src}:{site}", "LANG": "C.UTF-8"}
    return [py, "-c", "import sys; from semtrust.cli import main; sys.exit(main())"], env


def _world_readable(top: Path) -> None:
    """Directories 0755, files 0644 (0755 if executable), whatever they were copied with."""
    top.chmod(0o755)
    for root, dirs, files in os.walk(top):
        for d in dirs:
            p = Path(root, d)
            if not p.is_symlink():
                p.chmod(0o755)
        for f in files:
            p = Path(root, f)
            if not p.is_symlink():
                p.chmod(0o755 if p.stat().st_mode & 0o100 else 0o644)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")
def test_unprivileged_user_learns_and_enforces() -> None:
    # pytest's tmp_path lives under a 0700 directory of root: use a world-readable one
    # (mkdtemp makes it 0700 too, so open it up before anything is copied into it).
    tmp_path = Path(tempfile.mkdtemp(prefix="semtrust-nobody-", dir="/tmp"))
    tmp_path.chmod(0o755)
    try:
        _unprivileged(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _unprivileged(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    need(setpriv is not None, "setpriv (util-linux) not installed")
    assert setpriv is not None
    found = _unprivileged_python()
    need(found is not None, "no /usr/bin/python3 readable by nobody")
    assert found is not None
    cmd, env = found
    probe = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd,
                            "--version"], capture_output=True, text=True, env=env)
    if probe.returncode != 0:  # the checkout is private: give nobody a readable copy
        found = _unprivileged_python(copy_to=tmp_path / "py")
        assert found is not None
        cmd, env = found
        probe = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                                *cmd, "--version"], capture_output=True, text=True, env=env)
        assert probe.returncode == 0, probe.stderr
    tmp_path.chmod(0o777)
    env = {**env, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    m = tmp_path / "m"
    r = subprocess.run([*nobody, "run", "--output", str(m), "--", "sh", "-c",
                        "id -u; cat /etc/hostname; ls / >/dev/null"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "65534"
    assert m.stat().st_uid == 65534
    r = subprocess.run([*nobody, "run", "--model", str(m), "--enforce", "--", "sh", "-c",
                        "id -u; cat /etc/hostname; ls / >/dev/null"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*nobody, "run", "--model", str(m), "--enforce", "--", "sh", "-c",
                        "id -u; cat /etc/hostname; ls / >/dev/null; cat /etc/passwd"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    assert "Operation not permitted" in r.stderr
    assert "root:" not in r.stdout
