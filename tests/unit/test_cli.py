"""The command line: outputs, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from semtrust.cli import main
from tests import vectors

TRAJ = str(vectors.path("test-trajectory.json"))


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_points_matches_reference() -> None:
    for name in ("test-trajectory.json", "test-trajectory.txt"):
        code, out, _ = run("points", str(vectors.path(name)))
        assert code == 0
        assert out.split() == vectors.expected_coefficients(name)


def test_replay_json_summary() -> None:
    code, out, _ = run("replay", TRAJ, "--json")
    assert code == 0
    doc = json.loads(out)
    want = vectors.summary("test-trajectory.json")
    assert doc["events"] == 75 and doc["points"] == 75 and doc["forensics"] == 0
    assert doc["measurement"] == want["measurement"] and doc["state"] == want["state"]


def test_learn_then_seal_and_enforce(tmp_path: Path) -> None:
    model = tmp_path / "m"
    assert run("replay", str(vectors.path("events18.json")), "--output-model", str(model))[0] == 0
    code, out, _ = run("replay", TRAJ, "--model", str(model), "--enforce", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["mode"] == "enforcing"
    # The two trajectories share two points; the other 73 are outside the model.
    assert doc["forensics"] == 73 and doc["denied"] == 73
    code, out, _ = run("replay", str(vectors.path("events18.json")), "--model", str(model),
                       "--seal", "--json")
    assert json.loads(out)["forensics"] == 0


def test_format_override() -> None:
    code, _, err = run("points", TRAJ, "--format", "legacy")
    assert code == 2 and "test-trajectory.json:1:" in err


def test_bad_line_is_one_line_exit_2(tmp_path: Path) -> None:
    lines = vectors.path("events18.json").read_text().splitlines()
    lines[3] = lines[3].replace('"prot": "5"', '"prot": "-5"')
    bad = tmp_path / "bad.json"
    bad.write_text("\n".join(lines) + "\n")
    code, _, err = run("replay", str(bad))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert f"{bad}:4: field 'mmap_file.prot'" in err
    code, out, err = run("replay", str(bad), "--skip-invalid", "--json")
    assert code == 0 and json.loads(out)["skipped"] == 1 and json.loads(out)["events"] == 17
    assert "skipped" in err


def test_missing_file_and_bad_hex(tmp_path: Path) -> None:
    code, _, err = run("replay", str(tmp_path / "none.json"))
    assert code == 2 and "cannot read" in err
    code, _, err = run("replay", TRAJ, "--base", "xyz")
    assert code == 2 and "--base" in err


def test_model_show_diff(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run("replay", str(vectors.path("events18.json")), "--output-model", str(a))
    run("replay", TRAJ, "--output-model", str(b))
    code, out, _ = run("model", "show", str(a), "--json")
    assert code == 0 and json.loads(out)["points"] == 17
    code, out, _ = run("model", "diff", str(a), str(b))
    assert code == 1
    assert "file_open cat /etc/passwd" in out  # descriptions carried as comments
    assert out.rstrip().endswith(f"15 only in {a}, 73 only in {b}, 2 common")


def test_model_keygen_sign_verify(tmp_path: Path) -> None:
    key, model, signed = tmp_path / "k", tmp_path / "m", tmp_path / "s"
    assert run("model", "keygen", str(key))[0] == 0
    run("replay", TRAJ, "--output-model", str(model))
    assert run("model", "sign", str(model), "--key", str(key), "-o", str(signed))[0] == 0
    code, out, _ = run("model", "verify", str(signed), "--key", f"{key}.pub")
    assert code == 0 and out.startswith("OK")
    text = signed.read_text().splitlines()
    text[5] = text[5][:-1] + ("0" if text[5][-1] != "0" else "1")
    signed.write_text("\n".join(text) + "\n")
    code, _, err = run("model", "verify", str(signed))
    assert code == 2 and "does not verify" in err
    code, _, err = run("replay", TRAJ, "--model", str(signed))
    assert code == 2 and "does not verify" in err


@pytest.mark.slow
def test_console_script_has_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "g.json"
    bad.write_text("{not json\n")
    exe = Path(sys.executable).with_name("semtrust")
    r = subprocess.run([str(exe), "points", str(bad)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
