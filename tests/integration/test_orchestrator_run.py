"""semtrust run on the real kernel: learn, seal, enforce, trust, determinism, faults.

Every test runs the real CLI in a subprocess; the workload is supervised by
seccomp user notification in its own pid namespace.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from semtrust.events import (
    Event,
    FileCell,
    InetAddr,
    MmapCell,
    SocketAddrCell,
    TaskKillCell,
    UnixAddr,
)
from semtrust.events.jsonexport import parse_record
from tests.integration.needs import need

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]
SRC = Path(__file__).resolve().parents[2] / "src"

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")


def semtrust(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEMTRUST, *args], capture_output=True, text=True, timeout=timeout,
                          **kw)  # type: ignore[call-overload]


def points(model: Path) -> list[str]:
    return [line.split()[1] for line in model.read_text().splitlines()
            if line.startswith("state ")]


LEARN = "cat /etc/hostname; ls /"


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("orch")
    m = d / "base.model"
    r = semtrust("run", "--output", str(m), "--", "sh", "-c", LEARN)
    assert r.returncode == 0, r.stderr
    assert os.uname().nodename.split(".")[0] in r.stdout or r.stdout  # the workload ran
    assert m.read_text().rstrip().endswith("end")
    return m


def test_learn_then_enforce_same_workload(base_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "traj"
    r = semtrust("run", "--model", str(base_model), "--enforce", "--output", str(out),
                 "--trajectory", "--", "sh", "-c", LEARN)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "", "no forensics expected for the learned workload"
    assert "bin" in r.stdout.split()


def test_enforce_denies_new_file_and_records_forensics(base_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "forensics"
    r = semtrust("run", "--model", str(base_model), "--enforce", "--output", str(out),
                 "--trajectory", "--", "sh", "-c", LEARN + "; cat /etc/passwd")
    assert r.returncode != 0
    assert "Operation not permitted" in r.stderr
    assert "root:" not in r.stdout
    lines = out.read_text().splitlines()
    recs = [parse_record(ln, source=str(out), line=i + 1) for i, ln in enumerate(lines)]
    assert all(isinstance(r, Event) for r in recs)
    assert any('"process": "cat"' in ln and '"type": "file_open"' in ln
               and '"pathname": "/etc/passwd"' in ln for ln in lines), lines


def test_sealed_allows_and_adds_point(base_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "sealed.model"
    r = semtrust("run", "--model", str(base_model), "--output", str(out), "--",
                 "sh", "-c", LEARN + "; cat /etc/passwd")
    assert r.returncode == 0, r.stderr
    assert "root:" in r.stdout
    before, after = set(points(base_model)), points(out)
    assert before < set(after), "sealed run must keep every model point and add new ones"
    assert len(set(after) - before) >= 1


def test_determinism_three_runs(tmp_path: Path) -> None:
    """A multi-process workload with pipes and random temp names learns the same points."""
    work = ("cat /etc/hostname | wc -c; ls / > /dev/null; t=$(mktemp); echo hi > $t; "
            "cat $t; rm -f $t; (cat /etc/hostname & wait)")
    sets = []
    for i in range(3):
        m = tmp_path / f"m{i}"
        r = semtrust("run", "--output", str(m), "--", "sh", "-c", work)
        assert r.returncode == 0, r.stderr
        sets.append(frozenset(points(m)))
    assert sets[0] == sets[1] == sets[2], [len(s) for s in sets]


UNTRUSTED_SCRIPT = r"""
import os, socket, sys
def probe(tag):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        r = s.connect_ex(("127.0.0.1", 9)); s.close()
    except OSError as e:
        r = e.errno
    print(tag, "connect", r, flush=True)
    try:
        pid = os.fork()
    except OSError as e:
        print(tag, "exec", "fork-errno", e.errno, flush=True); return
    if pid == 0:
        try:
            os.execv("/bin/true", ["/bin/true"])
        except OSError as e:
            os._exit(100 + e.errno)
    _, st = os.waitpid(pid, 0)
    print(tag, "exec", os.waitstatus_to_exitcode(st), flush=True)
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.read(r, 1); probe("child"); os._exit(0)
probe("before")
if sys.argv[1] == "attack":
    try:
        open("/etc/passwd").read(); print("passwd read", flush=True)
    except OSError as e:
        print("passwd", e.errno, flush=True)
