"""Prometheus metrics of one verifier process.

Counters and the latency histogram are this process's own; domains by status
and the queue depth are read from the shared database at scrape time, so every
verifier reports the same fleet-wide values.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from semtrust.fleet.db import appraisals, domains

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("pending", "trusted", "untrusted", "stale")


class _FleetCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_status = GaugeMetricFamily("semtrust_domains", "Domains by status",
                                      labels=["status"])
        depth = GaugeMetricFamily("semtrust_appraisal_queue_depth",
                                  "Attestations waiting for appraisal")
        try:
            with self.engine.connect() as conn:
                counts: dict[str, int] = dict(conn.execute(select(domains.c.status, func.count())
                                           .group_by(domains.c.status)).all())
                waiting = conn.execute(select(func.count()).select_from(appraisals)
                                       .where(appraisals.c.state == "queued")).scalar_one()
        except DBAPIError:
            return
        for s in STATUSES:
            by_status.add_metric([s], float(counts.get(s, 0)))
        depth.add_metric([], float(waiting))
        yield by_status
        yield depth


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.appraisals = Counter("semtrust_appraisals", "Appraisals by result",
                                  ["result"], registry=self.registry)
        self.latency = Histogram(
            "semtrust_appraisal_latency_seconds",
            "From receipt of an attestation to its stored result",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry)
        self.refused = Counter("semtrust_pushes_refused", "Refused pushes by HTTP status",
                               ["code"], registry=self.registry)
        self.registry.register(_FleetCollector(engine))

    def observe(self, result: str, seconds: float) -> None:
        self.appraisals.labels(result).inc()
        self.latency.observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)
