"""Read-side queries shared by the JSON API and the web pages."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from semtrust.fleet.db import appraisals, domains, forensic_events, hosts, models, workloads

__all__ = ["domain_detail", "list_domains", "list_hosts", "list_workloads", "replica_groups"]


def _model_versions(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(models.c.digest, models.c.version, workloads.c.name)
                            .join(workloads, workloads.c.id == models.c.workload_id)).all()
    return {r.digest: f"{r.name} v{r.version}" for r in rows}


def list_hosts(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(hosts.c.name, hosts.c.key_id, hosts.c.enrolled_at,
                                   hosts.c.tpm_ak.is_not(None).label("tpm"))
                            .order_by(hosts.c.name)).all()
    return [{"name": r.name, "key_id": r.key_id, "enrolled_at": r.enrolled_at,
             "tpm": bool(r.tpm)} for r in rows]


def list_workloads(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        ws = conn.execute(select(workloads.c.id, workloads.c.name).order_by(workloads.c.name)
                          ).all()
        ms = conn.execute(select(models.c.workload_id, models.c.version, models.c.digest,
                                 models.c.points, models.c.uploaded_at)
                          .order_by(models.c.version)).all()
    return [{"name": w.name,
             "models": [{"version": m.version, "digest": m.digest, "points": m.points,
                         "uploaded_at": m.uploaded_at} for m in ms if m.workload_id == w.id]}
            for w in ws]


def _domain_row(r: Any, versions: dict[str, str]) -> dict[str, Any]:
    return {"host": r.host, "name": r.name, "status": r.status, "mode": r.mode,
            "model": versions.get(r.model_digest) if r.model_digest else None,
            "model_digest": r.model_digest, "state": r.state, "base": r.base,
            "forensics": r.forensics, "replica": r.replica,
            "last_attestation": r.last_attestation, "changed_at": r.changed_at,
            "reason": r.reason}


_DOMAIN_COLS = (domains.c.id, hosts.c.name.label("host"), domains.c.name, domains.c.status,
                domains.c.mode, domains.c.model_digest, domains.c.state, domains.c.base,
                domains.c.forensics, domains.c.replica, domains.c.last_attestation,
                domains.c.changed_at, domains.c.reason, domains.c.group_key)


def list_domains(engine: Engine, limit: int = 5000) -> list[dict[str, Any]]:
    versions = _model_versions(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(*_DOMAIN_COLS).join(hosts, hosts.c.id == domains.c.host_id)
                            .order_by(hosts.c.name, domains.c.name).limit(limit)).all()
    return [_domain_row(r, versions) for r in rows]


def domain_detail(engine: Engine, host: str, name: str, history: int = 50
                  ) -> dict[str, Any] | None:
    versions = _model_versions(engine)
    with engine.connect() as conn:
        r = conn.execute(select(*_DOMAIN_COLS).join(hosts, hosts.c.id == domains.c.host_id)
                         .where(hosts.c.name == host, domains.c.name == name)).first()
        if r is None:
            return None
        hist = conn.execute(select(appraisals.c.id, appraisals.c.received_at,
                                   appraisals.c.appraised_at, appraisals.c.state,
                                   appraisals.c.result, appraisals.c.checks)
                            .where(appraisals.c.domain_id == r.id)
                            .order_by(appraisals.c.id.desc()).limit(history)).all()
        events = conn.execute(select(forensic_events.c.seq, forensic_events.c.line,
                                     forensic_events.c.received_at)
                              .where(forensic_events.c.domain_id == r.id)
                              .order_by(forensic_events.c.seq.desc()).limit(200)).all()
        n_events = conn.execute(select(func.count()).select_from(forensic_events)
                                .where(forensic_events.c.domain_id == r.id)).scalar_one()
    out = _domain_row(r, versions)
    out["history"] = [{"id": h.id, "received_at": h.received_at,
                       "appraised_at": h.appraised_at, "result": h.result or h.state,
                       "checks": [{"name": c[0], "status": c[1], "reason": c[2]}
                                  for c in json.loads(h.checks or "[]")]} for h in hist]
    out["forensic_events"] = [{"seq": e.seq, "line": e.line, "received_at": e.received_at}
                              for e in events]
    out["forensic_events_stored"] = n_events
    return out


def replica_groups(engine: Engine) -> list[dict[str, Any]]:
    versions = _model_versions(engine)
    groups: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        rows = conn.execute(select(*_DOMAIN_COLS).join(hosts, hosts.c.id == domains.c.host_id)
                            .where(domains.c.group_key.is_not(None),
                                   domains.c.status != "stale")
                            .order_by(domains.c.group_key, hosts.c.name)).all()
    for r in rows:
        groups.setdefault(r.group_key, []).append(_domain_row(r, versions))
    return [{"group": k, "members": v, "odd": [f"{d['host']}/{d['name']}" for d in v
                                                if d["replica"] == "odd"]}
            for k, v in groups.items()]


def ago(t: float | None, now: float | None = None) -> str:
    """'12 s ago' for the pages."""
    if t is None:
        return "never"
    d = (time.time() if now is None else now) - t
    if d < 120:
        return f"{max(0, int(d))} s ago"
    if d < 7200:
        return f"{int(d // 60)} min ago"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))