probe("after")
os.write(w, b"x"); os.waitpid(child, 0)
"""


def test_untrusted_process_and_children_cannot_exec_or_connect(tmp_path: Path) -> None:
    py = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    script = tmp_path / "probe.py"
    script.write_text(UNTRUSTED_SCRIPT)
    m = tmp_path / "m"
    r = semtrust("run", "--output", str(m), "--", py, "-I", str(script), "learn")
    assert r.returncode == 0, r.stderr
    assert "after connect 111" in r.stdout and "child exec 0" in r.stdout, r.stdout
    r = semtrust("run", "--model", str(m), "--enforce", "--", py, "-I", str(script), "attack")
    out = r.stdout
    assert "before connect 111" in out and "before exec 0" in out, (out, r.stderr)
    assert "passwd 1" in out, out  # EPERM: the process is now untrusted
    assert "after connect 1" in out, out
    assert "after exec fork-errno 1" in out or "after exec 101" in out, out
    assert "child connect 1" in out, out  # forked before the marking, still a descendant
    assert "child exec" in out and "child exec 0" not in out, out


def test_bad_model_refuses_to_start(tmp_path: Path) -> None:
    r = semtrust("run", "--model", str(tmp_path / "missing"), "--", "true")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "missing" in r.stderr
    bad = tmp_path / "bad.model"
    bad.write_text("state nothex\nend\n")
    r = semtrust("run", "--model", str(bad), "--enforce", "--", "true")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.model" in r.stderr


def test_exit_code_is_the_workloads(tmp_path: Path) -> None:
    assert semtrust("run", "--", "sh", "-c", "exit 7").returncode == 7


def _marker_pids(marker: str, exclude: int = 0, prog: bytes = b"") -> list[int]:
    """Processes whose environment carries ``marker`` (optionally: running ``prog``)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != exclude:
            try:
                if marker.encode() not in Path(f"/proc/{d}/environ").read_bytes():
                    continue
                if prog and not Path(f"/proc/{d}/cmdline").read_bytes().startswith(prog):
                    continue
                out.append(int(d))
            except OSError:
                pass
    return out


def _wait_gone(marker: str, exclude: int, limit: float = 10.0) -> list[int]:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        left = _marker_pids(marker, exclude)
        if not left:
            return []
        time.sleep(0.05)
    return _marker_pids(marker, exclude)


