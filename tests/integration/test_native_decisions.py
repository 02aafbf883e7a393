"""The native decision path against the Python path: same points, counts, verdicts.

Each workload (a C program built here with gcc) runs supervised twice, once with the
compiled ``_decide`` answering known points (``SEMTRUST_NATIVE=1``) and once with every
decision in Python (``SEMTRUST_NATIVE=0``); models, point counts, forensics and what
the workload saw must be the same, and the native run must really have answered
decisions natively (else the comparison proves nothing). The adversarial cases change
an object or a thread's credentials between two opens: a recorded decision must not
answer the second one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from semtrust.events.jsonexport import format_event
from semtrust.model.modelfile import render_model
from semtrust.orchestrator import native
from semtrust.orchestrator.domain import Domain
from semtrust.orchestrator.run import RunOptions, run_domain
from tests.integration.needs import need

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")

#: The workloads' headers and their open reporter (shared with test_native_firstseen).
C_PRELUDE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void try_open(int dirfd, const char *path, int flags) {
    int fd = openat(dirfd, path, flags);
    if (fd < 0) { printf("%s:%d:err%d\n", path, flags, errno); return; }
    char b[256];
    ssize_t n = (flags & O_DIRECTORY) ? 0 : read(fd, b, sizeof(b));
    unsigned sum = 0;
    for (ssize_t i = 0; i < n; i++) sum = sum * 31 + (unsigned char)b[i];
    printf("%s:%d:ok%u\n", path, flags, sum);
    close(fd);
}
"""

WORKLOAD = C_PRELUDE + r"""
static void try_mkdir(int dirfd, const char *path) {
    int rc = mkdirat(dirfd, path, 0755);
    printf("mkdir %s:%d\n", path, rc == 0 ? 0 : errno);
}

int main(int argc, char **argv) {
    const char *mode = argv[1], *file = argv[2];
    int rounds = atoi(argv[3]);
    int etc = open("/etc", O_PATH | O_DIRECTORY);
    int to = -1, from = -1;
    if (strcmp(mode, "wait") == 0) {
        to = open(argv[4], O_WRONLY);
        from = open(argv[5], O_RDONLY);
    }
    for (int r = 0; r < rounds; r++) {
        try_open(AT_FDCWD, "/etc/hostname", O_RDONLY);
        try_open(AT_FDCWD, "/etc/hostname", O_RDONLY | O_CLOEXEC);
        try_open(etc, "passwd", O_RDONLY);
        try_open(AT_FDCWD, "/etc", O_RDONLY | O_DIRECTORY);
        try_open(AT_FDCWD, file, O_RDONLY);
        if (chdir("/etc") == 0) try_open(AT_FDCWD, "hostname", O_RDONLY);
        try_open(AT_FDCWD, "/etc/no-such-file", O_RDONLY);      /* ENOENT */
        try_open(AT_FDCWD, "/etc/hostname/below", O_RDONLY);    /* ENOTDIR */
        try_mkdir(AT_FDCWD, "/etc");                             /* EEXIST, no event */
        try_mkdir(etc, "passwd");
        try_mkdir(AT_FDCWD, "/etc/hostname/below");              /* ENOTDIR */
    }
    if (strcmp(mode, "plain") == 0 || strcmp(mode, "extra") == 0) {
        /* Another process of the same identity shares the decisions. */
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            for (int r = 0; r < rounds; r++) try_open(AT_FDCWD, "/etc/hostname", O_RDONLY);
            fflush(stdout);
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
    }
    if (strcmp(mode, "mkdirs") == 0) {
        for (int r = 0; r < rounds; r++) {
            try_open(AT_FDCWD, "/etc/hostname", O_RDONLY);
            for (int k = 0; k < 5; k++) try_mkdir(AT_FDCWD, "/etc");
        }
    }
    if (strcmp(mode, "extra") == 0) {
        /* Outside the model: the process is untrusted from then on, and its known
         * opens are refused too. */
        try_open(AT_FDCWD, "/etc/group", O_RDONLY);
        try_open(AT_FDCWD, "/etc/hostname", O_RDONLY);
    }
    if (strcmp(mode, "wait") == 0) {
        /* Wait (with no mediated call: read and write are inert) while the test
         * changes the file from outside the domain, then open it again. */
        char c = 'R';
        if (write(to, &c, 1) != 1 || read(from, &c, 1) != 1) return 1;
        try_open(AT_FDCWD, file, O_RDONLY);
    }
    if (strcmp(mode, "setuid") == 0 || strcmp(mode, "learnsu") == 0) {
        /* Learned: the credential change, then another file. */
        if (setresuid(1000, 1000, 1000) != 0) { printf("setuid failed\n"); return 1; }
        try_open(AT_FDCWD, strcmp(mode, "setuid") == 0 ? "/etc/hostname" : "/etc/passwd",
                 O_RDONLY);
    }
    fflush(stdout);
    return 0;
}
"""


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    need(gcc is not None, "gcc not installed (Debian package gcc)")
    assert gcc is not None
    d = tmp_path_factory.mktemp("native")
    src, exe = d / "w.c", d / "w"
    src.write_text(WORKLOAD)
    subprocess.run([gcc, "-O1", "-o", str(exe), str(src)], check=True)
    return exe


