"""Content changed through a shared writable mapping, after it was measured.

A write through a ``MAP_SHARED`` mapping updates the file's times only at the first
write fault on a clean page; further writes to the same dirty page change the content
and no time stamp until writeback. A digest kept by the file's state (device, inode,
size, mtime, ctime), in Python's caches or in a recorded native decision, would then
answer a later open or exec of changed content. A file some domain process has open for
reading and writing is therefore hashed afresh at every description; the attack here is
learned benign and must be refused when enforcing, on the Python path and the native one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.adversarial._resolve_helpers import SEMTRUST

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the workload is root's")

WORKLOAD = """
import mmap, os, sys
path, phase = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, 4096)
m[0:1] = b"X"                                  # first write fault: times updated
for _ in range(2):                             # measured, and a decision recorded
    os.close(os.open(path, os.O_RDONLY))
m[0:1] = b"Y" if phase == "attack" else b"X"   # same dirty page: no fault, no new times
r = os.open(path, os.O_RDONLY)
print(os.pread(r, 1, 0).decode())
"""


def _semtrust(native: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEMTRUST, *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "SEMTRUST_NATIVE": native})


@pytest.mark.parametrize("native", ["0", "1"])
def test_write_through_a_dirty_shared_mapping_is_measured(tmp_path: Path,
                                                          native: str) -> None:
    py = shutil.which("python3", path="/usr/bin:/bin")
    assert py is not None
    f = tmp_path / "data"
    f.write_bytes(b"A" * 4096)
    model = tmp_path / "model"
    r = _semtrust(native, "run", "--output", str(model), "--", py, "-I", "-c", WORKLOAD,
                  str(f), "learn")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "X\n"
    f.write_bytes(b"A" * 4096)
    r = _semtrust(native, "run", "--model", str(model), "--enforce", "--", py, "-I", "-c",
                  WORKLOAD, str(f), "attack")
    assert r.returncode != 0, r.stdout
    assert "Y" not in r.stdout
    assert f"content changed: {f}" in r.stderr, r.stderr