def _start(args: list[str], marker: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([*SEMTRUST, *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "SEMTRUST_TEST_MARKER": marker})
    end = time.monotonic() + 30
    while not _marker_pids(marker, p.pid, b"sleep") and time.monotonic() < end:
        time.sleep(0.05)
    assert _marker_pids(marker, p.pid, b"sleep"), "workload did not start"
    time.sleep(0.3)  # let the loop run under supervision for a while
    return p


@pytest.mark.skipif(os.geteuid() != 0, reason="kills a root supervisor")
def test_killed_orchestrator_takes_workload_with_it(tmp_path: Path) -> None:
    marker = f"semtrust-kill-{os.getpid()}"
    work = ["sh", "-c", "sleep 3000 & while :; do cat /etc/hostname >/dev/null; done"]
    m = tmp_path / "m"
    # Learning, interrupted with SIGTERM: the model is still written, the tree is gone.
    p = _start(["run", "--output", str(m), "--", *work], marker)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    assert m.read_text().rstrip().endswith("end")
    assert _wait_gone(marker, p.pid) == []
    from semtrust.orchestrator.mgmt import socket_path

    name = f"killed-{os.getpid()}"
    try:
        # Enforcing, orchestrator SIGKILLed: the whole workload tree dies with it.
        p = _start(["run", "--name", name, "--model", str(m), "--enforce", "--", *work],
                   marker)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        assert _wait_gone(marker, p.pid) == [], "workload survived its supervisor"
        # Learning, orchestrator SIGKILLed: same (the stale socket is replaced).
        p = _start(["run", "--name", name, "--", *work], marker)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        assert _wait_gone(marker, p.pid) == [], "workload survived its supervisor"
    finally:
        socket_path(name).unlink(missing_ok=True)  # a SIGKILLed orchestrator cannot


def test_unmodelable_event_is_denied_when_enforcing(tmp_path: Path) -> None:
    """open_by_handle_at cannot be described: recorded as a fault, denied when enforcing."""
    py = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    code = ("import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "r = libc.syscall(304, -100, None, 0)\n"
            "print('errno', ctypes.get_errno(), flush=True)\n")
    m = tmp_path / "m"
    r = semtrust("run", "--output", str(m), "--", py, "-I", "-c", code)
    assert r.returncode == 0, r.stderr
    assert "could not be modeled" in r.stderr
    assert "errno 1\n" not in r.stdout  # learning lets the call through (kernel: EFAULT...)
    r = semtrust("run", "--model", str(m), "--enforce", "--", py, "-I", "-c", code)
    assert "errno 1\n" in r.stdout, (r.stdout, r.stderr)
    assert "denied" in r.stderr


def test_trajectory_rehashes_to_the_model(tmp_path: Path) -> None:
    """The exported events carry everything hashed: `semtrust points` reproduces the model
    (under the model's pseudonyms, which a trajectory does not carry)."""
    work = "cat /etc/hostname; t=$(mktemp); echo x > $t; cat $t; rm -f $t"
    traj, model = tmp_path / "t.json", tmp_path / "t.model"
    assert semtrust("run", "--output", str(traj), "--trajectory", "--", "sh", "-c",
                    work).returncode == 0
    assert semtrust("run", "--output", str(model), "--", "sh", "-c", work).returncode == 0
    r = semtrust("points", "--model", str(model), str(traj))
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted(points(model))


SOCKET_SCRIPT = r"""
import os, signal, socket, time
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM); c.connect(srv.getsockname())
a, _ = srv.accept(); a.close(); c.close(); srv.close()
u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    u.connect("/nonexistent-semtrust.sock")
except OSError:
    pass
pid = os.fork()
if pid == 0:
    time.sleep(30); os._exit(0)
os.kill(pid, signal.SIGTERM); os.waitpid(pid, 0)
"""


def test_socket_and_kill_parameters(tmp_path: Path) -> None:
    py = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    script = tmp_path / "sock.py"
    script.write_text(SOCKET_SCRIPT)
    traj = tmp_path / "t.json"
    r = semtrust("run", "--output", str(traj), "--trajectory", "--", py, "-I", str(script))
    assert r.returncode == 0, r.stderr
    evs = [parse_record(ln) for ln in traj.read_text().splitlines()]
    by_type: dict[str, list[Event]] = {}
    for e in evs:
        assert isinstance(e, Event)
        by_type.setdefault(e.type, []).append(e)
    for t in ("socket_create", "socket_bind", "socket_listen", "socket_connect", "socket_accept",
              "task_kill", "mmap_file", "bprm_committed_creds", "file_open"):
        assert t in by_type, (t, sorted(by_type))
    bind = by_type["socket_bind"][0].cell
    assert isinstance(bind, SocketAddrCell) and isinstance(bind.addr, InetAddr)
    assert bind.sock.family == 2 and bind.sock.type == 1
    assert (bind.addr.port, bind.addr.address) == (0, 0x0100007F)  # 127.0.0.1, wire order
    assert any(isinstance(e.cell, SocketAddrCell) and isinstance(e.cell.addr, UnixAddr)
               and e.cell.addr.address == "/nonexistent-semtrust.sock"
               for e in by_type["socket_connect"])
    kill = by_type["task_kill"][0]
    assert isinstance(kill.cell, TaskKillCell) and kill.cell.sig == 15
    assert kill.cell.target == kill.task_id  # the forked child has its parent's identity
    assert all(isinstance(e.cell, MmapCell) and e.cell.prot & 4 for e in by_type["mmap_file"])


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to nobody inside the workload")
def test_emulated_open_uses_task_credentials_and_umask() -> None:
    """While enforcing, the orchestrator opens files as the task: no root reads, its umask."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        need(False, "setpriv (util-linux) not installed")
    d = Path(tempfile.mkdtemp(prefix="semtrust-creds-", dir="/tmp"))
    try:
        d.chmod(0o1777)
        script = (f"cat /etc/hostname; cat /etc/shadow; umask 027; echo x > {d}/f-$$; "
                  f"stat -c %a:%U {d}/f-*; rm -f {d}/f-*")
        work = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script]
        m = d / "m"
        r = semtrust("run", "--output", str(m), "--", *work)
        assert r.returncode == 0, r.stderr
        r = semtrust("run", "--model", str(m), "--enforce", "--", *work)
        assert r.returncode == 0, r.stderr
        assert "shadow: Permission denied" in r.stderr  # EACCES as nobody, not root's read
        assert "root:" not in r.stdout
        assert "640:nobody" in r.stdout.split()
    finally:
        shutil.rmtree(d, ignore_errors=True)


SWAP_SCRIPT = r"""
import os, sys
d = sys.argv[1]
os.write(1, b"READY\n")  # the test swaps the link from outside the domain
os.execv(os.path.join(d, "link"), [os.path.join(d, "link"), "SWAPPED-IN"])
"""


def test_exec_swapped_after_check_is_caught(tmp_path: Path) -> None:
    """The exec race (path swapped between our check and the kernel's exec) is detected at
    the new program's first mediated call; when enforcing, the process is killed.

    The swap comes from outside the domain: a rename inside it is mediated and waits for
    the exec decision, so it cannot race it."""
    py = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    big = tmp_path / "big-true"
    shutil.copy("/bin/true", big)
    with open(big, "r+b") as fp:
        fp.truncate(300 << 20)  # sparse tail: a slow hash, the same program
    (tmp_path / "link").symlink_to(big)
    (tmp_path / "link.new").symlink_to(shutil.which("echo") or "/bin/echo")
    script = tmp_path / "swap.py"
    script.write_text(SWAP_SCRIPT)
    m = tmp_path / "m"
    r = semtrust("run", "--output", str(m), "--", py, "-I", str(script), str(tmp_path))
    assert r.returncode == 0, r.stderr
    # The swap comes from outside the domain: inside, the rename is itself a mediated
    # event that the model does not hold.
    p = subprocess.Popen([*SEMTRUST, "run", "--model", str(m), "--enforce", "--", py, "-I",
                          str(script), str(tmp_path), "swap"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline() == "READY\n"
    time.sleep(0.1)  # the orchestrator is still hashing the 300 MB binary
    os.replace(tmp_path / "link.new", tmp_path / "link")
    out, err = p.communicate(timeout=120)
    r = subprocess.CompletedProcess(p.args, p.returncode, "READY\n" + out, err)
    assert (tmp_path / "link").readlink() != big, "the swap did not happen"
    assert "SWAPPED-IN" not in r.stdout, "the swapped-in program ran"
    if "executable changed" in r.stderr:  # swapped after the check: caught, killed
        assert r.returncode == 128 + signal.SIGKILL
    else:
        # The slow hash runs aside and the exec is checked again once it is done: the
        # swapped-in program is then refused by the model before it runs.
        assert "PermissionError" in r.stderr, r.stderr


NESTED_LISTENER = r"""
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(38, 1, 0, 0, 0)
allow = struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000)
buf = ctypes.create_string_buffer(allow, len(allow))
prog = struct.pack("=HxxxxxxQ", 1, ctypes.addressof(buf))
pbuf = ctypes.create_string_buffer(prog, len(prog))
for flags in (8, 0):  # with a listener of its own (a second supervisor), then without
    rc = libc.syscall(317, 1, flags, pbuf)
    print("flags", flags, "rc", rc, "errno", ctypes.get_errno() if rc < 0 else 0, flush=True)
"""


def test_workload_cannot_install_a_shadowing_listener(tmp_path: Path) -> None:
    py = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    r = semtrust("run", "--", py, "-I", "-c", NESTED_LISTENER)
    assert r.returncode == 0, r.stderr
    assert "flags 8 rc -1 errno 1" in r.stdout, r.stdout
    assert "flags 0 rc 0 errno 0" in r.stdout, r.stdout  # plain filters stay allowed


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts in a private mount namespace")
def test_files_are_resolved_in_the_tasks_own_mount_namespace(tmp_path: Path) -> None:
    """A bind mount private to the workload must not fool the orchestrator's resolution."""
    if shutil.which("unshare") is None:
        need(False, "unshare (util-linux) not installed")
    traj = tmp_path / "t.json"
    src = tmp_path / "other"
    src.write_text("not the hostname\n")
    r = semtrust("run", "--output", str(traj), "--trajectory", "--", "unshare", "-m", "sh", "-c",
                 f"mount --bind {src} /etc/hostname && cat /etc/hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "not the hostname\n"
    digests = [e.cell.file.digest for e in map(parse_record, traj.read_text().splitlines())
               if isinstance(e, Event) and isinstance(e.cell, FileCell)
               and e.process == "cat" and e.cell.file.path.pathname == "/etc/hostname"]
    assert digests == [hashlib.sha256(src.read_bytes()).digest()]


EDGE_OPENS = r"""
import ctypes, os, struct, sys, threading
d = sys.argv[1]
out = []
fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600)
os.write(fd, b"t")
out.append(("tmpfile", os.fstat(fd).st_nlink))
os.close(fd)
fd = os.open("/etc/hostname", os.O_PATH)
out.append(("opath", os.readlink(f"/proc/self/fd/{fd}")))
os.close(fd)
def writer():
    w = os.open(os.path.join(d, "fifo"), os.O_WRONLY)
    os.write(w, b"fifo-data")
    os.close(w)
t = threading.Thread(target=writer)
t.start()
r = os.open(os.path.join(d, "fifo"), os.O_RDONLY)
out.append(("fifo", os.read(r, 100)))
os.close(r)
t.join()
dfd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
fd = os.open("hostname", os.O_RDONLY, dir_fd=dfd)
out.append(("dirfd", os.read(fd, 2)))
os.close(fd)
libc = ctypes.CDLL(None, use_errno=True)
how = struct.pack("=QQQ", os.O_RDONLY, 0, 0x08)  # RESOLVE_BENEATH
fd = libc.syscall(437, dfd, b"../etc/passwd", how, 24)
out.append(("beneath", fd, ctypes.get_errno() if fd < 0 else 0))
fd = libc.syscall(437, dfd, b"hostname", how, 24)
out.append(("beneath-ok", fd >= 0))
os.chdir("/usr")
fd = os.open("lib/os-release", os.O_RDONLY)
out.append(("rel", os.read(fd, 4)))
os.close(fd)
fd = os.open("/proc/self/status", os.O_RDONLY)
out.append(("procself", os.read(fd, 5)))
os.close(fd)
print(out)
"""


def test_edge_case_opens_behave_alike_unsupervised_learning_enforcing(tmp_path: Path) -> None:
    """O_TMPFILE, O_PATH, a FIFO with both ends in one process, dirfd-relative, openat2
    RESOLVE_BENEATH, cwd-relative and /proc/self opens give the same results everywhere."""
    py = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    script = tmp_path / "edge.py"
    script.write_text(EDGE_OPENS)
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "fifo")
    cmd = [py, "-I", str(script), str(d)]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    assert plain.returncode == 0, plain.stderr
    m = tmp_path / "m"
    learn = semtrust("run", "--output", str(m), "--", *cmd, stdin=subprocess.DEVNULL, timeout=60)
    enforce = semtrust("run", "--model", str(m), "--enforce", "--", *cmd,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert learn.returncode == 0 and enforce.returncode == 0, (learn.stderr, enforce.stderr)
    assert plain.stdout == learn.stdout == enforce.stdout


FAILED_EXEC = r"""
import os, sys
if sys.argv[1] == "try":
    try:
        os.execv(sys.argv[2], [sys.argv[2]])  # an ELF header the kernel then rejects
    except OSError as exc:
        print("exec failed:", exc.errno, flush=True)
with open("/etc/hostname") as f:
    f.read()
"""


def test_a_failed_exec_does_not_change_the_identity(tmp_path: Path) -> None:
    """The identity follows execs that happened: one the kernel fails after our check
    (ENOEXEC here; a restarted exec in runc init's Go runtime) leaves it unchanged."""
    py = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    bad = tmp_path / "bad-elf"
    bad.write_bytes(b"\x7fELF" + b"\0" * 60)
    bad.chmod(0o755)
    ids: dict[str, set[bytes]] = {}
    for mode in ("plain", "try"):
        traj = tmp_path / f"{mode}.json"
        r = semtrust("run", "--output", str(traj), "--trajectory", "--", py, "-I", "-c",
                     FAILED_EXEC, mode, str(bad))
        assert r.returncode == 0, r.stderr
        ids[mode] = {ev.task_id for ev in map(parse_record, traj.read_text().splitlines())
                     if isinstance(ev, Event) and isinstance(ev.cell, FileCell)
                     and ev.cell.file.path.pathname == "/etc/hostname"}
    assert len(ids["plain"]) == 1
    assert ids["try"] == ids["plain"]


def test_unwritable_output_refuses_before_the_workload(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = semtrust("run", "--output", str(tmp_path / "no" / "such" / "m"), "--",
                 "touch", str(marker))
    assert r.returncode == 2 and not marker.exists()
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "--output" in r.stderr and "cannot create files" in r.stderr


def test_output_lost_during_the_run_goes_to_the_fallback(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    state = tmp_path / "state"
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    r = semtrust("run", "--output", str(out / "m"), "--", "rmdir", str(out), env=env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    spares = list((state / "semtrust").iterdir())
    assert len(spares) == 1 and str(spares[0]) in r.stderr
    assert spares[0].stat().st_mode & 0o777 == 0o600
    assert spares[0].read_text().rstrip().endswith("end")


def test_empty_model_is_refused_unless_allowed(tmp_path: Path) -> None:
    empty = tmp_path / "empty.model"
    empty.write_text(f"aggregate {'00' * 32}\nseal\nend\n")
    marker = tmp_path / "ran"
    r = semtrust("run", "--model", str(empty), "--", "touch", str(marker))
    assert r.returncode == 2 and not marker.exists()
    assert "no points" in r.stderr and "--allow-empty" in r.stderr
    r = semtrust("run", "--model", str(empty), "--allow-empty", "--", "true")
    assert r.returncode == 0, r.stderr


def test_management_socket_answers_bad_requests_without_a_traceback(tmp_path: Path) -> None:
    import socket as socketmod
    import struct

    from semtrust.orchestrator.mgmt import MAX_REQUEST, recv_msg, request, socket_path

    name = f"badreq-{os.getpid()}"
    done = tmp_path / "done"
    proc = subprocess.Popen([*SEMTRUST, "run", "--name", name, "--", "sh", "-c",
                             f"while [ ! -e {done} ]; do sleep 0.05; done"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        path = socket_path(name)
        for _ in range(600):  # wait for the domain to come up (not a timed assert)
            if path.exists():
                break
            time.sleep(0.05)
        bad = {
            "deep": b"[" * 30000 + b"]" * 30000,
            "duplicate": b'{"op": "ping", "op": "show", "what": "state"}',
            "not-json": b"{op",
            "not-utf8": b'{"op": "\xff"}',
            "nan": b'{"op": "ping", "x": NaN}',
        }
        for why, body in bad.items():
            with socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM) as s:
                s.connect(str(path))
                s.sendall(struct.pack(">I", len(body)) + body)
                reply = recv_msg(s, 1 << 20)
                assert reply["ok"] is False and "malformed" in reply["error"], (why, reply)
        with socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM) as s:
            s.connect(str(path))
            s.sendall(struct.pack(">I", MAX_REQUEST + 1))
            reply = recv_msg(s, 1 << 20)
            assert reply["ok"] is False and "exceeds" in reply["error"]
        assert request(name, {"op": "ping"}) == "pong"  # the domain still serves
    finally:
        done.touch()
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception" not in err, err
