"""Fixtures of the external TMA tests: certificates, in-process TMA servers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from semtrust.tma.protocol import Address
from semtrust.tma.server import TMAServer
from tests.tma.certs import Pki


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (Unix socket paths are limited to 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="tma"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def tma_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The TMA's attestation key pair (private, public) as PEM files."""
    d = tmp_path_factory.mktemp("key")
    k = ed25519.Ed25519PrivateKey.generate()
    (d / "tma.key").write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    (d / "tma.pub").write_bytes(k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return d / "tma.key", d / "tma.pub"


@pytest.fixture
def server(short_dir: Path, pki: Pki, tma_key: tuple[Path, Path]
           ) -> Iterator[tuple[TMAServer, Address, Address]]:
    """An in-process TMA listening on a Unix socket and on TLS over loopback."""
    from semtrust.attest.attestation import load_private_key

    srv = TMAServer(key=load_private_key(tma_key[0]), tls=pki.server)
    unix = srv.listen(Address("unix", path=str(short_dir / "tma.sock")))
    tcp = srv.listen(Address("tcp", host="127.0.0.1", port=0))
    yield srv, unix, tcp
    srv.close()
