"""Paths resolve as the task sees them: magic links (/dev/fd, /dev/stdin, /proc/self,
the workload's own symlinks into /proc) name the task's objects, never the
orchestrator's, and procfs entries of processes outside the domain are refused by
which process they belong to, wherever the procfs is mounted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.adversarial._resolve_helpers import Domain, build, learn, mentions

ATTACK = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *result, *ready, *go;

/* Report (a denied process is untrusted: these may fail too, hence the exit code),
   then wait until the test has read the console. */
static void done_code(const char *what, int code) {
    FILE *f = fopen(result, "w");
    if (f) { fputs(what, f); fclose(f); }
    close(open(ready, O_WRONLY | O_CREAT, 0644));
    while (access(go, F_OK) != 0) usleep(20000);
    exit(code);
}

static void done(const char *what) { done_code(what, 0); }

static void fail(const char *what) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s errno %d", what, errno);
    done_code(buf, 3);
}

/* Opens both files read-only (so both runs open the same files), makes the first
   one stdin and reopens it for writing through PATH. */
static int rdwr_via(const char *file, const char *other, const char *path) {
    int fd = open(file, O_RDONLY);
    if (fd < 0 || open(other, O_RDONLY) < 0) fail("open");
    dup2(fd, 0);
    int w = open(path, O_RDWR);
    if (w < 0) fail("reopen");
    if (write(w, "PWNED\n", 6) != 6) fail("write");
    done("written");
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argv[1];
    result = argv[2]; ready = argv[3]; go = argv[4];
    if (!strcmp(mode, "memexec")) {        /* memexec PAYLOAD OTHER VIA MARK */
        int in = open(argv[5], O_RDONLY);
        close(open(argv[6], O_RDONLY));
        argv++;
        int mfd = memfd_create("payload", 0);
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof buf)) > 0) write(mfd, buf, n);
        char *args[] = {"payload", argv[7], (char *)ready, (char *)go, NULL};
        char *env[] = {NULL};
        char path[64];
        if (!strcmp(argv[6], "devfd")) snprintf(path, sizeof path, "/dev/fd/%d", mfd);
        else snprintf(path, sizeof path, "/proc/self/fd/%d", mfd);
        if (!strcmp(argv[6], "empty")) syscall(SYS_execveat, mfd, "", args, env, AT_EMPTY_PATH);
        else execve(path, args, env);
        fail("exec");
    }
    if (!strcmp(mode, "stdin")) return rdwr_via(argv[5], argv[6], "/dev/stdin");
    if (!strcmp(mode, "link")) {            /* link FILE OTHER LINK TARGET */
        unlink(argv[7]);
        if (symlink(argv[8], argv[7])) fail("symlink");
        return rdwr_via(argv[5], argv[6], argv[7]);
    }
    if (!strcmp(mode, "procfs")) {          /* procfs DIR ENTRY */
        if (unshare(CLONE_NEWNS)) fail("unshare");
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) fail("private");
        mkdir(argv[5], 0700);
        if (mount("proc", argv[5], "proc", 0, NULL)) fail("mount");
        char p[256];
        snprintf(p, sizeof p, "%s/%s", argv[5], argv[6]);
        int fd = open(p, strstr(p, "mem") ? O_RDWR : O_RDONLY);
        if (fd < 0) fail("open");
        done("opened");
    }
    done("bad mode");
    return 1;
}
"""

