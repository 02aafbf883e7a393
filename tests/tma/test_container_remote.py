"""Container mode (`semtrust run --bundle`) with the TMA in another process, over a Unix
socket and over mutual TLS: same models and verdicts as in-process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from semtrust.orchestrator.bundle import build_busybox_bundle
from tests.integration.needs import need_container_host
from tests.tma.certs import Pki
from tests.tma.procs import SEMTRUST, ServeProcess, tma
from tests.tma.test_run_remote import points, via

HOSTNAME = "semtrust-test\n"
SECRET = "top secret\n"


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    need_container_host()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return build_busybox_bundle(tmp_path / "bundle", ["sh", "-c", "cat /etc/hostname"],
                                files={"/etc/hostname": HOSTNAME, "/etc/secret": SECRET})


@pytest.fixture
def serve(short_dir: Path, pki: Pki) -> Iterator[ServeProcess]:
    with ServeProcess("--listen", f"unix:{short_dir}/tma.sock", "--listen", "tcp:127.0.0.1:0",
                      "--cert", pki.server.cert, "--cert-key", pki.server.key,
                      "--client-ca", pki.server.ca) as s:
        yield s


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SEMTRUST, "run", *args], capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kind", ["unix", "tls"])
def test_bundle_learns_and_enforces_through_the_tma(serve: ServeProcess, pki: Pki,
                                                    bundle: Path, tmp_path: Path,
                                                    kind: str) -> None:
    local = tmp_path / "local.model"
    r = run("--output", str(local), "--bundle", str(bundle))
    assert r.returncode == 0, r.stderr
    remote = tmp_path / "remote.model"
    name = f"ct-{kind}-{os.getpid()}"
    r = run("--name", name, *via(serve, kind, pki), "--output", str(remote),
            "--bundle", str(bundle))
    assert r.returncode == 0, r.stderr
    assert r.stdout == HOSTNAME
    assert points(remote) == points(local)
    assert tma("show", serve.unix, name, "model").stdout == remote.read_text()
    ok = run("--name", f"{name}-ok", *via(serve, kind, pki), "--model", str(remote),
             "--enforce", "--bundle", str(bundle))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == HOSTNAME
    bad = run("--name", f"{name}-bad", *via(serve, kind, pki), "--model", str(local),
              "--enforce", "--bundle", str(bundle), "--", "sh", "-c",
              "cat /etc/hostname; cat /etc/secret")
    assert bad.returncode != 0
    assert "Operation not permitted" in bad.stderr
    assert SECRET.strip() not in bad.stdout
    assert any("/etc/secret" in ln for ln in bad.stderr.splitlines()), bad.stderr
