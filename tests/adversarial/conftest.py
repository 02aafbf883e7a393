"""The red-team suite: static C attacks, learned benign, then run enforcing.

``attacks`` builds ``attacks.c`` once per session (gcc, static). ``Attack.run`` learns
the benign neighbour of an attack into a model and runs the attack under
``semtrust run --model M --enforce``, returning the run and its forensics.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.needs import need

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]
HERE = Path(__file__).resolve().parent


@dataclass
class Outcome:
    learn: subprocess.CompletedProcess[str]
    run: subprocess.CompletedProcess[str]
    forensics: str

    @property
    def evidence(self) -> str:
        """Forensics and the faults the run reported."""
        return self.forensics + self.run.stderr


@dataclass
class Attack:
    binary: Path
    work: Path

    def semtrust(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SEMTRUST, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def run(self, mode: str, *extra: str, benign: tuple[str, ...] | None = None) -> Outcome:
        d = self.work / f"{mode}-{os.getpid()}"
        d.mkdir(exist_ok=True)
        model, forensics = d / "model", d / "forensics"
        learn = self.semtrust("run", "--output", str(model), "--",
                              str(self.binary), *(benign or (f"benign-{mode}", *extra)))
        assert learn.returncode == 0, learn.stderr
        run = self.semtrust("run", "--model", str(model), "--enforce", "--output",
                            str(forensics), "--trajectory", "--", str(self.binary), mode,
                            *extra)
        text = forensics.read_text() if forensics.exists() else ""
        return Outcome(learn, run, text)


@pytest.fixture(scope="session")
def attacks(tmp_path_factory: pytest.TempPathFactory) -> Attack:
    need(sys.platform == "linux" and os.uname().machine == "x86_64", "x86_64 Linux")
    need(os.geteuid() == 0, "the red-team suite runs as root")
    need(shutil.which("gcc") is not None, "gcc not installed (Debian package gcc)")
    need(Path("/usr/lib/x86_64-linux-gnu/libc.a").exists(),
         "static libc not installed (Debian package libc6-dev)")
    d = tmp_path_factory.mktemp("adversarial")
    d.chmod(0o755)
    out = d / "attacks"
    subprocess.run(["gcc", "-static", "-O1", "-pthread", "-o", str(out),
                    str(HERE / "attacks.c")], check=True, capture_output=True)
    return Attack(out, d)