@pytest.fixture(autouse=True)
def _built() -> None:
    need(native._FastPath is not None,
         "the native decision path is not built (pip install -e . builds _decide)")
    need(os.geteuid() == 0, "the differential runs use root's credentials throughout")


class Run:
    """One supervised run in this process: the finished domain's facts."""

    def __init__(self, cmd: list[str], tmp: Path, native_on: bool, **opts: Any) -> None:
        self.domain: Domain | None = None
        out = tmp / f"out-{native_on}-{os.getpid()}"
        env_before = os.environ.get("SEMTRUST_NATIVE")
        os.environ["SEMTRUST_NATIVE"] = "1" if native_on else "0"
        saved = os.dup(1)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        try:
            self.code = run_domain(RunOptions(command=cmd, name=f"native-{os.getpid()}",
                                              **opts), report=self._keep)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(fd)
            if env_before is None:
                del os.environ["SEMTRUST_NATIVE"]
            else:
                os.environ["SEMTRUST_NATIVE"] = env_before
        self.stdout = out.read_text()

    def _keep(self, d: Domain) -> None:
        self.domain = d

    @property
    def d(self) -> Domain:
        assert self.domain is not None
        return self.domain

    def facts(self) -> dict[str, Any]:
        t = self.d.tma
        st = self.d.stats()
        return {"code": self.code, "stdout": self.stdout, "model": render_model(t),
                "counts": list(t.point_items()), "events": t.events,
                "forensics": [_stable(format_event(e)) for e in t.forensics],
                "faults": [(f["syscall"], f["reason"].replace(str(f["pid"]), "PID"))
                           for f in self.d.faults],
                "decisions": st["decisions"], "untrusted": st["untrusted_processes"]}


def _stable(line: str) -> str:
    """An exported event without what differs from run to run (pid, time stamp)."""
    rec = json.loads(line)
    for k in ("pid", "ts"):
        rec["event"].pop(k, None)
    return json.dumps(rec, sort_keys=True)


def both(cmd: list[str], tmp: Path, **opts: Any) -> tuple[Run, Run]:
    on = Run(cmd, tmp, True, **opts)
    off = Run(cmd, tmp, False, **opts)
    return on, off


def learn(workload: Path, tmp: Path, target: Path, mode: str = "plain") -> Path:
    model = tmp / "model"
    r = Run([str(workload), mode, str(target), "20"], tmp, False, output=str(model))
    assert r.code == 0, r.stdout
    return model


@pytest.fixture
def target(tmp_path: Path) -> Path:
    f = tmp_path / "data"
    f.write_text("GOOD content\n")
    return f