PAYLOAD = r"""
#include <fcntl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    close(open(argv[1], O_WRONLY | O_CREAT, 0644));
    close(open(argv[2], O_WRONLY | O_CREAT, 0644));
    while (access(argv[3], F_OK) != 0) usleep(20000);
    return 0;
}
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacks are a root workload's")


def _prog(tmp: Path) -> Path:
    return build(tmp, "attack", ATTACK)


def _args(tmp: Path, mode: str, *rest: str) -> list[str]:
    return [mode, str(tmp / "result"), str(tmp / "ready"), str(tmp / "go"), *rest]


@pytest.mark.parametrize("via", ["devfd", "procself", "empty"])
def test_memfd_exec_is_measured(tmp_path: Path, via: str) -> None:
    prog = _prog(tmp_path)
    benign = build(tmp_path, "benign", PAYLOAD)
    evil = build(tmp_path, "evil", PAYLOAD.replace("return 0;", "return 0; /* evil */ "
                                                   "write(1, \"x\", 0);"))
    mark = tmp_path / "mark"
    model = learn(tmp_path, [str(prog), *_args(tmp_path, "memexec", str(benign), str(evil),
                                               via, str(mark))])
    assert mark.exists()
    mark.unlink()
    d = Domain(tmp_path, [str(prog), *_args(tmp_path, "memexec", str(evil), str(benign), via,
                                            str(mark))], model=model, enforce=True)
    d.wait_ready()
    forensics = d.show("forensics")
    code, _out, _err = d.finish()
    assert not mark.exists(), "code the model does not know ran from a memfd"
    assert code == 3
    assert mentions(forensics, "memfd:payload"), forensics


@pytest.mark.parametrize("via", ["stdin", "self-link", "thread-self-link", "devfd-link"])
def test_reopen_through_magic_link_models_the_task_file(tmp_path: Path, via: str) -> None:
    prog = _prog(tmp_path)
    scratch = tmp_path / "scratch.txt"
    scratch.write_text("scratch\n")
    protected = tmp_path / "protected.txt"
    protected.write_text("secret\n")
    protected.chmod(0o444)
    link = tmp_path / "link"
    target = {"self-link": "/proc/self/fd/0", "thread-self-link": "/proc/thread-self/fd/0",
              "devfd-link": "/dev/fd/0"}.get(via, "")
    extra = [str(link), target] if target else []
    mode = "link" if target else "stdin"
    model = learn(tmp_path, [str(prog), *_args(tmp_path, mode, str(scratch), str(protected),
                                               *extra)])
    assert "PWNED" in scratch.read_text()
    scratch.write_text("scratch\n")  # the same content as learned
    link.unlink(missing_ok=True)  # as before learning (removing it is a mediated event)
    d = Domain(tmp_path, [str(prog), *_args(tmp_path, mode, str(protected), str(scratch),
                                            *extra)], model=model, enforce=True)
    d.wait_ready()
    forensics = d.show("forensics")
    code, _out, _err = d.finish()
    assert protected.read_text() == "secret\n", "a read-only file was reopened for writing"
    assert code == 3
    assert mentions(forensics, "protected.txt"), forensics


@pytest.mark.parametrize("how", ["learning", "sealed", "enforcing"])
def test_foreign_procfs_mount_cannot_reach_the_holder(tmp_path: Path, how: str) -> None:
    prog = _prog(tmp_path)
    mnt = f"/tmp/semtrust-procfs-{os.getpid()}"
    model = None
    if how != "learning":
        model = learn(tmp_path, [str(prog), *_args(tmp_path, "procfs", mnt, "self/status")])
        assert (tmp_path / "result").read_text() == "opened"
        os.rmdir(mnt)
    d = Domain(tmp_path, [str(prog), *_args(tmp_path, "procfs", mnt, "1/mem")],
               model=model, enforce=how == "enforcing")
    d.wait_ready()
    faults = d.show("faults")
    code, _out, _err = d.finish()
    assert code == 3, "the holder's memory was opened for writing"
    assert mentions(faults, "outside the domain"), faults
    os.rmdir(mnt)


AGREE = r"""
import os, sys
d = sys.argv[1]
os.chdir(d)
for name, target in [("rel", "sub/../sub/f"), ("abs", d + "/sub/f"), ("loop", "loop"),
                     ("dotdot", "../" + os.path.basename(d) + "/sub/f"),
                     ("selfcwd", "/proc/self/cwd/sub/f"), ("dangling", "nowhere"),
                     ("dirlink", "sub"), ("thread", "/proc/thread-self/cwd/sub/f")]:
    if not os.path.lexists(name):
        os.symlink(target, name)
paths = ["rel", "abs", "loop", "dotdot", "selfcwd", "dangling", "dirlink/f", "dirlink/../sub/f",
         "sub/f/", "thread", "/proc/self/root" + d + "/sub/f", "/../../" + d + "/sub/f",
         "/proc/self/fd/0", "/dev/stdin"]
