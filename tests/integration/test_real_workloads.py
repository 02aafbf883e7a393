"""Real workloads nobody wrote for semtrust learn the same model twice and enforce clean.

CPython's own ``test.test_shutil`` and ``test.test_tempfile`` make random
temporary directories (``mkdtemp``) and files in them by the hundred; a shell
loop does the same with ``mktemp -d`` and runs scripts and programs it wrote
there. Learned twice, each gives the identical point set, and a third run
enforcing the first model sees no event outside it. No random name reaches a
coefficient or a model description.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.needs import need

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                       reason="seccomp sensor is x86_64 Linux only"),
]

# A name made by mkdtemp/mkstemp (tmp + 8 random characters) or mktemp (tmp.XXXXXXXXXX).
RANDOM_NAME = re.compile(r"/tmp[a-z0-9_]{8}\b|/tmp\.[A-Za-z0-9]{10}\b")

SHELL_LOOP = r"""
for i in 1 2 3 4; do
  d=$(mktemp -d)
  mkdir -p "$d/sub/deeper"
  printf '#!/bin/sh\necho script %s\n' "$i" > "$d/sub/run.sh"
  chmod +x "$d/sub/run.sh"
  "$d/sub/run.sh"
  cat "$d/sub/run.sh" > /dev/null
  cp /bin/true "$d/sub/deeper/prog"
  "$d/sub/deeper/prog"
  echo data > "$d/f.tmp" && mv "$d/f.tmp" "$d/f"
  cat "$d/f"
  f=$(mktemp -p "$d")
  echo more >> "$f"; cat "$f" > /dev/null
  rm -rf "$d"
done
"""


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEMTRUST, "run", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def _points(model: Path) -> frozenset[str]:
    return frozenset(line.split()[1] for line in model.read_text().splitlines()
                     if line.startswith("state "))


def _learn_twice_then_enforce(tmp_path: Path, workload: list[str]) -> None:
    # The working directory is fixed: the test package makes its own files in it.
    work = tmp_path / "cwd"
    work.mkdir()
    models = []
    for i in range(2):
        m = tmp_path / f"m{i}"
        r = _run("--output", str(m), "--", *workload, cwd=work)
        assert r.returncode == 0, r.stderr[-2000:]
        models.append(m)
    first, second = _points(models[0]), _points(models[1])
    assert first == second, (f"{len(first)} and {len(second)} points, "
                             f"{len(first & second)} in common")
    text = models[0].read_text()
    assert not RANDOM_NAME.search(text), RANDOM_NAME.findall(text)[:5]
    forensics = tmp_path / "forensics"
    r = _run("--model", str(models[0]), "--enforce", "--output", str(forensics),
             "--trajectory", "--", *workload, cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    assert forensics.read_text() == "", forensics.read_text()[:2000]


def _need_cpython_tests(module: str) -> None:
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    need(r.returncode == 0, f"CPython's {module} is not installed with {sys.executable}")


@pytest.mark.parametrize("module", ["test.test_shutil", "test.test_tempfile"])
def test_cpython_test_suite_learns_identically_and_enforces(tmp_path: Path,
                                                            module: str) -> None:
    _need_cpython_tests(module)
    _learn_twice_then_enforce(tmp_path, [sys.executable, "-m", "unittest", "-q", module])


def test_mktemp_shell_loop_learns_identically_and_enforces(tmp_path: Path) -> None:
    _learn_twice_then_enforce(tmp_path, ["sh", "-c", SHELL_LOOP])
