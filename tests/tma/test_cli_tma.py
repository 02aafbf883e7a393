"""Command line of the external TMA: bad input is one line and exit code 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from semtrust.cli.oci import _options_from_annotations
from semtrust.errors import InputError
from tests.tma.procs import SEMTRUST


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SEMTRUST, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [
    ["run", "--tma", "carrier-pigeon:x", "--", "true"],
    ["run", "--tma", "tcp:127.0.0.1:9", "--", "true"],  # tcp needs TLS files
    ["run", "--tma", "unix:/nonexistent/tma.sock", "--", "true"],
    ["run", "--export", "http://broker/topic", "--", "true"],
    ["run", "--tma", "unix:/x", "--tma-key", "k", "--", "true"],
    ["tma", "serve", "--listen", "tcp:127.0.0.1:0"],  # no certificates
    ["tma", "show", "unix:/nonexistent/tma.sock", "d", "state"],
    ["export", "/nonexistent.json", "--to", "mqtt://127.0.0.1:1/t"],
    ["export", "/dev/null", "--to", "mqtt://127.0.0.1/a/#"],
])
def test_bad_input_is_one_line_exit_2(args: list[str]) -> None:
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3, r.stderr


def test_bad_trajectory_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    t = tmp_path / "t.json"
    t.write_text('{"export": {"type": "event"}}\n')
    r = cli("export", str(t), "--to", "mqtt://127.0.0.1:1/t")
    assert r.returncode == 2
    assert f"{t}:1" in r.stderr


def test_oci_annotations_name_the_tma() -> None:
    opts = _options_from_annotations({"io.semtrust.tma": "tcp:10.0.0.1:7300",
                                      "io.semtrust.tma.cert": "c", "io.semtrust.tma.cert-key": "k",
                                      "io.semtrust.tma.ca": "a",
                                      "io.semtrust.export": "mqtt://b/t"}, "cid", "config.json")
    assert opts.tma == "tcp:10.0.0.1:7300"
    assert opts.tma_tls == ("c", "k", "a")
    assert opts.export == "mqtt://b/t"
    with pytest.raises(InputError, match="go together"):
        _options_from_annotations({"io.semtrust.tma": "tcp:h:1", "io.semtrust.tma.cert": "c"},
                                  "cid", "config.json")