for p in paths:
    for flags in (os.O_RDONLY, os.O_RDONLY | os.O_NOFOLLOW, os.O_WRONLY | os.O_APPEND):
        try:
            fd = os.open(p, flags)
            st = os.fstat(fd)
            print(p, flags, "ok", st.st_ino)
            os.close(fd)
        except OSError as e:
            print(p, flags, "errno", e.errno)
"""


@pytest.mark.parametrize("how", ["learning", "enforcing"])
def test_resolution_agrees_with_the_kernel(tmp_path: Path, how: str) -> None:
    """Tricky paths (relative and absolute symlinks, loops, '..', trailing slashes,
    /proc/self and /proc/thread-self, magic links) open the same objects, or fail with
    the same errors, supervised as unsupervised."""
    import shutil
    import subprocess

    from tests.adversarial._resolve_helpers import SEMTRUST

    py = shutil.which("python3", path="/usr/bin:/bin")
    assert py is not None
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("content\n")
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    argv = [py, "-I", str(script), str(tmp_path)]
    stdin = tmp_path / "sub" / "f"
    with open(stdin) as fp:
        plain = subprocess.run(argv, capture_output=True, text=True, stdin=fp, timeout=60)
    assert plain.returncode == 0, plain.stderr
    opts: list[str] = []
    if how == "enforcing":
        model = tmp_path / "m"
        with open(stdin) as fp:
            r = subprocess.run([*SEMTRUST, "run", "--output", str(model), "--", *argv],
                               capture_output=True, text=True, stdin=fp, timeout=120)
        assert r.returncode == 0, r.stderr
        opts = ["--model", str(model), "--enforce"]
    with open(stdin) as fp:
        r = subprocess.run([*SEMTRUST, "run", *opts, "--", *argv], capture_output=True,
                           text=True, stdin=fp, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == plain.stdout
    assert "ok" in plain.stdout and "errno 40" in plain.stdout  # both kinds were exercised


CREATE = r"""
import os, sys
d = sys.argv[1]
os.chdir(d)
for name, target in [("dangling", "nowhere"), ("dirlink", "sub"), ("loop", "loop")]:
    os.symlink(target, name)
paths = ["newf", d + "/sub/abs", "dirlink/vialink", "dangling", "sub/slash/", "sub/../sub/up",
         "nodir/x", "sub/f/x", "/proc/self/cwd/sub/magic", "loop", "sub/f", "/" + d + "/sub/dbl",
         "sub//twice", "./dot"]
for p in paths:
    for flags in (os.O_WRONLY | os.O_CREAT, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                  os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW):
        try:
            os.close(os.open(p, flags, 0o640))
            print(p, flags, "ok")
        except OSError as e:
            print(p, flags, "errno", e.errno)
for root, dirs, files in sorted(os.walk(d)):
    for n in sorted(dirs + files):
        st = os.lstat(os.path.join(root, n))
        print(os.path.relpath(os.path.join(root, n), d), oct(st.st_mode))
"""


@pytest.mark.parametrize("how", ["learning", "enforcing"])
def test_creation_agrees_with_the_kernel(tmp_path: Path, how: str) -> None:
    """O_CREAT opens (missing names, symlinked and dangling names, '..', trailing
    slashes, missing or non-directory parents, magic links) create the same files, or
    fail with the same errors, supervised as unsupervised."""
    import shutil
    import subprocess

    from tests.adversarial._resolve_helpers import SEMTRUST

    py = shutil.which("python3", path="/usr/bin:/bin")
    assert py is not None
    script = tmp_path / "create.py"
    script.write_text(CREATE)
    tree = tmp_path / "tree"
    argv = [py, "-I", str(script), str(tree)]

    def fresh() -> None:
        if tree.exists():
            shutil.rmtree(tree)
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "f").write_text("content\n")

    fresh()
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    opts: list[str] = []
    if how == "enforcing":
        model = tmp_path / "m"
        fresh()
        r = subprocess.run([*SEMTRUST, "run", "--output", str(model), "--", *argv],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        opts = ["--model", str(model), "--enforce"]
    fresh()
    r = subprocess.run([*SEMTRUST, "run", *opts, "--", *argv], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == plain.stdout
    assert " ok" in plain.stdout and "errno 2" in plain.stdout and "errno 40" in plain.stdout
