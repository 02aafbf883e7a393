"""Code the domain wrote itself is measured: new content at a learned place is refused.

Files the domain creates are described without their content (their names are
often random, their content changes), but executing one, or mapping it
executable, measures what is in it. A workload learned writing a benign program
to a fixed path and running it must not be able, when enforcing, to write other
code to that path and run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.needs import need

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")

# Reads a program from stdin into DIR/tool and runs it; stdin is a pipe, so the content
# reaches the created file without any open the model could tell apart.
WRITE_AND_RUN_ELF = 'cat > "$1/tool" && chmod +x "$1/tool" && "$1/tool"'
# Writes a script whose body is the argument and runs it.
WRITE_AND_RUN_SCRIPT = ('printf "#!/bin/sh\\necho %s\\n" "$2" > "$1/run.sh" && '
                        'chmod +x "$1/run.sh" && "$1/run.sh"')

GOOD_C = '#include <unistd.h>\nint main(void){write(1,"benign\\n",7);return 0;}\n'
EVIL_C = '#include <unistd.h>\nint main(void){write(1,"PAYLOAD\\n",8);return 0;}\n'


def _semtrust(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*SEMTRUST, *args], input=stdin, capture_output=True, timeout=120)


def _static(tmp: Path, name: str, src: str) -> bytes:
    need(shutil.which("gcc") is not None, "gcc not installed (Debian package gcc)")
    c = tmp / f"{name}.c"
    c.write_text(src)
    out = tmp / name
    r = subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(c)], capture_output=True,
                       text=True)
    need(r.returncode == 0, f"static build failed (libc6-dev): {r.stderr.strip()[:200]}")
    return out.read_bytes()


def _forensics(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _learn_enforce(tmp_path: Path, script: str, learn_in: bytes, learn_arg: str,
                   run_in: bytes, run_arg: str) -> tuple[subprocess.CompletedProcess[bytes],
                                                           list[str]]:
    work = tmp_path / "work"
    work.mkdir()
    model = tmp_path / "model"
    r = _semtrust("run", "--output", str(model), "--", "sh", "-c", script, "sh", str(work),
                  learn_arg, stdin=learn_in)
    assert r.returncode == 0, r.stderr.decode()
    for f in work.iterdir():
        f.unlink()  # created again by every run
    out = tmp_path / "forensics"
    r = _semtrust("run", "--model", str(model), "--enforce", "--output", str(out),
                  "--trajectory", "--", "sh", "-c", script, "sh", str(work), run_arg,
                  stdin=run_in)
    return r, _forensics(out)


def test_same_created_program_runs_when_enforcing(tmp_path: Path) -> None:
    """The control: the learned program, written again, runs (learning is repeatable)."""
    good = _static(tmp_path, "good", GOOD_C)
    r, forensics = _learn_enforce(tmp_path, WRITE_AND_RUN_ELF, good, "", good, "")
    assert r.returncode == 0, r.stderr.decode()
    assert b"benign" in r.stdout
    assert forensics == []


def test_other_elf_at_the_learned_path_is_denied(tmp_path: Path) -> None:
    good = _static(tmp_path, "good", GOOD_C)
    evil = _static(tmp_path, "evil", EVIL_C)
    r, forensics = _learn_enforce(tmp_path, WRITE_AND_RUN_ELF, good, "", evil, "")
    assert b"PAYLOAD" not in r.stdout, "the new program ran"
    assert r.returncode != 0
    assert any('"pathname": "' in ln and "<created>" in ln and '"process": "sh"' in ln
               for ln in forensics), forensics


def test_other_script_at_the_learned_path_is_denied(tmp_path: Path) -> None:
    r, forensics = _learn_enforce(tmp_path, WRITE_AND_RUN_SCRIPT, b"", "benign", b"",
                                  "PAYLOAD")
    assert b"PAYLOAD" not in r.stdout, "the new script ran"
    assert r.returncode != 0
    assert any("<created>" in ln for ln in forensics), forensics


# Reads a shared object from stdin into DIR/lib.so and loads it (mmap with PROT_EXEC).
WRITE_AND_MAP = ('cat > "$1/lib.so" && "$2" -I -c "import ctypes, sys; '
                 'print(ctypes.CDLL(sys.argv[1]).tag())" "$1/lib.so"')


def _shared(tmp: Path, name: str, value: int) -> bytes:
    need(shutil.which("gcc") is not None, "gcc not installed (Debian package gcc)")
    c = tmp / f"{name}.c"
    c.write_text(f"int tag(void) {{ return {value}; }}\n")
    out = tmp / f"{name}.so"
    r = subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(c)], capture_output=True,
                       text=True)
    need(r.returncode == 0, f"shared build failed: {r.stderr.strip()[:200]}")
    return out.read_bytes()


def test_other_library_mapped_executable_at_the_learned_path_is_denied(tmp_path: Path) -> None:
    py = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    good, evil = _shared(tmp_path, "good", 11), _shared(tmp_path, "evil", 66)
    work = tmp_path / "work"
    work.mkdir()
    model = tmp_path / "model"
    r = _semtrust("run", "--output", str(model), "--", "sh", "-c", WRITE_AND_MAP, "sh",
                  str(work), py, stdin=good)
    assert r.returncode == 0 and b"11" in r.stdout, r.stderr.decode()
    for data, ok in ((good, True), (evil, False)):
        (work / "lib.so").unlink()
        out = tmp_path / f"forensics-{ok}"
        r = _semtrust("run", "--model", str(model), "--enforce", "--output", str(out),
                      "--trajectory", "--", "sh", "-c", WRITE_AND_MAP, "sh", str(work), py,
                      stdin=data)
        if ok:
            assert r.returncode == 0 and b"11" in r.stdout, r.stderr.decode()
            assert _forensics(out) == []
        else:
            assert b"66" not in r.stdout, "the new library was loaded"
            assert any('"type": "mmap_file"' in ln and "<created>" in ln
                       for ln in _forensics(out)), _forensics(out)
