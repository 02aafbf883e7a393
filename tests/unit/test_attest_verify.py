"""Attestations without a TPM: build, sign, verify, and every way verification must fail."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from semtrust.attest.attestation import (
    build_attestation,
    canonical,
    load_private_key,
    load_public_key,
    parse_nonce,
    sign_document,
)
from semtrust.attest.domain import DomainTrust, Snapshot, TrustOptions
from semtrust.attest.verify import Check, Verifier
from semtrust.errors import InputError
from semtrust.model.coefficient import ZERO, state_value
from semtrust.model.modelfile import Model, parse_model, render_model
from semtrust.model.signing import generate_key, write_keypair
from semtrust.model.tma import TMA

NONCE = bytes.fromhex("00112233445566778899aabbccddeeff")
BASE = bytes(range(1, 33))


def _points(n: int, tag: bytes = b"p") -> list[bytes]:
    return [hashlib.sha256(tag + bytes([i])).digest() for i in range(n)]


def _learned(points: list[bytes], *, base: bytes = ZERO) -> TMA:
    tma = TMA(base=base)
    tma.set_aggregate(ZERO)
    for p in points:
        tma.update_coefficient(p)
    return tma


def _model_of(tma: TMA) -> Model:
    text = render_model(tma, describe_points=False)
    return parse_model(text.encode(), source="model")


def _verdict(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _failed(checks: list[Check]) -> set[str]:
    return {c.name for c in checks if c.failed}


@pytest.fixture(params=["ed25519", "rsa"])
def keypair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = write_keypair(tmp_path / f"tma-{request.param}", generate_key(request.param))
    return priv, pub


@pytest.fixture
def sealed_domain(tmp_path: Path) -> tuple[TMA, Model]:
    """A sealed domain that ran inside its model, with a verifier-chosen base."""
    learned = _learned(_points(5))
    model = _model_of(learned)
    tma = TMA()
    tma.load_model(model, base=BASE, aggregate=ZERO)
    for p in _points(5)[:3]:
        assert tma.update_coefficient(p).trusted
    return tma, model


def _attest(tma: TMA, model: Model, key_path: Path, nonce: bytes = NONCE) -> dict[str, Any]:
    s = Snapshot.of(tma)
    doc = build_attestation(
        domain="web", mode=s.mode, aggregate=s.aggregate, base=s.base,
        measurement=s.measurement, state=s.state, points=s.points, forensics=s.forensics,
        model_digest=model.digest, untrusted=[], nonce=nonce,
    )
    return sign_document(doc, load_private_key(key_path))


def test_genuine_attestation_verifies(keypair: tuple[Path, Path], sealed_domain: Any) -> None:
    tma, model = sealed_domain
    doc = _attest(tma, model, keypair[0])
    # Round trip through the file form: layout must not matter.
    doc = json.loads(json.dumps(doc, indent=3))
    checks = Verifier(load_public_key(keypair[1]), model).verify(doc, nonce=NONCE)
    assert _failed(checks) == set(), [c.line() for c in checks]
    v = _verdict(checks)
    for name in ("format", "signature", "nonce", "model-digest", "aggregate", "state",
                 "forensics", "trust"):
        assert v[name].status == "PASS"
    assert v["tpm-quote"].status == "SKIP"
    assert doc["state"] == state_value(ZERO, BASE, model.points).hex()
    assert doc["mode"] == "sealed" and doc["base"] == BASE.hex() and doc["tpm"] is None


def test_wrong_nonce_fails(keypair: tuple[Path, Path], sealed_domain: Any) -> None:
    tma, model = sealed_domain
    doc = _attest(tma, model, keypair[0])
    checks = Verifier(load_public_key(keypair[1]), model).verify(doc, nonce=b"\x01" * 16)
    assert _failed(checks) == {"nonce"}
    assert "not the requested" in _verdict(checks)["nonce"].reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("state", "00" * 32),
        ("forensics", 0),  # unchanged value but re-typed below for ints
        ("domain", "other"),
        ("nonce", "ff" * 16),
        ("base", "00" * 32),
    ],
)
def test_tampered_field_fails_signature(
    keypair: tuple[Path, Path], sealed_domain: Any, field: str, value: Any
) -> None:
    tma, model = sealed_domain
    doc = _attest(tma, model, keypair[0])
    if field == "forensics":
        value = doc["forensics"] + 1
    assert doc[field] != value
    doc[field] = value
    checks = Verifier(load_public_key(keypair[1]), model).verify(doc)
    sig = _verdict(checks)["signature"]
    assert sig.failed
    assert "document altered after signing" in sig.reason


def test_different_key_fails(sealed_domain: Any, tmp_path: Path) -> None:
    tma, model = sealed_domain
    k1, _ = write_keypair(tmp_path / "k1", generate_key("ed25519"))
    _, p2 = write_keypair(tmp_path / "k2", generate_key("ed25519"))
    _, prsa = write_keypair(tmp_path / "k3", generate_key("rsa"))
    doc = _attest(tma, model, k1)
    checks = Verifier(load_public_key(p2), model).verify(doc, nonce=NONCE)
    assert _failed(checks) == {"signature"}
    assert "signed by another key" in _verdict(checks)["signature"].reason
    checks = Verifier(load_public_key(prsa), model).verify(doc, nonce=NONCE)
    assert _failed(checks) == {"signature"}
    assert "ed25519" in _verdict(checks)["signature"].reason


def test_model_with_one_extra_point_fails(keypair: tuple[Path, Path], sealed_domain: Any) -> None:
    tma, model = sealed_domain
    doc = _attest(tma, model, keypair[0])
    bigger = _model_of(_learned([*_points(5), hashlib.sha256(b"extra").digest()]))
    checks = Verifier(load_public_key(keypair[1]), bigger).verify(doc, nonce=NONCE)
    assert _failed(checks) == {"state", "model-digest"}
    reason = _verdict(checks)["state"].reason
    assert "domain has 5 points, model 6" in reason


def test_learning_domain_verifies_against_its_output_model(keypair: tuple[Path, Path]) -> None:
    """No loaded model: the verifier uses the model the domain writes (digest check skipped)."""
    tma = _learned(_points(4), base=BASE)
    s = Snapshot.of(tma)
    doc = sign_document(build_attestation(
        domain="d", mode=s.mode, aggregate=s.aggregate, base=s.base, measurement=s.measurement,
        state=s.state, points=s.points, forensics=s.forensics, model_digest=None,
        untrusted=[], nonce=NONCE), load_private_key(keypair[0]))
    model = _model_of(tma)
    checks = Verifier(load_public_key(keypair[1]), model, expected_base=BASE).verify(
        doc, nonce=NONCE)
    assert _failed(checks) == set()
    assert _verdict(checks)["model-digest"].status == "SKIP"
    assert _verdict(checks)["base"].status == "PASS"
    checks = Verifier(load_public_key(keypair[1]), model, expected_base=ZERO).verify(doc)
    assert _failed(checks) == {"base"}


def test_forensic_event_fails(keypair: tuple[Path, Path], sealed_domain: Any) -> None:
    tma, model = sealed_domain
    verdict = tma.update_coefficient(hashlib.sha256(b"not in model").digest())
    assert not verdict.trusted
    s = Snapshot.of(tma)
    doc = sign_document(build_attestation(
        domain="web", mode=s.mode, aggregate=s.aggregate, base=s.base,
        measurement=s.measurement, state=s.state, points=s.points, forensics=s.forensics,
        model_digest=model.digest, untrusted=[{"pid": 42, "process": "sh"}], nonce=NONCE,
    ), load_private_key(keypair[0]))
    checks = Verifier(load_public_key(keypair[1]), model).verify(doc, nonce=NONCE)
    assert _failed(checks) == {"forensics", "state", "trust"}
    assert _verdict(checks)["forensics"].reason.startswith("1 forensic event")


def test_other_platform_aggregate_fails(keypair: tuple[Path, Path]) -> None:
    """A model learned on one platform state does not validate on another."""
    pts = _points(3)
    learned = TMA()
    learned.set_aggregate(hashlib.sha256(b"platform A").digest())
    for p in pts:
        learned.update_coefficient(p)
    model = _model_of(learned)
    here = TMA()
    here.load_model(model, aggregate=hashlib.sha256(b"platform B").digest())
    doc = _attest(here, model, keypair[0])
    checks = Verifier(load_public_key(keypair[1]), model).verify(doc, nonce=NONCE)
    assert _failed(checks) == {"aggregate", "state"}
    assert "other platform state" in _verdict(checks)["aggregate"].reason


def test_malformed_documents_fail_format(keypair: tuple[Path, Path], sealed_domain: Any) -> None:
    tma, model = sealed_domain
    doc = _attest(tma, model, keypair[0])
    v = Verifier(load_public_key(keypair[1]), model)
    for bad in ({k: x for k, x in doc.items() if k != "state"},
                {**doc, "points": "5"}, {**doc, "state": "zz" * 32},
                {**doc, "format": "other/1"}, {**doc, "forensics": True}):
        checks = v.verify(bad)
        assert [c.name for c in checks] == ["format"] and checks[0].failed
    bad_sig = {**doc, "signature": "!!!"}
    assert "Base64" in _verdict(v.verify(bad_sig))["format"].reason


def test_canonical_form_is_documented_shape() -> None:
    doc = {"b": 1, "a": [1, "x"], "signature": "ignored", "c": None}
    assert canonical(doc) == b'{"a":[1,"x"],"b":1,"c":null}'


def test_nonce_parsing() -> None:
    assert parse_nonce("0a0B") == b"\x0a\x0b"
    for bad in ("", "zz", "0" * 130, "abc"):
        with pytest.raises(InputError):
            parse_nonce(bad)


def test_keys_of_both_types_load(tmp_path: Path) -> None:
    p1, _ = write_keypair(tmp_path / "e", generate_key("ed25519"))
    p2, _ = write_keypair(tmp_path / "r", generate_key("rsa"))
    assert isinstance(load_private_key(p1), ed25519.Ed25519PrivateKey)
    assert isinstance(load_private_key(p2), rsa.RSAPrivateKey)
    (tmp_path / "junk").write_text("not a key")
    with pytest.raises(InputError):
        load_private_key(tmp_path / "junk")
    with pytest.raises(InputError):
        load_public_key(tmp_path / "missing")


def test_domain_trust_without_tpm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No TPM: aggregate 0^32, --base applied before the aggregate, no quote."""
    monkeypatch.delenv("TPM2TOOLS_TCTI", raising=False)
    monkeypatch.delenv("TCTI", raising=False)
    priv, pub = write_keypair(tmp_path / "k", generate_key("ed25519"))
    learned = TMA()
    learned.set_aggregate(hashlib.sha256(b"some TPM platform").digest())
    for p in _points(3):
        learned.update_coefficient(p)
    model = _model_of(learned)
    dt = DomainTrust("d", TrustOptions(base=BASE, tma_key=priv))
    try:
        tma = TMA()
        dt.prepare(tma, model)
        assert tma.aggregate == ZERO and tma.base == BASE and tma.sealed
        assert dt.aggregate_mismatch() is not None
        doc = dt.attest(tma, NONCE)
        assert doc["tpm"] is None and doc["aggregate"] == ZERO.hex()
        assert doc["state"] == state_value(ZERO, BASE, model.points).hex()
        assert base64.b64decode(doc["signature"])
        checks = Verifier(load_public_key(pub), model).verify(doc, nonce=NONCE)
        assert _failed(checks) == {"aggregate", "state"}
    finally:
        dt.close()
    with pytest.raises(InputError):
        DomainTrust("d", TrustOptions(pcr=11, tcti="none"))
    nokey = DomainTrust("d", TrustOptions(tcti="none"))
    with pytest.raises(InputError, match="no TMA key"):
        nokey.attest(TMA(), NONCE)


