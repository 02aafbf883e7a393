"""What the verifier caches for speed never outlives what it was parsed from.

Parsed host keys, parsed models and the signature check done at intake are
reused by later requests and by the appraisal. These tests change the registry
underneath a warm verifier — a model removed, a host re-keyed, a workload's
signing key replaced, directly in the database as an operator would — and check
that the next appraisal and the next request see the change. They run on
SQLite and on PostgreSQL (the two code paths of the queue).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from semtrust.attest.attestation import key_id, public_pem
from semtrust.attest.verify import Verifier
from semtrust.fleet.appraise import Appraiser
from semtrust.fleet.auth import sign_request
from semtrust.fleet.db import appraisals, domains, hosts, models, open_engine, upgrade, workloads
from semtrust.fleet.registry import EMPTY_MODEL, FleetError, Registry, SignedRequest
from semtrust.model import signing
from tests.fleet.material import Material


@pytest.fixture
def fleet(db_url: str, tmp_path: Path) -> Iterator[tuple[Engine, Registry, Appraiser,
                                                          Material, list[dict[str, Any]]]]:
    engine = open_engine(db_url)
    upgrade(engine)
    m = Material(tmp_path)
    reg = Registry(engine)
    reg.enroll("h1", m.host("h1").read_text(), None)
    reg.add_workload("web", (tmp_path / "model.pub").read_text())
    reg.upload_model("web", m.model_text)
    events: list[dict[str, Any]] = []
    ap = Appraiser(engine, emit=events.append, observe=lambda result, seconds: None)
    try:
        yield engine, reg, ap, m, events
    finally:
        engine.dispose()


def push(reg: Registry, m: Material, host: str, *names: str, **kw: Any) -> list[int]:
    h = reg.host(host)
    assert h is not None
    nonce = reg.issue_nonce(h)["nonce"]
    return reg.accept(h, nonce, [m.doc(host, n, nonce, **kw) for n in names], {})


def appraise_all(ap: Appraiser) -> None:
    while ap.run_once():
        pass


def checks(engine: Engine, aid: int) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        row = conn.execute(select(appraisals.c.checks, appraisals.c.state)
                           .where(appraisals.c.id == aid)).one()
    assert row.state == "done"
    return {name: (status, reason) for name, status, reason in json.loads(row.checks)}


def status(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(domains.c.status)
                                .where(domains.c.name == name)).scalar_one())


def test_intake_signature_is_not_repeated_but_is_the_same_check(fleet: Any) -> None:
    engine, reg, ap, m, _ = fleet
    (aid,) = push(reg, m, "h1", "web-1")
    appraise_all(ap)
    c = checks(engine, aid)
    assert c["signature"] == ("PASS", "verified at intake under this key")
    assert status(engine, "web-1") == "trusted"
    # A queued document without an intake record is verified in full: the stored text
    # altered after signing fails exactly as `semtrust verify` would.
    (aid,) = push(reg, m, "h1", "web-1")
    with engine.begin() as conn:
        doc = json.loads(conn.execute(select(appraisals.c.doc)
                                      .where(appraisals.c.id == aid)).scalar_one())
        doc["forensics"] = 0 if doc["forensics"] else 1
        conn.execute(update(appraisals).where(appraisals.c.id == aid)
                     .values(doc=json.dumps(doc), intake_key=None))
    appraise_all(ap)
    assert checks(engine, aid)["signature"][0] == "FAIL"
    assert status(engine, "web-1") == "untrusted"


def test_removed_model_is_not_used_from_the_cache(fleet: Any) -> None:
    engine, reg, ap, m, _ = fleet
    push(reg, m, "h1", "web-1")
    appraise_all(ap)
    assert status(engine, "web-1") == "trusted"
    with engine.begin() as conn:
        conn.execute(delete(models).where(models.c.digest == m.model_digest))
    (aid,) = push(reg, m, "h1", "web-1")
    appraise_all(ap)
    c = checks(engine, aid)
    assert c["registry"][0] == "FAIL" and "not registered" in c["registry"][1]
    assert status(engine, "web-1") == "untrusted"


def test_replaced_signing_key_reparses_the_model(fleet: Any) -> None:
    engine, reg, ap, m, _ = fleet
    push(reg, m, "h1", "web-1")
    appraise_all(ap)
    assert status(engine, "web-1") == "trusted"
    other = signing.public_pem(signing.generate_key("rsa")).decode("ascii")
    with engine.begin() as conn:
        conn.execute(update(workloads).values(signing_key=other))
    (aid,) = push(reg, m, "h1", "web-1")
    appraise_all(ap)
    c = checks(engine, aid)
    assert c["registry"][0] == "FAIL", c
    assert status(engine, "web-1") == "untrusted"


def test_rekeyed_host_old_key_is_refused_and_queued_documents_rechecked(fleet: Any) -> None:
    engine, reg, ap, m, _ = fleet
    push(reg, m, "h1", "web-1")
    appraise_all(ap)
    (queued,) = push(reg, m, "h1", "web-1")  # verified at intake under the old key
    old = m.host_keys["h1"]
    new = ed25519.Ed25519PrivateKey.generate()
    with engine.begin() as conn:
        conn.execute(update(hosts).where(hosts.c.name == "h1")
                     .values(tma_key=public_pem(new), key_id=key_id(new)))
    appraise_all(ap)
    c = checks(engine, queued)
    assert c["signature"][0] == "FAIL" and "another key" in c["signature"][1]
    # A request signed with the old key is refused although its parse was cached.
    h = sign_request(old, "POST", "/api/v1/nonce", "h1", b"")
    req = SignedRequest("POST", "/api/v1/nonce", "h1", h["X-Semtrust-Date"],
                        h["X-Semtrust-Signature"], b"")
    with pytest.raises(FleetError) as exc:
        reg.signed_nonce(req)
    assert exc.value.status == 401
    # The new key works at once, for requests and for appraisal.
    m.host_keys["h1"] = new
    h = sign_request(new, "POST", "/api/v1/nonce", "h1", b"")
    assert reg.signed_nonce(SignedRequest("POST", "/api/v1/nonce", "h1",
                                          h["X-Semtrust-Date"], h["X-Semtrust-Signature"],
                                          b""))["nonce"]
    (aid,) = push(reg, m, "h1", "web-1")
    appraise_all(ap)
    assert checks(engine, aid)["signature"][0] == "PASS"
    assert status(engine, "web-1") == "trusted"


def test_replicas_flagged_in_bulk_with_alerts_for_odd_ones(fleet: Any) -> None:
    engine, reg, ap, m, events = fleet
    for h in ("h2", "h3", "h4"):
        reg.enroll(h, m.host(h).read_text(), None)
    other = [bytes(32)]
    for h in ("h1", "h2", "h3"):
        push(reg, m, h, "batch", sealed=False)
    push(reg, m, "h4", "batch", sealed=False, points=other)
    appraise_all(ap)
    ap.flush_replicas()
    with engine.connect() as conn:
        flags = dict(conn.execute(select(hosts.c.name, domains.c.replica)
                                  .join(hosts, hosts.c.id == domains.c.host_id)).all())
    assert flags == {"h1": "ok", "h2": "ok", "h3": "ok", "h4": "odd"}
    odd = [e for e in events if e["type"] == "replica"]
    assert [(e["host"], e["replica"], e["previous"]) for e in odd] == [("h4", "odd", "")]
    # h1 moves to the odd state: two against two, no majority, everybody odd.
    seen = len(events)
    push(reg, m, "h1", "batch", sealed=False, points=other)
    appraise_all(ap)
    ap.flush_replicas()
    with engine.connect() as conn:
        assert set(conn.execute(select(domains.c.replica)).scalars()) == {"odd"}
    moved = {(e["host"], e["previous"]) for e in events[seen:] if e["type"] == "replica"}
    assert moved == {("h1", "ok"), ("h2", "ok"), ("h3", "ok")}


def test_verifier_skips_only_the_signature_of_its_own_key() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    m = Material.__new__(Material)
    m.host_keys = {"h": key}
    m.model_digest = "00" * 32
    doc = m.doc("h", "d", "ab" * 16, sealed=False)
    doc["forensics"] = 1  # altered after signing
    v = Verifier(key.public_key(), EMPTY_MODEL)
    by = {c.name: c.status for c in v.verify(doc, signature_verified_by=v.key_id)}
    assert by["signature"] == "PASS"
    other = key_id(ed25519.Ed25519PrivateKey.generate())
    for claim in (other, None):
        by = {c.name: c.status for c in v.verify(doc, signature_verified_by=claim)}
        assert by["signature"] == "FAIL"
