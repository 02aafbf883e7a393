"""TPM root of trust against a real (software) TPM: aggregate, extend, quote, verify."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from semtrust.attest.attestation import load_private_key as load_tma_key
from semtrust.attest.attestation import load_public_key, quote_qualifier, sign_document
from semtrust.attest.domain import DomainTrust, TrustOptions
from semtrust.attest.swtpm import SoftwareTpm
from semtrust.attest.tpm import AGGREGATE_PCRS, TpmLink, open_tpm, software_extend
from semtrust.attest.verify import Check, Verifier, load_ak, parse_tpms_attest
from semtrust.model.coefficient import ZERO, hw_aggregate, state_value
from semtrust.model.modelfile import Model, parse_model, render_model
from semtrust.model.signing import generate_key, write_keypair
from semtrust.model.tma import TMA
from tests.integration.needs import need

NONCE = bytes.fromhex("a5" * 20)
BASE = hashlib.sha256(b"verifier base").digest()


def _failed(checks: list[Check]) -> set[str]:
    return {c.name for c in checks if c.failed}


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _pcrread_tool(tcti: str, indices: list[int]) -> dict[int, bytes]:
    """PCR values as tpm2-tools reads them: an implementation independent of ours."""
    need(shutil.which("tpm2_pcrread") is not None,
         "tpm2_pcrread not installed (Debian tpm2-tools)")
    out = subprocess.run(
        ["tpm2_pcrread", "sha256:" + ",".join(map(str, indices))],
        env={**os.environ, "TPM2TOOLS_TCTI": tcti}, check=True, capture_output=True,
        text=True, timeout=30,
    ).stdout
    values = {int(m[1]): bytes.fromhex(m[2]) for m in
              re.finditer(r"^\s*(\d+)\s*:\s*0x([0-9A-Fa-f]{64})\s*$", out, re.M)}
    assert sorted(values) == sorted(indices), out
    return values


def test_aggregate_equals_software_recomputation(fresh_swtpm: SoftwareTpm) -> None:
    with TpmLink(fresh_swtpm.tcti) as tpm:
        # Give the platform a non-trivial state first: PCR 0 and 7 measured.
        for i, what in ((0, b"firmware"), (7, b"secure boot policy"), (7, b"db")):
            tpm.extend(i, hashlib.sha256(what).digest())
        ours = tpm.hardware_aggregate()
        ref = _pcrread_tool(fresh_swtpm.tcti, list(AGGREGATE_PCRS))
        assert ours == hashlib.sha256(b"".join(ref[i] for i in range(8))).digest()
        assert ours == hw_aggregate([ref[i] for i in range(8)])
        # And the PCR values themselves follow the extend rule.
        p7 = software_extend(software_extend(ZERO, hashlib.sha256(b"secure boot policy")
                                             .digest()), hashlib.sha256(b"db").digest())
        assert ref[7] == p7
        assert ours != hw_aggregate([ZERO] * 8)


def test_pcr_reads_beyond_eight_and_open_errors(swtpm: SoftwareTpm) -> None:
    with TpmLink(swtpm.tcti) as tpm:
        vals = tpm.pcr_read([*range(12), 16, 23])
        assert sorted(vals) == [*range(12), 16, 23]
        assert all(len(v) == 32 for v in vals.values())
    with pytest.raises(Exception, match="cannot open TPM"):
        TpmLink("swtpm:host=127.0.0.1,port=1")
    assert open_tpm("none") is None


def _domain_with_model(tmp_path: Path, tcti: str, *, pcr: int | None = None
                       ) -> tuple[DomainTrust, TMA, Model, Path]:
    """Learn a model on this platform, then run a sealed domain inside it."""
    pts = [hashlib.sha256(bytes([i])).digest() for i in range(6)]
    key, pub = write_keypair(tmp_path / "tma", generate_key("ed25519"))
    learner = DomainTrust("learn", TrustOptions(tcti=tcti))
    learned = TMA()
    learner.prepare(learned)
    learner.close()
    for p in pts:
        learned.update_coefficient(p)
    model = parse_model(render_model(learned, describe_points=False).encode(), source="m")
    dt = DomainTrust("web", TrustOptions(tcti=tcti, base=BASE, tma_key=key, pcr=pcr))
    tma = TMA()
    dt.prepare(tma, model)
    for p in pts[:4]:
        assert tma.update_coefficient(p).trusted
    return dt, tma, model, pub


def _ak(dt: DomainTrust) -> ec.EllipticCurvePublicKey | Any:
    pem = dt.ak_public_pem()
    assert pem is not None
    return load_ak(pem, "ak")


def test_genuine_quoted_attestation_verifies(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    dt, tma, model, pub = _domain_with_model(tmp_path, swtpm.tcti)
    try:
        doc = dt.attest(tma, NONCE)
        ak = _ak(dt)
    finally:
        dt.close()
    assert doc["tpm"] is not None and sorted(doc["tpm"]["pcrs"], key=int) == \
        [str(i) for i in range(8)]
    assert doc["state"] == state_value(bytes.fromhex(doc["aggregate"]), BASE, model.points).hex()
    q = parse_tpms_attest(base64.b64decode(doc["tpm"]["quote"]))
    assert q.extra_data == quote_qualifier(doc)
    checks = Verifier(load_public_key(pub), model, ak=ak).verify(doc, nonce=NONCE)
    assert _failed(checks) == set(), [c.line() for c in checks]
    v = _by_name(checks)
    for name in ("signature", "nonce", "state", "forensics", "tpm-quote", "tpm-pcrs",
                 "tpm-aggregate", "aggregate", "model-digest"):
        assert v[name].status == "PASS", name
    # The same AK comes back after a restart of the link (primary key from a template).
    with TpmLink(swtpm.tcti) as again:
        assert load_ak(again.ak_public_pem(), "ak").public_numbers() == ak.public_numbers()


def test_quote_failures_are_specific(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    dt, tma, model, pub = _domain_with_model(tmp_path, swtpm.tcti)
    try:
        doc = dt.attest(tma, NONCE)
        ak = _ak(dt)
    finally:
        dt.close()
    tma_key = load_tma_key(tmp_path / "tma")
    key = load_public_key(pub)

    # A different AK.
    other_ak = ec.generate_private_key(ec.SECP256R1()).public_key()
    checks = Verifier(key, model, ak=other_ak).verify(doc, nonce=NONCE)
    assert _failed(checks) == {"tpm-quote"}
    assert "does not verify under the given AK" in _by_name(checks)["tpm-quote"].reason

    # A reported PCR value changed (and the document re-signed by a compromised TMA key).
    forged = {**doc, "tpm": {**doc["tpm"], "pcrs": {**doc["tpm"]["pcrs"], "3": "11" * 32}}}
    checks = Verifier(key, model, ak=ak).verify(sign_document(forged, tma_key), nonce=NONCE)
    assert _failed(checks) == {"tpm-pcrs"}

    # A genuine quote paired with another state value (compromised TMA key).
    forged = sign_document({**doc, "state": "22" * 32}, tma_key)
    checks = Verifier(key, model, ak=ak).verify(forged, nonce=NONCE)
    assert _failed(checks) == {"state", "tpm-quote"}
    assert "qualifying data" in _by_name(checks)["tpm-quote"].reason

    # A quote that is not (canonical) Base64: the document is malformed, no check runs.
    forged = sign_document({**doc, "tpm": {**doc["tpm"], "quote": "%%"}}, tma_key)
    checks = Verifier(key, model, ak=ak).verify(forged)
    assert [c.name for c in checks] == ["format"]
    assert "canonical Base64" in checks[0].reason

    # Asking for the hardware check of a document without a quote.
    no_tpm = sign_document({**doc, "tpm": None}, tma_key)
    checks = Verifier(key, model, ak=ak).verify(no_tpm, nonce=NONCE)
    assert _failed(checks) == {"tpm-quote"}
    # Without --tpm-ak the quote is reported as not checked, not as passed.
    assert _by_name(Verifier(key, model).verify(doc))["tpm-quote"].status == "SKIP"


def test_model_from_other_platform_state_fails(fresh_swtpm: SoftwareTpm, tmp_path: Path) -> None:
    """Learned before a platform change (PCR 7 extended), attested after it."""
    dt, _tma, model, pub = _domain_with_model(tmp_path, fresh_swtpm.tcti)
    dt.close()
    with TpmLink(fresh_swtpm.tcti) as tpm:
        tpm.extend(7, hashlib.sha256(b"new boot policy").digest())
    key = tmp_path / "tma"
    dt2 = DomainTrust("web", TrustOptions(tcti=fresh_swtpm.tcti, base=BASE, tma_key=key))
    try:
        tma2 = TMA()
        dt2.prepare(tma2, model)
        assert dt2.aggregate_mismatch() is not None
        doc = dt2.attest(tma2, NONCE)
        ak = _ak(dt2)
    finally:
        dt2.close()
    checks = Verifier(load_public_key(pub), model, ak=ak).verify(doc, nonce=NONCE)
    assert _failed(checks) == {"aggregate", "state"}
    assert _by_name(checks)["tpm-aggregate"].status == "PASS"


def test_state_pcr_extend_and_log(fresh_swtpm: SoftwareTpm, tmp_path: Path) -> None:
    dt, tma, model, pub = _domain_with_model(tmp_path, fresh_swtpm.tcti, pcr=11)
    try:
        before = dt.tpm.pcr_read([11])[11] if dt.tpm else ZERO
        doc = dt.attest(tma, NONCE, extend=True)
        after = dt.tpm.pcr_read([11])[11] if dt.tpm else ZERO
        assert after == software_extend(before, bytes.fromhex(doc["state"]))
        assert doc["pcr_log"] == {"pcr": 11, "initial": before.hex(),
                                  "extends": [doc["state"]]}
        assert "11" in doc["tpm"]["pcrs"]
        ak = _ak(dt)
        checks = Verifier(load_public_key(pub), model, ak=ak).verify(doc, nonce=NONCE)
        assert _failed(checks) == set(), [c.line() for c in checks]
        assert _by_name(checks)["pcr-log"].status == "PASS"
        # Someone else extends the domain's PCR: the log no longer replays.
        assert dt.tpm is not None
        dt.tpm.extend(11, hashlib.sha256(b"intruder").digest())
        doc2 = dt.attest(tma, NONCE)
        checks = Verifier(load_public_key(pub), model, ak=ak).verify(doc2, nonce=NONCE)
        assert _failed(checks) == {"pcr-log"}
        # End of workload: one more extend of the final state.
        final = dt.finish(tma)
        assert final is not None and final != after
    finally:
        dt.close()


def test_ak_pem_is_p256(swtpm: SoftwareTpm) -> None:
    with TpmLink(swtpm.tcti) as tpm:
        key = serialization.load_pem_public_key(tpm.ak_public_pem())
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
