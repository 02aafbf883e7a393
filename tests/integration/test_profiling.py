"""``SEMTRUST_PROFILE``: a cProfile of the serve loop, and dumpability only on request.

Real ``semtrust run`` in a subprocess; the dumpable flag is read with
``prctl(PR_GET_DUMPABLE)`` inside the process that ran the domain, since root
may ptrace any process and cannot tell from outside.
"""

from __future__ import annotations

import os
import pstats
import subprocess
import sys
from pathlib import Path

import pytest

from semtrust.errors import InputError
from semtrust.orchestrator.profiling import ENV, ProfileRequest, profile_request

SEMTRUST = [str(Path(sys.executable).parent / "semtrust")]

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")

# Runs a domain in this interpreter, then prints the orchestrator's dumpable flag.
_DUMPABLE_AFTER_RUN = """
import ctypes, sys
from semtrust.orchestrator.run import RunOptions, run_domain
code = run_domain(RunOptions(command=["true"], name=sys.argv[1]))
print(code, ctypes.CDLL(None, use_errno=True).prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE
"""


def _env(value: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if value is not None:
        env[ENV] = value
    return env


def test_cprofile_writes_the_serve_loop(tmp_path: Path) -> None:
    out = tmp_path / "serve.prof"
    r = subprocess.run([*SEMTRUST, "run", "--name", f"prof-{os.getpid()}", "--", "cat",
                        "/etc/hostname"], env=_env(f"cprofile:{out}"), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    functions = {(Path(f).name, name) for f, _line, name in pstats.Stats(str(out)).stats}  # type: ignore[attr-defined]
    assert ("domain.py", "serve") in functions
    assert ("domain.py", "decide") in functions  # the mediation itself, not just the loop


def test_without_the_switch_no_profile_and_not_dumpable(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", _DUMPABLE_AFTER_RUN, f"nodump-{os.getpid()}"],
                       env=_env(None), capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["0", "0"]
    assert "dumpable" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_dumpable_only_when_asked_and_with_a_warning() -> None:
    r = subprocess.run([sys.executable, "-c", _DUMPABLE_AFTER_RUN, f"dump-{os.getpid()}"],
                       env=_env("dumpable"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["0", "1"]
    assert "SEMTRUST_PROFILE=dumpable" in r.stderr


def test_a_bad_value_is_exit_2_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = subprocess.run([*SEMTRUST, "run", "--", "touch", str(marker)], env=_env("cprofile"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "SEMTRUST_PROFILE" in r.stderr
    assert not marker.exists()


@pytest.mark.parametrize(("text", "want"), [
    ("", ProfileRequest()),
    (" , ", ProfileRequest()),
    ("cprofile:/x/y", ProfileRequest("/x/y", False)),
    ("dumpable,cprofile:p", ProfileRequest("p", True)),
])
def test_parse(text: str, want: ProfileRequest) -> None:
    assert profile_request({ENV: text}) == want
    assert profile_request({}) == ProfileRequest()


@pytest.mark.parametrize("text", ["cprofile:", "perf", "Dumpable", "cprofile"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(InputError):
        profile_request({ENV: text})