def _tpms_attest(extra: bytes, pcrs: list[int], digest: bytes) -> bytes:
    """A TPMS_ATTEST quote marshalled by hand (TPM 2.0 Part 2 §10.12.12)."""
    import struct

    bits = bytearray(3)
    for i in pcrs:
        bits[i // 8] |= 1 << (i % 8)
    return (struct.pack(">IH", 0xFF544347, 0x8018)
            + struct.pack(">H", 4) + b"name"
            + struct.pack(">H", len(extra)) + extra
            + struct.pack(">QIIB", 123, 1, 2, 1) + struct.pack(">Q", 7)
            + struct.pack(">IHB", 1, 0x000B, 3) + bytes(bits)
            + struct.pack(">H", len(digest)) + digest)


def test_tpms_attest_parser() -> None:
    from semtrust.attest.verify import parse_tpms_attest

    raw = _tpms_attest(b"q" * 32, [0, 1, 7, 11], b"d" * 32)
    q = parse_tpms_attest(raw)
    assert q.magic == 0xFF544347 and q.extra_data == b"q" * 32
    assert q.selection == {0x000B: [0, 1, 7, 11]} and q.pcr_digest == b"d" * 32
    assert (q.clock, q.reset_count, q.restart_count, q.safe, q.firmware) == (123, 1, 2, True, 7)
    for bad in (raw[:-1], raw + b"\0", raw[:10], b""):
        with pytest.raises(ValueError):
            parse_tpms_attest(bad)
    certify = raw[:4] + b"\x80\x17" + raw[6:]
    with pytest.raises(ValueError, match="not a quote"):
        parse_tpms_attest(certify)


def test_trust_options_are_checked() -> None:
    with pytest.raises(InputError, match="base"):
        DomainTrust("d", TrustOptions(tcti="none", base=b"short"))
    with pytest.raises(InputError, match="PCR"):
        DomainTrust("d", TrustOptions(tcti="none", pcr=24))


def test_every_signed_field_is_covered(sealed_domain: Any, tmp_path: Path) -> None:
    """Changing any field (same type, other value) is caught by the signature check."""
    tma, model = sealed_domain
    priv, pub = write_keypair(tmp_path / "k", generate_key("ed25519"))
    doc = _attest(tma, model, priv)
    v = Verifier(load_public_key(pub), model)
    for field, value in doc.items():
        if field in ("signature", "signature_alg"):
            continue
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            other: Any = value + 1
        elif isinstance(value, str):
            other = ("0" if value[:1] != "0" else "1") + value[1:]
        elif isinstance(value, dict):
            other = {**value, "untrusted": 1} if field == "trust" else {**value, "x": 1}
        else:
            raise AssertionError(f"unexpected field type {field}")
        checks = v.verify({**doc, field: other})
        assert _failed(checks) & {"signature", "format"}, field
