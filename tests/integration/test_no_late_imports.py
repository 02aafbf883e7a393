"""No code is loaded from disk once the workload runs.

Start-up defers imports the serving domain needs only sometimes (explanations of events
outside the model, reports, the console's views). A module imported after the workload
was released could be one it wrote (sealed mode records such a write and allows it), run
inside the orchestrator. Each run here happens in a fresh interpreter, which notes the
modules loaded when the workload is released and fails if a semtrust module is loaded
after that, through learning and a sealed run with events outside the model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")

SRC = Path(__file__).resolve().parents[2] / "src"

PROBE = """
import os, sys
from semtrust.orchestrator import launch
from semtrust.orchestrator.run import RunOptions, run_domain

at_release = set()
release = launch.Workload.release

def noting_release(self):
    at_release.update(sys.modules)
    return release(self)

launch.Workload.release = noting_release
mode, path = sys.argv[1], sys.argv[2]
if mode == "learn":
    opts = RunOptions(command=["sh", "-c", "cat /etc/hostname"], output=path)
else:  # sealed: the second file is outside the model (explained, reported)
    opts = RunOptions(command=["sh", "-c", "cat /etc/hostname; cat /etc/passwd >/dev/null"],
                      model=path)
opts.name = f"late-{os.getpid()}"
run_domain(opts)
late = sorted(m for m in set(sys.modules) - at_release if m.startswith("semtrust"))
print("LATE", " ".join(late))
"""


def _probe(mode: str, path: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run([sys.executable, "-c", PROBE, mode, str(path)], capture_output=True,
                       text=True, timeout=120, env=env, check=False)
    lines = [line for line in r.stdout.splitlines() if line.startswith("LATE")]
    assert lines, r.stderr
    return lines[-1].split()[1:]


def test_nothing_is_imported_after_the_workload_is_released(tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert _probe("learn", model) == []
    assert model.exists()
    assert _probe("sealed", model) == []
