"""An emulated open that the model denies must not have changed the file (O_TRUNC).

The emulated open used to pass O_TRUNC to its own open, before the decision: a denied
``echo x > FILE`` still emptied FILE. Process mode, enforcing (container mode emulates
every open and has the same check in test_container_escapes: host volume write).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]


def test_denied_truncating_open_leaves_the_file(tmp_path: Path) -> None:
    f = tmp_path / "data"
    f.write_text("original\n")
    f.chmod(0o666)
    model = tmp_path / "m"
    learn = subprocess.run([*SEMTRUST, "run", "--output", str(model), "--", "sh", "-c",
                            f"cat {f}"], capture_output=True, text=True, timeout=120)
    assert learn.returncode == 0, learn.stderr
    r = subprocess.run([*SEMTRUST, "run", "--model", str(model), "--enforce", "--", "sh",
                        "-c", f"cat {f}; echo owned > {f}"], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout == "original\n"
    assert r.returncode != 0
    assert f.read_text() == "original\n"
    assert "Operation not permitted" in r.stderr  # the model's denial (EPERM)
