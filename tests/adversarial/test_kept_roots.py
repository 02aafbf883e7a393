"""Kept roots: the orchestrator keeps each thread's root open between decisions (and
so does the native decision path). A chroot must never leave a stale one behind: an
absolute path opened after it resolves in the new root, as the kernel resolves it,
in the thread that changed its root and in another thread sharing it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.adversarial._resolve_helpers import SEMTRUST, build

PROG = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int start[2], go[2], done[2];

static void show(const char *who) {
    char b[64] = {0};
    int fd = open("/etc/hostname", O_RDONLY);
    if (fd < 0) { printf("%s: open failed\n", who); return; }
    if (read(fd, b, sizeof b - 1) < 0) b[0] = 0;
    close(fd);
    b[strcspn(b, "\n")] = 0;
    printf("%s: %s\n", who, b);
}

static void *other(void *arg) {
    char c;
    if (read(start[0], &c, 1) != 1) return NULL;
    for (int i = 0; i < 20; i++) show("before-thread");
    fflush(stdout);
    if (write(done[1], "r", 1) != 1 || read(go[0], &c, 1) != 1) return NULL;
    show("after-thread");  /* the root it shares was changed by the main thread */
    fflush(stdout);
    return NULL;
}

int main(int argc, char **argv) {
    char c;
    pthread_t t;
    if (pipe(start) || pipe(go) || pipe(done)) return 1;
    pthread_create(&t, NULL, other, NULL);
    for (int i = 0; i < 20; i++) show("before-main");
    fflush(stdout);
    if (write(start[1], "s", 1) != 1 || read(done[0], &c, 1) != 1) return 1;
    if (chroot(argv[1]) != 0 || chdir("/") != 0) { printf("chroot failed\n"); return 1; }
    if (write(go[1], "g", 1) != 1) return 1;  /* write and read are not mediated */
    pthread_join(t, NULL);
    show("after-main");
    fflush(stdout);
    return 0;
}
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("native", ["1", "0"])
def test_chroot_is_seen_by_every_thread(tmp_path: Path, native: str) -> None:
    prog = build(tmp_path, "roots", PROG)
    jail = tmp_path / "jail"
    (jail / "etc").mkdir(parents=True)
    (jail / "etc" / "hostname").write_text("inside-the-jail\n")
    plain = _run(str(prog), str(jail))
    assert plain.returncode == 0, plain.stdout
    assert "after-thread: inside-the-jail" in plain.stdout
    assert "after-main: inside-the-jail" in plain.stdout
    env = dict(os.environ, SEMTRUST_NATIVE=native)
    model = tmp_path / "model"
    learn = subprocess.run([*SEMTRUST, "run", "--output", str(model), "--", str(prog),
                            str(jail)], capture_output=True, text=True, timeout=120,
                           env=env, check=False)
    assert learn.returncode == 0, learn.stderr
    assert learn.stdout == plain.stdout
    enforce = subprocess.run([*SEMTRUST, "run", "--model", str(model), "--enforce", "--",
                              str(prog), str(jail)], capture_output=True, text=True,
                             timeout=120, env=env, check=False)
    assert enforce.returncode == 0, enforce.stderr
    assert enforce.stdout == plain.stdout  # the emulated opens resolved in the new root
    # The model learned the jail's file (the description followed the new root too).
    assert "inside-the-jail" not in model.read_text()  # names only, never content
    assert '"pathname": "/etc/hostname"' in model.read_text()
