"""``semtrust run --tma``: real workloads learning and enforcing with a TMA process
over a Unix socket and over mutual TLS; the TMA killed mid-run fails closed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tma.certs import Pki
from tests.tma.procs import SEMTRUST, ServeProcess, tma

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")

LEARN = "cat /etc/hostname; ls /"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SEMTRUST, "run", *args], capture_output=True, text=True,
                          timeout=timeout)


def points(model: Path) -> list[str]:
    return sorted(line.split()[1] for line in model.read_text().splitlines()
                  if line.startswith("state "))


@pytest.fixture
def serve(short_dir: Path, pki: Pki, tma_key: tuple[Path, Path]) -> Iterator[ServeProcess]:
    with ServeProcess("--listen", f"unix:{short_dir}/tma.sock", "--listen", "tcp:127.0.0.1:0",
                      "--key", str(tma_key[0]), "--cert", pki.server.cert,
                      "--cert-key", pki.server.key, "--client-ca", pki.server.ca) as s:
        yield s


def via(serve: ServeProcess, kind: str, pki: Pki) -> list[str]:
    if kind == "unix":
        return ["--tma", serve.unix]
    return ["--tma", serve.tcp, "--tma-cert", pki.client.cert, "--tma-cert-key",
            pki.client.key, "--tma-ca", pki.client.ca]


@pytest.mark.parametrize("kind", ["unix", "tls"])
def test_learn_seal_enforce_like_in_process(serve: ServeProcess, pki: Pki, kind: str,
                                            tmp_path: Path) -> None:
    local = tmp_path / "local.model"
    r = run("--output", str(local), "--", "sh", "-c", LEARN)
    assert r.returncode == 0, r.stderr
    remote = tmp_path / "remote.model"
    name = f"learn-{kind}-{os.getpid()}"
    r = run("--name", name, *via(serve, kind, pki), "--output", str(remote),
            "--", "sh", "-c", LEARN)
    assert r.returncode == 0, r.stderr
    assert "bin" in r.stdout.split()
    assert points(remote) == points(local)
    # the TMA holds the domain after the orchestrator is gone: same model there
    shown = tma("show", serve.unix, name, "model")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == remote.read_text()
    # enforcing with the learned model: the same workload passes, a new file is denied
    for model in (local, remote):
        ok = run("--name", f"ok-{kind}-{model.stem}-{os.getpid()}", *via(serve, kind, pki),
                 "--model", str(model), "--enforce", "--", "sh", "-c", LEARN)
        assert ok.returncode == 0, ok.stderr
        out = tmp_path / "forensics"
        name = f"deny-{kind}-{model.stem}-{os.getpid()}"
        bad = run("--name", name, *via(serve, kind, pki), "--model", str(model), "--enforce",
                  "--output", str(out), "--trajectory", "--", "sh", "-c",
                  LEARN + "; cat /etc/passwd")
        assert bad.returncode != 0
        assert "Operation not permitted" in bad.stderr
        assert "root:" not in bad.stdout
        assert "/etc/passwd" in out.read_text()
        summary = tma("show", serve.unix, name, "summary", "--json")
        assert '"forensics": 0' not in summary.stdout


def test_wrong_uid_or_certificate_is_refused(short_dir: Path, pki: Pki, tmp_path: Path) -> None:
    with ServeProcess("--listen", f"unix:{short_dir}/u.sock", "--allow-uid",
                      str(os.getuid() + 4242)) as s:
        r = run("--tma", s.unix, "--", "true")
        assert r.returncode == 2
        assert "not allowed" in r.stderr and "Traceback" not in r.stderr
    with ServeProcess("--listen", "tcp:127.0.0.1:0", "--cert", pki.server.cert, "--cert-key",
                      pki.server.key, "--client-ca", pki.server.ca) as s:
        r = run("--tma", s.tcp, "--tma-cert", pki.rogue.cert, "--tma-cert-key", pki.rogue.key,
                "--tma-ca", pki.rogue.ca, "--", "true")
        assert r.returncode == 2
        assert "cannot connect" in r.stderr and "Traceback" not in r.stderr


LOOP = "while :; do cat /etc/hostname; sleep 0.05; done"
LEARN_LOOP = "for i in 1 2 3; do cat /etc/hostname; sleep 0.05; done"


def _wait_for_events(serve: ServeProcess, name: str) -> None:
    for _ in range(600):
        s = tma("show", serve.unix, name, "summary", "--json")
        if s.returncode == 0 and '"events": 0,' not in s.stdout:
            return
        time.sleep(0.1)
    raise AssertionError("the workload never reached the TMA")


def test_tma_killed_while_enforcing_fails_closed(serve: ServeProcess, short_dir: Path,
                                                 tmp_path: Path) -> None:
    model = tmp_path / "loop.model"
    r = run("--output", str(model), "--", "sh", "-c", LEARN_LOOP)
    assert r.returncode == 0, r.stderr
    name = f"killed-enf-{os.getpid()}"
    p = subprocess.Popen([SEMTRUST, "run", "--name", name, "--tma", serve.unix, "--model",
                          str(model), "--enforce", "--", "sh", "-c", LOOP],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_events(serve, name)
    serve.kill()
    _out, err = p.communicate(timeout=60)  # bounded: the grace period ends the workload
    assert p.returncode != 0
    assert "external TMA" in err and "lost" in err
    assert "could not be modeled and were denied" in err
    assert "Operation not permitted" in err


def test_tma_killed_while_learning_stops_and_writes_nothing(serve: ServeProcess,
                                                            tmp_path: Path) -> None:
    name = f"killed-learn-{os.getpid()}"
    out = tmp_path / "never.model"
    p = subprocess.Popen([SEMTRUST, "run", "--name", name, "--tma", serve.unix, "--output",
                          str(out), "--", "sh", "-c", LOOP],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_events(serve, name)
    serve.kill()
    _out, err = p.communicate(timeout=60)
    assert p.returncode != 0
    assert "model is incomplete and was not written" in err
    assert not out.exists()
