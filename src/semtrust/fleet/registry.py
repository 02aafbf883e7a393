"""Registry: hosts and their keys, workloads and their signed model versions, nonces,
and the intake of pushed attestations.

Everything a push could get wrong is checked here, before anything is stored:
the nonce must have been issued to this host, be unused and unexpired; every
document must carry that nonce and verify under the host's enrolled key (the
signature check is the one in :mod:`semtrust.attest.verify`). A refused push
leaves the database as it was.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from semtrust.attest.attestation import key_id, parse_public_key
from semtrust.attest.verify import Verifier, load_ak
from semtrust.errors import InputError, SemtrustError
from semtrust.fleet.auth import verify_request
from semtrust.fleet.db import appraisals, domains, forensic_events, hosts, models, nonces, workloads
from semtrust.fleet.keys import LRU, ParsedKeys
from semtrust.model import signing
from semtrust.model.modelfile import Model, parse_model

__all__ = ["EMPTY_MODEL", "FleetError", "Host", "Registry", "SignedRequest"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_DOCS = 1000
MAX_EVENTS = 200
MAX_EVENT_LINE = 8192
#: Stands in for a model where the domain has none (learning) or the verifier
#: only checks format, signature and nonce at intake.
EMPTY_MODEL = Model(source="<none>")


# The statements of every agent request, built once (building one costs more than
# executing it).
_HOST = select(hosts.c.id, hosts.c.name, hosts.c.tma_key, hosts.c.tpm_ak).where(
    hosts.c.name == bindparam("name"))
_ISSUE = insert(nonces)
_USE_NONCE = update(nonces).where(
    nonces.c.value == bindparam("v"), nonces.c.host_id == bindparam("h"),
    nonces.c.used_at.is_(None), nonces.c.issued_at > bindparam("cut")
).values(used_at=bindparam("now"))
_DOMAINS = select(domains.c.name, domains.c.id).where(
    domains.c.host_id == bindparam("h"), domains.c.name.in_(bindparam("names", expanding=True)))
_QUEUE = insert(appraisals).returning(appraisals.c.id, sort_by_parameter_order=True)


class FleetError(SemtrustError):
    """A request the verifier refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Host:
    id: int
    name: str
    tma_key: str
    tpm_ak: str | None


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What authenticates an agent's request (see :mod:`semtrust.fleet.auth`)."""

    method: str
    path: str
    host: str
    date: str
    signature: str
    body: bytes


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or NAME.fullmatch(value) is None:
        raise FleetError(400, f"{what} must be 1-64 characters [A-Za-z0-9._-], "
                              "starting with a letter or digit")
    return value


