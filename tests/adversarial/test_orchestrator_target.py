"""The orchestrator itself as the target: hashing cannot stall or hold it (a huge
sparse memfd mapped executable), SIGTERM ends it promptly, the workload keeps the
caller's umask, and a forged management socket is not believed by the console."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.adversarial._resolve_helpers import (
    SEMTRUST,
    Domain,
    build,
    learn,
    mentions,
    wait_for,
)

PROG = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char *result, *ready, *go;

static void done(const char *what, int code) {
    FILE *f = fopen(result, "w");
    if (f) { fputs(what, f); fclose(f); }
    close(open(ready, O_WRONLY | O_CREAT, 0644));
    while (access(go, F_OK) != 0) usleep(20000);
    exit(code);
}

int main(int argc, char **argv) {
    const char *mode = argv[1];
    result = argv[2]; ready = argv[3]; go = argv[4];
    if (!strcmp(mode, "bigexec")) {          /* bigexec SIZE_SHIFT */
        int fd = memfd_create("big", 0);
        if (ftruncate(fd, 1ULL << atoi(argv[5]))) done("ftruncate", 4);
        close(open(ready, O_WRONLY | O_CREAT, 0644));
        void *p = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
        done(p == MAP_FAILED ? "denied" : "mapped", p == MAP_FAILED ? 3 : 0);
    }
    if (!strcmp(mode, "forge")) {            /* forge OWN_SOCK DOMAIN_SOCK_DIR DOMAIN_SOCK */
        signal(SIGPIPE, SIG_IGN);
        umount2(argv[6], MNT_DETACH);        /* uncover the sockets' directory */
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strncpy(a.sun_path, argv[5], sizeof a.sun_path - 1);
        unlink(argv[5]);
        if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 8)) done("bind", 4);
        int renamed = rename(argv[5], argv[7]) == 0;
        close(open(ready, O_WRONLY | O_CREAT, 0644));
        static const char forged[] =
            "{\"ok\":true,\"result\":{\"decisions\":424242,\"forensics\":0,\"faults\":0}}";
        while (access(go, F_OK) != 0) {
            struct pollfd p = {.fd = s, .events = POLLIN};
            if (poll(&p, 1, 50) <= 0) continue;
            int c = accept(s, NULL, NULL);
            char buf[65536];
            read(c, buf, sizeof buf);
            unsigned char hdr[4] = {0, 0, 0, sizeof forged - 1};
            write(c, hdr, 4);
            write(c, forged, sizeof forged - 1);
            close(c);
        }
        exit(renamed ? 0 : 5);
    }
    if (!strcmp(mode, "aside")) {            /* aside SIZE_SHIFT: hash in one, open in another */
        int fd = memfd_create("big", 0);
        if (ftruncate(fd, 1ULL << atoi(argv[5]))) done("ftruncate", 4);
        if (fork() == 0) {
            mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
            _exit(0);
        }
        usleep(200000);                      /* the child's mmap is being decided */
        for (int i = 0; i < 50; i++) close(open("/etc/hostname", O_RDONLY));
        done("opened", 0);
    }
    if (!strcmp(mode, "device")) {           /* device NODE */
        int fd = open(argv[5], O_RDWR);
        done(fd < 0 ? "denied" : "opened", fd < 0 ? 3 : 0);
    }
    done("bad mode", 1);
    return 1;
}
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacks are a root workload's")


def _args(tmp: Path, mode: str, *rest: str) -> list[str]:
    return [mode, str(tmp / "result"), str(tmp / "ready"), str(tmp / "go"), *rest]


def test_huge_sparse_memfd_mapped_executable(tmp_path: Path) -> None:
    prog = build(tmp_path, "target", PROG)
    model = learn(tmp_path, [str(prog), *_args(tmp_path, "bigexec", "12")])
    d = Domain(tmp_path, [str(prog), *_args(tmp_path, "bigexec", "50")], model=model,
               enforce=True)
    d.wait_ready()
    faults = d.show("faults")
    assert d.show("stats")["decisions"] > 0  # the orchestrator still answers
    code, _out, _err = d.finish()
    assert code == 3, "a 1 PiB memfd was mapped executable"
    assert mentions(faults, "larger than"), faults


def test_sigterm_while_a_huge_file_would_be_hashed(tmp_path: Path) -> None:
    prog = build(tmp_path, "target", PROG)
    ready = tmp_path / "ready"
    p = subprocess.Popen([*SEMTRUST, "run", "--", str(prog),
                          *_args(tmp_path, "bigexec", "50")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    wait_for(ready, p)
    p.send_signal(signal.SIGTERM)
    try:
        p.communicate(timeout=60)  # a hang guard: hashing 1 PiB would take days
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError("semtrust run kept going after SIGTERM") from None


def test_large_hash_does_not_hold_other_decisions_and_sigterm_ends_it(tmp_path: Path) -> None:
    """A 1 TiB sparse memfd under a raised size limit is hashed aside (for minutes): the
    other process's opens are still decided, and SIGTERM ends the run at once."""
    prog = build(tmp_path, "target", PROG)
    ready = tmp_path / "ready"
    env = dict(os.environ, SEMTRUST_MAX_HASH_BYTES=str(1 << 41))
    p = subprocess.Popen([*SEMTRUST, "run", "--", str(prog), *_args(tmp_path, "aside", "40")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, env=env)
    try:
        # Hang guard: blocked behind the hash, the opens would wait for minutes.
        wait_for(ready, p, limit=60)
    finally:
        p.send_signal(signal.SIGTERM)
    try:
        p.communicate(timeout=60)  # a hang guard, not a timing assert
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError("semtrust run kept hashing after SIGTERM") from None


def test_workload_keeps_the_callers_umask(tmp_path: Path) -> None:
    out = tmp_path / "made"
    old = os.umask(0o027)
    try:
        r = subprocess.run([*SEMTRUST, "run", "--", "sh", "-c", f"umask; : > {out}"],
                           capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0027"
    assert out.stat().st_mode & 0o777 == 0o640


def test_forged_management_socket_is_not_believed(tmp_path: Path) -> None:
    from semtrust.orchestrator.mgmt import runtime_dir

    prog = build(tmp_path, "target", PROG)
    own = tmp_path / "forged.sock"
    name = f"forge-{os.getpid()}"
    sock = runtime_dir() / f"{name}.sock"
    (tmp_path / "ready").unlink(missing_ok=True)
    p = subprocess.Popen([*SEMTRUST, "run", "--name", name, "--", str(prog),
                          *_args(tmp_path, "forge", str(own), str(runtime_dir()), str(sock))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    try:
        wait_for(tmp_path / "ready", p)
        r = subprocess.run([*SEMTRUST, "console", name, "show", "stats"],
                           capture_output=True, text=True, timeout=30)
        assert "424242" not in r.stdout, "the console showed a forged domain's stats"
        if r.returncode != 0:
            assert "refusing" in r.stderr or "no running domain" in r.stderr, r.stderr
    finally:
        (tmp_path / "go").touch()
        p.communicate(timeout=60)
    # 0: the socket was replaced (and the console refused the forger); 5: not even that.
    assert p.returncode in (0, 5)


def test_devices_a_workload_would_serve_itself_are_refused(tmp_path: Path) -> None:
    """A FUSE (or userfaultfd) server in the workload could stall every decision; the
    node is recognised by its device number, also under another name."""
    prog = build(tmp_path, "target", PROG)
    node = tmp_path / "myfuse"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(10, 229))
    d = Domain(tmp_path, [str(prog), *_args(tmp_path, "device", str(node))])
    d.wait_ready()
    faults = d.show("faults")
    code, _out, _err = d.finish()
    assert code == 3, "the workload opened /dev/fuse"
    assert mentions(faults, "stall the orchestrator"), faults
