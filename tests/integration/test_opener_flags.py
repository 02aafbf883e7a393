"""Reading an opener's flags from /proc/PID/syscall, including before it sleeps.

A process opening a FIFO for writing blocks inside openat until a reader comes, which
stands in for an opener blocked on a fanotify permission event: the same
/proc/PID/syscall view, with real flags, on any kernel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from semtrust.orchestrator.container import O_LARGEFILE, opener_flags

# The child says "ready" on stdout, optionally spins for SPIN seconds on the CPU (so its
# syscall file says "running"), then blocks opening the FIFO.
_CHILD = """
import os, sys, time
fifo, spin = sys.argv[1], float(sys.argv[2])
sys.stdout.write("ready\\n"); sys.stdout.flush()
end = time.monotonic() + spin
while time.monotonic() < end:
    pass
fd = os.open(fifo, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
os.close(fd)
"""


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield path


def _start(fifo: Path, spin: float) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(fifo), str(spin)],
                             stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    return child


def _release(fifo: Path, child: subprocess.Popen[bytes]) -> None:
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert child.wait(timeout=10) == 0
    finally:
        os.close(fd)


def _wait_blocked_in_openat(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = Path(f"/proc/{pid}/syscall").read_text()
        if text.split()[0] == "257":
            return
        time.sleep(0.001)
    raise AssertionError(f"child never blocked in openat: {text!r}")


def test_flags_of_a_blocked_open(fifo: Path) -> None:
    child = _start(fifo, 0.0)
    try:
        _wait_blocked_in_openat(child.pid)
        # O_CLOEXEC is not a file flag; O_LARGEFILE is what a 64-bit open carries
        assert opener_flags(child.pid, False) == os.O_WRONLY | os.O_APPEND | O_LARGEFILE
    finally:
        _release(fifo, child)


def test_an_opener_not_yet_asleep_is_read_again(fifo: Path) -> None:
    """The race behind the container-mode flake: read while the opener still runs."""
    child = _start(fifo, 0.01)  # running for 10 ms, then blocked in openat
    try:
        t0 = time.monotonic()
        flags = opener_flags(child.pid, False)
        waited = time.monotonic() - t0
        assert flags == os.O_WRONLY | os.O_APPEND | O_LARGEFILE, (
            f"read {flags:#o} after {waited * 1000:.1f} ms")
    finally:
        _release(fifo, child)


def test_a_process_in_no_open_call_gets_the_read_only_fallback() -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        assert opener_flags(spinner.pid, False) == O_LARGEFILE  # after the settle time
        assert time.monotonic() - t0 >= 0.04
        assert opener_flags(sleeper.pid, False) == O_LARGEFILE  # asleep elsewhere: at once
        assert opener_flags(sleeper.pid, True) == O_LARGEFILE | 0x20
    finally:
        for p in (spinner, sleeper):
            p.kill()
            p.wait()