def test_learning_gives_the_same_model_and_counts(workload: Path, target: Path,
                                                  tmp_path: Path) -> None:
    on, off = both([str(workload), "plain", str(target), "30"], tmp_path,
                   output=str(tmp_path / "learned"))
    assert on.d.native_decisions > 100, "the native path answered nothing"
    assert off.d.native_decisions == 0
    assert on.facts() == off.facts()
    assert on.stdout.count("mkdir /etc:17\n") == 30
    assert on.stdout.count("mkdir passwd:17\n") == 30
    assert on.stdout.count("mkdir /etc/hostname/below:20\n") == 30


def test_mkdir_of_an_existing_name_is_answered_natively(workload: Path, target: Path,
                                                         tmp_path: Path) -> None:
    """mkdir -p's common case: EEXIST, no event, answered without Python once the
    thread is registered, and the same answers and model as the Python path."""
    on, off = both([str(workload), "mkdirs", str(target), "40"], tmp_path,
                   output=str(tmp_path / "learned"))
    assert on.facts() == off.facts()
    assert on.stdout.count("mkdir /etc:17\n") == 40 * 6  # five here, one in the common rounds
    # Each round: one open (answered natively from the second round) and five mkdirs.
    assert on.d.native_decisions >= 39 * 6, on.d.native_decisions


class Changer(threading.Thread):
    """Outside the domain: when the workload waits, rewrite ``target`` in place (same
    size, the old mtime put back) unless ``rewrite`` is False, then let it go on."""

    def __init__(self, work: Path, target: Path, rewrite: bool) -> None:
        super().__init__(daemon=True)
        self.to, self.frm = work / "to", work / "from"
        for p in (self.to, self.frm):
            p.unlink(missing_ok=True)
            os.mkfifo(p)
        self.target, self.rewrite = target, rewrite

    def run(self) -> None:
        with open(self.to, "rb") as to, open(self.frm, "wb") as frm:
            to.read(1)
            if self.rewrite:
                st = os.stat(self.target)
                fd = os.open(self.target, os.O_WRONLY)
                os.pwrite(fd, b"EVIL", 0)
                os.close(fd)
                os.utime(self.target, ns=(st.st_atime_ns, st.st_mtime_ns))
                assert os.stat(self.target).st_size == st.st_size
            frm.write(b"G")


def changed_run(workload: Path, target: Path, tmp: Path, native_on: bool, rewrite: bool,
                **opts: Any) -> Run:
    work = tmp / "fifos"  # the same names in every run: learned once
    work.mkdir(exist_ok=True)
    ch = Changer(work, target, rewrite)
    ch.start()
    r = Run([str(workload), "wait", str(target), "20", str(ch.to), str(ch.frm)], tmp,
            native_on, **opts)
    ch.join(10)
    return r


def test_known_file_with_new_content_is_not_answered_from_the_record(
        workload: Path, target: Path, tmp_path: Path) -> None:
    """Same path, size and mtime, new content, changed while the workload's thread is
    answered natively: the recorded decision must not answer the next open."""
    model = tmp_path / "model"
    learned = changed_run(workload, target, tmp_path, False, False, output=str(model))
    assert learned.code == 0
    on = changed_run(workload, target, tmp_path, True, True, model=str(model), enforce=True)
    assert on.d.native_decisions > 50
    last = on.stdout.strip().splitlines()[-1]
    assert last == f"{target}:0:err1", on.stdout  # the rewritten file's open is refused
    target.write_text("GOOD content\n")
    off = changed_run(workload, target, tmp_path, False, True, model=str(model),
                      enforce=True)
    assert on.facts() == off.facts()


def test_changed_credentials_are_not_answered_from_the_record(
        workload: Path, target: Path, tmp_path: Path) -> None:
    """After setresuid the thread's COE differs: its opens are new events."""
    model = learn(workload, tmp_path, target, "learnsu")
    on, off = both([str(workload), "setuid", str(target), "20"], tmp_path, model=str(model),
                   enforce=True)
    assert on.d.native_decisions > 50
    last = on.stdout.strip().splitlines()[-1]
    assert last == "/etc/hostname:0:err1", on.stdout
    assert on.facts() == off.facts()
    assert any('"uid": "1000"' in format_event(e) for e in on.d.tma.forensics)