class Registry:
    def __init__(self, engine: Engine, *, nonce_ttl: float = 300.0,
                 keys: ParsedKeys | None = None) -> None:
        self.engine = engine
        self.nonce_ttl = nonce_ttl
        self.keys = keys or ParsedKeys()
        # Intake checks format, nonce and signature only; one verifier per host key text.
        self._intake: LRU[str, Verifier] = LRU(20000)

    # -- hosts -------------------------------------------------------------------
    def enroll(self, name: str, tma_key: str, tpm_ak: str | None) -> dict[str, Any]:
        check_name(name, "host name")
        try:
            pub = parse_public_key(tma_key.encode(), "tma_key")
            if tpm_ak is not None:
                load_ak(tpm_ak.encode(), "tpm_ak")
        except InputError as exc:
            raise FleetError(400, str(exc)) from None
        if b"PRIVATE" in tma_key.encode():
            raise FleetError(400, "tma_key: send the public key, never the private one")
        kid = key_id(pub)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(hosts).values(name=name, tma_key=tma_key, key_id=kid,
                                                  tpm_ak=tpm_ak, enrolled_at=time.time()))
        except IntegrityError:
            raise FleetError(409, f"host {name!r} or its key is already enrolled") from None
        return {"host": name, "key_id": kid}

    def host(self, name: str, conn: Connection | None = None) -> Host | None:
        if conn is None:
            with self.engine.connect() as tx:
                return self.host(name, tx)
        row = conn.execute(_HOST, {"name": name}).first()
        return None if row is None else Host(row.id, row.name, row.tma_key, row.tpm_ak)

    def authenticate(self, conn: Connection, req: SignedRequest) -> Host:
        """The enrolled host that signed ``req``; FleetError 401 otherwise.

        The host's key is read from the database for every request (a re-keyed host
        is never checked against its old key); only its parse is cached.
        """
        host = self.host(req.host, conn)
        if host is None:
            raise FleetError(401, f"host {req.host[:64]!r} is not enrolled")
        try:
            key = self.keys.tma_key(host.tma_key, f"host {host.name}")
        except InputError as exc:
            raise FleetError(500, str(exc)) from None
        why = verify_request(key, req.method, req.path, req.host, req.date, req.signature,
                             req.body)
        if why is not None:
            raise FleetError(401, why)
        return host

    def _intake_verifier(self, host: Host) -> Verifier:
        def make() -> Verifier:
            return Verifier(self.keys.tma_key(host.tma_key, f"host {host.name}"), EMPTY_MODEL)
        return self._intake.get(host.tma_key, make)

    # -- workloads and models ------------------------------------------------------
    def add_workload(self, name: str, signing_key: str) -> dict[str, Any]:
        check_name(name, "workload name")
        try:
            key = signing.load_public_key_pem(signing_key.encode())
        except SemtrustError as exc:
            raise FleetError(400, f"signing_key: {exc}") from None
        if b"PRIVATE" in signing_key.encode():
            raise FleetError(400, "signing_key: send the public key, never the private one")
        pem = signing.public_pem(key).decode("ascii")
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(workloads).values(name=name, signing_key=pem,
                                                      created_at=time.time()))
        except IntegrityError:
            raise FleetError(409, f"workload {name!r} exists (its signing key is pinned)") \
                from None
        return {"workload": name}

    def upload_model(self, workload: str, body: str) -> dict[str, Any]:
        """Store a new version; it must be signed by the workload's pinned key."""
        with self.engine.begin() as conn:
            w = conn.execute(select(workloads.c.id, workloads.c.signing_key)
                             .where(workloads.c.name == workload)).first()
            if w is None:
                raise FleetError(404, f"no workload {workload!r}")
            try:
                model = parse_model(body.encode(), source="model",
                                    key_pem=w.signing_key.encode())
            except InputError as exc:
                raise FleetError(400, str(exc)) from None
            if not model.sealed:
                raise FleetError(400, "model: not sealed (appraisal needs a sealed model)")
            digest = model.digest.hex()
            latest = conn.execute(select(func.max(models.c.version))
                                  .where(models.c.workload_id == w.id)).scalar()
            version = int(latest or 0) + 1
            try:
                with conn.begin_nested():
                    conn.execute(insert(models).values(
                        workload_id=w.id, version=version, digest=digest, body=body,
                        points=len(set(model.points)), uploaded_at=time.time()))
            except IntegrityError:
                raise FleetError(409, f"model {digest[:16]}… is already registered") from None
        return {"workload": workload, "version": version, "digest": digest}

    # -- nonces and pushes -------------------------------------------------------------
    def issue_nonce(self, host: Host, conn: Connection | None = None) -> dict[str, Any]:
        if conn is None:
            with self.engine.begin() as tx:
                return self.issue_nonce(host, tx)
        value = secrets.token_hex(16)
        conn.execute(_ISSUE, {"value": value, "host_id": host.id, "issued_at": time.time()})
        return {"nonce": value, "expires_in": self.nonce_ttl}

    def signed_nonce(self, req: SignedRequest) -> dict[str, Any]:
        """Authenticate and issue, on one connection. Each statement commits alone (one
        read, then one insert): no BEGIN and COMMIT round trips."""
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            return self.issue_nonce(self.authenticate(conn, req), conn)

    def signed_push(self, req: SignedRequest,
                    parse: Callable[[bytes], tuple[str, Sequence[Mapping[str, Any]],
                                                   Mapping[str, Mapping[str, Any]]]]
                    ) -> list[int]:
        """Authenticate, parse the body with ``parse`` and accept, on one connection."""
        with self.engine.begin() as conn:
            host = self.authenticate(conn, req)
            nonce, docs, events = parse(req.body)
            return self.accept(host, nonce, docs, events, conn)

    def accept(self, host: Host, nonce: str, docs: Sequence[Mapping[str, Any]],
               events: Mapping[str, Mapping[str, Any]],
               conn: Connection | None = None) -> list[int]:
        """Queue the documents for appraisal; FleetError (nothing stored) if any is bad.

        Each queued document records the key_id of the enrolled key its signature
        verified under, so the appraisal need not verify it again while the host
        keeps that key (see :meth:`semtrust.attest.verify.Verifier.verify`).
        """
        if conn is None:
            with self.engine.begin() as tx:
                return self.accept(host, nonce, docs, events, tx)
        if not docs:
            raise FleetError(400, "attestations: empty list")
        if len(docs) > MAX_DOCS:
            raise FleetError(413, f"attestations: more than {MAX_DOCS} in one push")
        try:
            intake = self._intake_verifier(host)
        except InputError as exc:
            raise FleetError(500, str(exc)) from None
        try:
            nonce_bytes = bytes.fromhex(nonce)
        except ValueError:
            raise FleetError(400, "nonce: not hex") from None
        seen: set[str] = set()
        for i, doc in enumerate(docs):
            for c in intake.verify(doc, nonce=nonce_bytes):
                if c.name in ("format", "signature", "nonce") and c.failed:
                    status = {"format": 400, "signature": 403, "nonce": 409}[c.name]
                    raise FleetError(status, f"attestation {i}: {c.name}: {c.reason}", index=i)
            name = check_name(doc["domain"], f"attestation {i}: domain")
            if name in seen:
                raise FleetError(400, f"attestation {i}: domain {name!r} twice in one push",
                                 index=i)
            seen.add(name)
        now = time.time()
        used = conn.execute(_USE_NONCE, {"v": nonce, "h": host.id, "now": now,
                                         "cut": now - self.nonce_ttl}).rowcount
        if used != 1:
            raise FleetError(409, "nonce: not issued to this host, already used or expired "
                                  "(a replayed attestation?)")
        known = self._domain_ids(conn, host.id, seen, now)
        rows = [{"domain_id": known[str(doc["domain"])], "nonce": nonce,
                 "doc": json.dumps(doc, separators=(",", ":")), "received_at": now,
                 "state": "queued", "claims": 0, "intake_key": intake.key_id}
                for doc in docs]
        ids = list(conn.execute(_QUEUE, rows).scalars())
        for name, ev in events.items():
            if name not in known:
                raise FleetError(400, f"forensics: domain {name[:64]!r} has no attestation "
                                      "in this push")
            self._events(conn, known[name], ev, now)
        return ids

    @staticmethod
    def _domain_ids(conn: Connection, host_id: int, names: set[str], now: float
                    ) -> dict[str, int]:
        """Ids of the host's domains ``names``, created where new (two statements; a
        domain another verifier creates at the same moment is simply found)."""
        def lookup() -> dict[str, int]:
            return {str(n): int(i) for n, i in conn.execute(
                _DOMAINS, {"h": host_id, "names": sorted(names)}).all()}
        known = lookup()
        missing = sorted(names - set(known))
        if not missing:
            return known
        maker = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(maker(domains).on_conflict_do_nothing(
            index_elements=[domains.c.host_id, domains.c.name]),
            [{"host_id": host_id, "name": n, "status": "pending", "forensics": 0,
              "replica": "", "last_appraisal_id": 0, "reason": "", "changed_at": now}
             for n in missing])
        return lookup()

    @staticmethod
    def _events(conn: Connection, domain_id: int, ev: Mapping[str, Any] | None,
                now: float) -> None:
        """Forensic event lines the agent read from the domain (context, not signed)."""
        if ev is None:
            return
        first, lines = ev.get("from"), ev.get("events")
        if not isinstance(first, int) or first < 0 or not isinstance(lines, list):
            raise FleetError(400, "forensics: needs 'from' (index) and 'events' (list)")
        if len(lines) > MAX_EVENTS:
            raise FleetError(413, f"forensics: more than {MAX_EVENTS} events in one push")
        top = conn.execute(select(func.max(forensic_events.c.seq))
                           .where(forensic_events.c.domain_id == domain_id)).scalar()
        for i, line in enumerate(lines):
            if not isinstance(line, str) or len(line) > MAX_EVENT_LINE:
                raise FleetError(400, f"forensics: event {i} is not a string of at most "
                                      f"{MAX_EVENT_LINE} characters")
            seq = first + i
            if top is None or seq > top:
                conn.execute(insert(forensic_events).values(
                    domain_id=domain_id, seq=seq, line=line, received_at=now))
