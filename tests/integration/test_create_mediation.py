"""mkdir and rename under supervision: emulated as the task, results as without semtrust,
random names kept out of coefficients and descriptions, records follow renames."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")

# Every case prints its outcome (errno name or result); the output must not depend on
# whether semtrust supervises the run. Names are fixed so outputs can be compared.
EDGE_CASES = r"""
import ctypes, errno, os, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
base = sys.argv[1]
os.chdir(base)
def show(tag, fn):
    try:
        r = fn()
        print(tag, "ok", r if r is not None else "")
    except OSError as e:
        print(tag, errno.errorcode.get(e.errno, e.errno))
def renameat2(a, b, flags):
    if libc.syscall(316, -100, a.encode(), -100, b.encode(), flags) < 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
def mode(p):
    return oct(stat.S_IMODE(os.lstat(p).st_mode))
os.umask(0o027)
show("mkdir", lambda: (os.mkdir("d", 0o777), mode("d"))[1])
show("mkdir-exists", lambda: os.mkdir("d"))
show("mkdir-trailing", lambda: (os.mkdir("e/"), mode("e"))[1])
show("mkdir-noparent", lambda: os.mkdir("nope/x"))
show("mkdir-dot", lambda: os.mkdir("."))
show("mkdir-root", lambda: os.mkdir("/"))
show("mkdir-empty", lambda: os.mkdir(""))
fd = os.open("d", os.O_PATH | os.O_DIRECTORY)
show("mkdirat", lambda: (os.mkdir("sub", 0o700, dir_fd=fd), mode("d/sub"))[1])
show("mkdir-in-file", lambda: (open("f", "w").close(), os.mkdir("f/x"))[1])
show("rename", lambda: (os.rename("f", "d/g"), sorted(os.listdir("d")))[1])
show("rename-missing", lambda: os.rename("missing", "x"))
show("rename-dir", lambda: (os.rename("d", "d2"), sorted(os.listdir("d2")))[1])
show("renameat", lambda: os.rename("g", "h", src_dir_fd=os.open("d2", os.O_PATH),
                                   dst_dir_fd=os.open(".", os.O_PATH)))
show("rename-dir-over-file", lambda: os.rename("e", "h"))
show("rename-into-self", lambda: os.rename("d2", "d2/sub/x"))
open("k", "w").close()
show("noreplace", lambda: renameat2("h", "k", 1))
show("exchange", lambda: (renameat2("e", "k", 2), stat.S_ISDIR(os.lstat("k").st_mode))[1])
show("replace", lambda: (os.replace("e", "k2"), os.path.exists("e"))[1])
show("final", lambda: sorted(os.listdir(".")))
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEMTRUST, "run", *args], capture_output=True, text=True,
                          timeout=120)


def _fresh(tmp_path: Path) -> Path:
    """The same directory for every run (its path is the anchor of what is made in it)."""
    d = tmp_path / "work"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    return d


def test_mkdir_and_rename_behave_alike_unsupervised_learning_enforcing(tmp_path: Path) -> None:
    script = tmp_path / "edge.py"
    script.write_text(EDGE_CASES)
    py = [sys.executable, "-I", str(script)]
    plain = subprocess.run([*py, str(_fresh(tmp_path))], capture_output=True,
                           text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    model = tmp_path / "m"
    learn = _run("--output", str(model), "--", *py, str(_fresh(tmp_path)))
    assert learn.returncode == 0, learn.stderr
    forensics = tmp_path / "forensics"
    enforce = _run("--model", str(model), "--enforce", "--output", str(forensics),
                   "--trajectory", "--", *py, str(_fresh(tmp_path)))
    assert enforce.returncode == 0, enforce.stderr
    assert forensics.read_text() == ""
    assert plain.stdout == learn.stdout == enforce.stdout
    assert "mkdir ok 0o750" in plain.stdout  # the task's umask applies


MKDIR_IF_ASKED = ("import os, sys; open('/etc/hostname').read(); "
                  "len(sys.argv) > 1 and os.mkdir(sys.argv[1])")


def test_mkdir_is_an_event_and_denied_when_not_learned(tmp_path: Path) -> None:
    py = [sys.executable, "-I", "-c", MKDIR_IF_ASKED]
    model = tmp_path / "m"
    r = _run("--output", str(model), "--", *py)
    assert r.returncode == 0, r.stderr
    target = tmp_path / "newdir"
    out = tmp_path / "forensics"
    r = _run("--model", str(model), "--enforce", "--output", str(out), "--trajectory", "--",
             *py, str(target))
    assert r.returncode != 0
    assert "PermissionError" in r.stderr
    assert not target.exists(), "a denied mkdir must not create the directory"
    lines = out.read_text().splitlines()
    assert any('"type": "inode_mkdir"' in ln for ln in lines), lines
    assert not any("newdir" in ln for ln in lines), "the new name is not in the description"


def test_atomic_writes_into_a_stable_name_learn_alike(tmp_path: Path) -> None:
    """Write a randomly named temporary file, rename it over a stable name, read it back:
    the same points every run, and enforcing the first model is clean."""
    work = tmp_path / "w"
    work.mkdir()
    script = (f'cd {work}; t=$(mktemp -p .); echo v > "$t"; mv "$t" cfg; cat cfg; '
              'd=$(mktemp -d -p .); mkdir "$d/in"; echo x > "$d/in/f"; mv "$d" out; '
              'cat out/in/f; rm -rf out cfg')
    models = []
    for i in range(2):
        m = tmp_path / f"m{i}"
        r = _run("--output", str(m), "--", "sh", "-c", script)
        assert r.returncode == 0, r.stderr
        models.append({ln for ln in m.read_text().splitlines() if ln.startswith("state ")})
    assert models[0] == models[1]
    out = tmp_path / "forensics"
    r = _run("--model", str(tmp_path / "m0"), "--enforce", "--output", str(out),
             "--trajectory", "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == ""
