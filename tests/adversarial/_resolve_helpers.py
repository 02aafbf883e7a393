"""Shared pieces of the path and orchestrator-as-target attacks: build a static C
program, learn a benign run, run the attack under a sealed (enforced) model and
read the domain's forensics and faults through the console while it waits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.needs import need

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")


def build(tmp: Path, name: str, src: str) -> Path:
    """Compile ``src`` into a static executable ``tmp/name``."""
    need(shutil.which("gcc") is not None, "gcc not installed (Debian package gcc)")
    need(Path("/usr/lib/x86_64-linux-gnu/libc.a").exists(),
         "static libc missing (Debian package libc6-dev)")
    c = tmp / f"{name}.c"
    c.write_text(src)
    out = tmp / name
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(c)], check=True)
    return out


def learn(tmp: Path, argv: list[str], name: str = "model") -> Path:
    """Learn a model of a benign run of ``argv``."""
    model = tmp / f"{name}.model"
    (tmp / "go").touch()  # a benign run does not wait for the console
    r = subprocess.run([*SEMTRUST, "run", "--output", str(model), "--", *argv],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return model


def console(name: str, what: str) -> Any:
    r = subprocess.run([*SEMTRUST, "console", name, "show", what, "--json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_for(path: Path, proc: subprocess.Popen[str], limit: float = 60.0) -> None:
    """Wait until the workload creates ``path`` (a hang guard, not a timing assert)."""
    end = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"semtrust exited early: {proc.communicate()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"workload never created {path}: {proc.communicate()}")
        time.sleep(0.05)


class Domain:
    """``semtrust run`` of an attack that creates ``ready`` and then waits for ``go``."""

    def __init__(self, tmp: Path, argv: list[str], *, model: Path | None = None,
                 enforce: bool = False, tag: str = "adv") -> None:
        self.name = f"{tag}-{os.getpid()}-{time.monotonic_ns() % 100000}"
        self.ready = tmp / "ready"
        self.go = tmp / "go"
        for p in (self.ready, self.go, tmp / "result"):
            p.unlink(missing_ok=True)
        opts: list[str] = []
        if model is not None:
            opts += ["--model", str(model)]
        if enforce:
            opts.append("--enforce")
        self.proc = subprocess.Popen([*SEMTRUST, "run", "--name", self.name, *opts, "--",
                                      *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)

    def wait_ready(self, limit: float = 60.0) -> None:
        """Until the workload says it is done, or (a denied, hence untrusted, workload
        cannot say so) until the domain has recorded forensics or a fault."""
        end = time.monotonic() + limit
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"semtrust exited early: {self.proc.communicate()}")
            if time.monotonic() > end:
                self.proc.kill()
                raise AssertionError(f"workload never got done: {self.proc.communicate()}")
            r = subprocess.run([*SEMTRUST, "console", self.name, "show", "stats", "--json"],
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                st = json.loads(r.stdout)
                if st.get("forensics") or st.get("faults"):
                    time.sleep(0.5)  # let the workload finish the attack's last step
                    return
            time.sleep(0.1)

    def show(self, what: str) -> Any:
        return console(self.name, what)

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        self.go.touch()
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError("semtrust run did not end") from None
        return self.proc.returncode, out, err


def mentions(items: list[Any], word: str) -> bool:
    return any(word in (x if isinstance(x, str) else json.dumps(x)) for x in items)
