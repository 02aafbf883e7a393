"""O_TRUNC opens: the file is described as the kernel's file_open hook sees it (before
truncation), and a denied open leaves it untouched (the emulated open truncates only
once the decision allows it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.adversarial._resolve_helpers import SEMTRUST

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the workload is root's")

TRUNC = ("import os, sys; os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC "
         "if sys.argv[2] == 'trunc' else os.O_RDONLY))")


def _semtrust(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEMTRUST, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def _python() -> str:
    py = shutil.which("python3", path="/usr/bin:/bin")
    assert py is not None
    return py


def test_denied_truncating_open_leaves_the_file_alone(tmp_path: Path) -> None:
    f = tmp_path / "precious"
    f.write_text("keep me\n")
    model, forensics = tmp_path / "model", tmp_path / "forensics"
    r = _semtrust("run", "--output", str(model), "--", _python(), "-I", "-c", TRUNC, str(f),
                  "read")
    assert r.returncode == 0, r.stderr
    r = _semtrust("run", "--model", str(model), "--enforce", "--output", str(forensics),
                  "--trajectory", "--", _python(), "-I", "-c", TRUNC, str(f), "trunc")
    assert r.returncode != 0
    assert "PermissionError" in r.stderr
    assert f.read_text() == "keep me\n"  # not truncated by the refused open
    assert str(f) in forensics.read_text()


def test_allowed_truncating_open_is_the_learned_point(tmp_path: Path) -> None:
    """Learning lets the kernel open (described before truncation); enforcing emulates the
    open: the same point, and the file is truncated as the call asked."""
    f = tmp_path / "log"
    f.write_text("old content\n")
    model = tmp_path / "model"
    r = _semtrust("run", "--output", str(model), "--", _python(), "-I", "-c", TRUNC, str(f),
                  "trunc")
    assert r.returncode == 0, r.stderr
    assert f.read_text() == ""
    f.write_text("old content\n")
    r = _semtrust("run", "--model", str(model), "--enforce", "--", _python(), "-I", "-c",
                  TRUNC, str(f), "trunc")
    assert r.returncode == 0, r.stderr
    assert f.read_text() == ""
