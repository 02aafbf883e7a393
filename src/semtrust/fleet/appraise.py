"""The appraisal queue and each domain's status.

Pushed documents wait in ``appraisals`` (state ``queued``). Any number of
verifier processes claim batches with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL (SQLite serialises writers instead), appraise them with
:class:`semtrust.attest.verify.Verifier` — the checks of ``semtrust verify`` —
and store the result in the same transaction that marks them done: a verifier
that dies mid-batch rolls back and another one takes the batch; none is
appraised twice.

Status: *trusted* when no check fails, *untrusted* otherwise, *stale* when no
fresh attestation arrived within the deadline. Replicas — domains with the same
model and base, or for learning domains the same name and base — must report
the same state; the minority is flagged ``odd``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, and_, bindparam, case, func, literal, or_, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from semtrust.attest.verify import Check, ModelLike
from semtrust.errors import SemtrustError
from semtrust.fleet.db import appraisals, domains, hosts, models, workloads
from semtrust.fleet.keys import LRU, ParsedKeys
from semtrust.fleet.registry import EMPTY_MODEL
from semtrust.model.modelfile import parse_model

__all__ = ["Appraiser", "Outcome", "group_key", "replica_flags"]

log = logging.getLogger("semtrust.fleet.appraise")
Emit = Callable[[dict[str, Any]], None]
Observe = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class Outcome:
    trusted: bool
    checks: list[Check]
    model_version: str | None

    @property
    def reason(self) -> str:
        return "; ".join(c.line() for c in self.checks if c.failed)


def group_key(doc: Mapping[str, Any], name: str) -> str:
    """Replicas: same sealed model and base; learning domains: same name and base."""
    md = doc.get("model_digest")
    if isinstance(md, str):
        return f"m:{md[:64]}:{str(doc.get('base'))[:64]}"
    return f"l:{name}:{str(doc.get('base'))[:64]}"


def majority(counts: Mapping[str, int]) -> str | None:
    """The state more than half of a group reports, if any."""
    total = sum(counts.values())
    for state, n in counts.items():
        if n * 2 > total:
            return state
    return None


def replica_flags(states: Mapping[int, str]) -> dict[int, str]:
    """Per domain: ``ok`` with the strict majority state, ``odd`` otherwise, ``alone``."""
    if len(states) < 2:
        return dict.fromkeys(states, "alone")
    top = majority(Counter(states.values()))
    return {d: "ok" if s == top else "odd" for d, s in states.items()}


def _flag_expression(counts: Mapping[str, int], state: Any) -> Any:
    """SQL for :func:`replica_flags` of one group, given its state counts."""
    if sum(counts.values()) < 2:
        return literal("alone")
    top = majority(counts)
    if top is None:
        return literal("odd")
    return case((state == top, literal("ok")), else_=literal("odd"))


#: The columns a new result sets on its domain, with their PostgreSQL types.
_DOMAIN_COLS = (("did", "integer"), ("mode", "varchar"), ("model_digest", "varchar"),
                ("base", "varchar"), ("state", "varchar"), ("forensics", "integer"),
                ("group_key", "varchar"), ("last_attestation", "float8"),
                ("last_appraisal_id", "integer"), ("reason", "text"), ("status", "varchar"),
                ("changed_at", "float8"))


class Appraiser:
    def __init__(self, engine: Engine, *, emit: Emit, observe: Observe,
                 stale_after: float = 180.0, batch: int = 64,
                 keys: ParsedKeys | None = None) -> None:
        self.engine = engine
        self.keys = keys or ParsedKeys()
        self.postgres = engine.dialect.name == "postgresql"
        self.emit = emit
        self.observe = observe
        self.stale_after = stale_after
        self.batch = batch
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.wake = threading.Event()
        self._stop = threading.Event()
        # Parsed models by (digest, the workload's pinned signing key).
        self._models: LRU[tuple[str, str], ModelLike] = LRU(256)
        self._threads: list[threading.Thread] = []
        self.db_ok = True
        # Replica groups to compare again; done at most once a second per group, since
        # a group may hold thousands of domains.
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()

    # -- background loops ------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._work_loop, "appraise"), (self._sweep_loop, "stale")):
            t = threading.Thread(target=target, name=f"semtrust-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        for t in self._threads:
            t.join(timeout=10)

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.run_once()
                self.db_ok = True
            except DBAPIError:
                self.db_ok = False
                n = 0
                self._stop.wait(1.0)
            except Exception:  # keep the worker alive; the batch rolled back
                log.exception("appraisal batch failed")
                n = 0
                self._stop.wait(1.0)
            if n == 0:
                self.wake.wait(0.25)
                self.wake.clear()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sweep_stale()
                self.flush_replicas()
            except DBAPIError:
                self.db_ok = False
            except Exception:
                log.exception("stale sweep failed")

    def flush_replicas(self) -> None:
        with self._dirty_lock:
            groups, self._dirty = self._dirty, set()
        try:
            self.compare_replicas(groups)
        except DBAPIError:
            with self._dirty_lock:
                self._dirty |= groups
            raise

    # -- one batch ---------------------------------------------------------------------
    def run_once(self) -> int:
        """Claim, appraise and store one batch; the number of documents appraised.

        Statements are batched (one per table, not per document): a database round
        trip costs more than appraising a document.
        """
        changes: list[dict[str, Any]] = []
        groups: set[str] = set()
        with self.engine.begin() as conn:
            rows = self._claim(conn)
            if not rows:
                return 0
            docs = [json.loads(row.doc) for row in rows]
            registered = self._registered(conn, docs)
            latest: dict[int, tuple[int, float, dict[str, Any], Outcome]] = {}
            done: list[dict[str, Any]] = []
            for row, doc in zip(rows, docs, strict=True):
                try:
                    outcome = self._appraise(row, doc, registered)
                except DBAPIError:
                    raise
                except Exception as exc:  # one bad document must not stall the queue
                    log.exception("appraisal %d failed", row.id)
                    outcome = Outcome(False, [Check("appraisal", "FAIL",
                                                    f"verifier error: {exc}")], None)
                now = time.time()
                result = "trusted" if outcome.trusted else "untrusted"
                done.append({"aid": row.id, "appraised_at": now, "trusted": outcome.trusted,
                             "result": result,
                             "checks": json.dumps([[c.name, c.status, c.reason]
                                                   for c in outcome.checks])})
                self.observe(result, now - row.received_at)
                prev = latest.get(row.domain_id)
                if prev is None or prev[0] < row.id:
                    latest[row.domain_id] = (row.id, row.received_at, doc, outcome)
            self._finish(conn, done)
            changes = self._set_domains(conn, latest)
            groups = {group_key(doc, str(doc["domain"])) for _, _, doc, _ in latest.values()}
        for change in changes:
            self.emit(change)
        with self._dirty_lock:
            self._dirty |= groups
        return len(rows)

    _COLUMNS = (appraisals.c.id, appraisals.c.domain_id, appraisals.c.nonce, appraisals.c.doc,
                appraisals.c.received_at, appraisals.c.intake_key, domains.c.host_id,
                hosts.c.name.label("host"), hosts.c.tma_key, hosts.c.tpm_ak)

    def _claim(self, conn: Connection) -> list[Any]:
        """Lock a batch of queued documents with their host's current keys.

        PostgreSQL: one ``SELECT … FOR UPDATE SKIP LOCKED``; the rows stay locked,
        and skipped by every other verifier, until this transaction marks them done
        (or rolls back, when another takes them). SQLite has no row locks: the claim
        is an UPDATE, which takes the database's one write lock at once.
        """
        joined = (appraisals.join(domains, domains.c.id == appraisals.c.domain_id)
                  .join(hosts, hosts.c.id == domains.c.host_id))
        if self.postgres:
            return list(conn.execute(
                select(*self._COLUMNS).select_from(joined)
                .where(appraisals.c.state == "queued").order_by(appraisals.c.id)
                .limit(self.batch).with_for_update(of=appraisals, skip_locked=True)).all())
        pick = (select(appraisals.c.id).where(appraisals.c.state == "queued")
                .order_by(appraisals.c.id).limit(self.batch))
        claimed = conn.execute(
            update(appraisals).where(appraisals.c.id.in_(pick.scalar_subquery()))
            .values(state="claimed", claims=appraisals.c.claims + 1, claimed_by=self.worker,
                    claimed_at=time.time())
            .returning(appraisals.c.id)).scalars().all()
        if not claimed:
            return []
        return list(conn.execute(
            select(*self._COLUMNS).select_from(joined)
            .where(appraisals.c.id.in_(claimed)).order_by(appraisals.c.id)).all())

    # The batch travels as one JSON array (json_to_recordset): one statement, one
    # parameter, and no per-element quoting of array literals.
    _FINISH_PG = text(
        "UPDATE appraisals AS a SET state = 'done', appraised_at = v.appraised_at, "
        "trusted = v.trusted, result = v.result, checks = v.checks, claims = a.claims + 1, "
        "claimed_by = :worker, claimed_at = :claimed_at "
        "FROM json_to_recordset(CAST(:rows AS json)) AS v(aid integer, appraised_at float8, "
        "trusted boolean, result varchar, checks text) WHERE a.id = v.aid")

    def _finish(self, conn: Connection, done: list[dict[str, Any]]) -> None:
        """Store the results and mark the batch done: one statement on PostgreSQL."""
        if self.postgres:
            conn.execute(self._FINISH_PG, {"worker": self.worker, "claimed_at": time.time(),
                                           "rows": json.dumps(done)})
            return
        conn.execute(update(appraisals).where(appraisals.c.id == bindparam("aid"))
                     .values(state="done", appraised_at=bindparam("appraised_at"),
                             trusted=bindparam("trusted"), result=bindparam("result"),
                             checks=bindparam("checks")), done)

    def _registered(self, conn: Connection, docs: list[dict[str, Any]]
                    ) -> dict[str, tuple[ModelLike, object, str] | SemtrustError]:
        """The batch's models as registered now, parsed: digest -> (model, what names
        its text and signing key, version label), or why it no longer parses. A model
        no longer in the registry is absent."""
        digests = sorted({d for doc in docs if isinstance(d := doc.get("model_digest"), str)})
        if not digests:
            return {}
        out: dict[str, tuple[ModelLike, object, str] | SemtrustError] = {}
        for m in conn.execute(
                select(models.c.digest, models.c.version, workloads.c.name,
                       workloads.c.signing_key)
                .join(workloads, workloads.c.id == models.c.workload_id)
                .where(models.c.digest.in_(digests))).all():
            version = f"{m.name} v{m.version}"
            try:
                model = self._model(conn, m.digest, m.signing_key, version)
            except SemtrustError as exc:
                out[m.digest] = exc
                continue
            out[m.digest] = (model, (m.digest, m.signing_key), version)
        return out

    def _model(self, conn: Connection, digest: str, signing_key: str,
               source: str) -> ModelLike:
        """The registered model ``digest``, parsed once per pinned signing key (its
        signature is checked with that key; the digest fixes the text)."""
        def make() -> ModelLike:
            body = conn.execute(select(models.c.body)
                                .where(models.c.digest == digest)).scalar_one()
            return parse_model(body.encode(), source=source, key_pem=signing_key.encode())
        return self._models.get((digest, signing_key), make)

    def _appraise(self, row: Any, doc: dict[str, Any],
                  registered: Mapping[str, tuple[ModelLike, object, str] | SemtrustError]
                  ) -> Outcome:
        md = doc.get("model_digest")
        digest = md if isinstance(md, str) else None
        version: str | None = None
        model: ModelLike = EMPTY_MODEL
        model_key: object = None
        if digest is not None:
            reg = registered.get(digest)
            if reg is None:
                return Outcome(False, [Check("registry", "FAIL", f"model {digest[:16]}… is "
                                                                 "not registered with the "
                                                                 "verifier")], None)
            if isinstance(reg, SemtrustError):  # a registry entry no longer parses
                return Outcome(False, [Check("registry", "FAIL", str(reg))], None)
            model, model_key, version = reg
        try:
            v = self.keys.verifier(row.tma_key, row.tpm_ak, model_key, model,
                                   f"host {row.host}")
        except SemtrustError as exc:  # the enrolled key no longer parses
            return Outcome(False, [Check("registry", "FAIL", str(exc))], None)
        checks = v.verify(doc, nonce=bytes.fromhex(row.nonce),
                          signature_verified_by=row.intake_key)
        if digest is None:
            # A learning domain has no model to compare state and aggregate with; its
            # replicas are compared instead.
            checks = [Check(c.name, "SKIP", "learning domain: compared with its replicas")
                      if c.name in ("aggregate", "state") else c for c in checks]
        return Outcome(not any(c.failed for c in checks), checks, version)

    _DOMAINS_PG = text(
        "UPDATE domains AS d SET " + ", ".join(
            f"{c} = v.{c}" for c, _ in _DOMAIN_COLS if c not in ("did", "changed_at"))
        + ", changed_at = coalesce(v.changed_at, d.changed_at) "
        "FROM json_to_recordset(CAST(:rows AS json)) AS v("
        + ", ".join(f"{c} {t}" for c, t in _DOMAIN_COLS) + ") WHERE d.id = v.did")

    def _set_domains(self, conn: Connection,
                     latest: Mapping[int, tuple[int, float, dict[str, Any], Outcome]]
                     ) -> list[dict[str, Any]]:
        """Store each domain's newest result; the alert events of status changes."""
        cur = conn.execute(select(domains.c.id, domains.c.status, domains.c.name,
                                  domains.c.last_appraisal_id, hosts.c.name.label("host"))
                           .join(hosts, hosts.c.id == domains.c.host_id)
                           .where(domains.c.id.in_(sorted(latest))).order_by(domains.c.id)
                           .with_for_update(of=domains)).all()
        now = time.time()
        params: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        for d in cur:
            aid, received, doc, outcome = latest[d.id]
            if d.last_appraisal_id >= aid:
                continue  # a newer document was appraised already
            status = "trusted" if outcome.trusted else "untrusted"
            params.append({
                "did": d.id, "mode": str(doc["mode"])[:16], "model_digest": doc["model_digest"],
                "base": doc["base"], "state": doc["state"], "forensics": int(doc["forensics"]),
                "group_key": group_key(doc, d.name), "last_attestation": received,
                "last_appraisal_id": aid, "reason": outcome.reason, "status": status,
                "changed_at": now if status != d.status else None})
            if status != d.status:
                changes.append({"type": "status", "host": d.host, "domain": d.name,
                                "status": status, "previous": d.status, "time": now,
                                "reason": outcome.reason, "model": outcome.model_version,
                                "forensics": int(doc["forensics"])})
        if params and self.postgres:
            conn.execute(self._DOMAINS_PG, {"rows": json.dumps(params)})
        elif params:
            cols = tuple(c for c, _ in _DOMAIN_COLS if c not in ("did", "changed_at"))
            values: dict[str, Any] = {c: bindparam(c) for c in cols}
            values["changed_at"] = func.coalesce(bindparam("changed_at", type_=Float),
                                                 domains.c.changed_at)
            conn.execute(update(domains).where(domains.c.id == bindparam("did"))
                         .values(**values), params)
        return changes

    # -- replicas and staleness -----------------------------------------------------------
    def compare_replicas(self, keys: Iterable[str]) -> None:
        """Flag each group's members against its majority state.

        The database counts the states and returns only the members whose flag
        changes: a group can hold a whole fleet, and reading all its rows every
        second would cost more than appraising the documents that touched it.
        """
        state = func.coalesce(domains.c.state, "")
        for key in sorted(keys):
            changes = []
            with self.engine.begin() as conn:
                member = and_(domains.c.group_key == key, domains.c.status != "stale")
                counts = {str(st): int(n) for st, n in conn.execute(
                    select(state, func.count()).where(member).group_by(state)).all()}
                flag: Any = _flag_expression(counts, state)
                rows = conn.execute(
                    select(domains.c.id, domains.c.name, domains.c.replica,
                           flag.label("flag"), hosts.c.name.label("host"))
                    .join(hosts, hosts.c.id == domains.c.host_id)
                    .where(member, domains.c.replica != flag)
                    .order_by(domains.c.id)).all()
                # One UPDATE per kind of change (a new group flags all its members at once);
                # a member whose flag moved meanwhile is left to the next comparison.
                moves: dict[tuple[str, str], list[Any]] = {}
                for r in rows:
                    moves.setdefault((r.replica, r.flag), []).append(r)
                for (previous, flag), members in sorted(moves.items()):
                    changed = set(conn.execute(
                        update(domains).where(domains.c.id.in_([r.id for r in members]),
                                              domains.c.replica == previous)
                        .values(replica=flag).returning(domains.c.id)).scalars())
                    if flag != "odd" and previous != "odd":
                        continue
                    changes += [{"type": "replica", "host": r.host, "domain": r.name,
                                 "replica": flag, "previous": previous, "group": key,
                                 "time": time.time()} for r in members if r.id in changed]
            for change in changes:
                self.emit(change)

    def sweep_stale(self, now: float | None = None) -> int:
        """Mark domains without a fresh attestation stale; the number marked."""
        t = time.time() if now is None else now
        cut = t - self.stale_after
        marked = 0
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(domains.c.id, domains.c.status, domains.c.name, domains.c.group_key,
                       hosts.c.name.label("host"))
                .join(hosts, hosts.c.id == domains.c.host_id)
                .where(domains.c.status != "stale",
                       or_(domains.c.last_attestation < cut,
                           and_(domains.c.last_attestation.is_(None),
                                domains.c.changed_at < cut)))).all()
        groups = set()
        for r in rows:
            with self.engine.begin() as conn:
                n = conn.execute(update(domains).where(domains.c.id == r.id,
                                                       domains.c.status == r.status)
                                 .values(status="stale", changed_at=t, replica="",
                                         reason=f"no fresh attestation for "
                                                f"{self.stale_after:g} s")).rowcount
            if n == 1:
                marked += 1
                if r.group_key:
                    groups.add(r.group_key)
                self.emit({"type": "status", "host": r.host, "domain": r.name,
                           "status": "stale", "previous": r.status, "time": t,
                           "reason": f"no fresh attestation for {self.stale_after:g} s"})
        if groups:
            self.compare_replicas(groups)
        return marked
