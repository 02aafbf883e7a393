"""Fleet verifier throughput on PostgreSQL: simulated hosts push signed attestations
to one, then two, verifier processes; appraisals per second and latency.

Usage: python bench/fleet_bench.py [--hosts 1000] [--domains 10] [--rounds 2]
(needs root or a PostgreSQL 15 server; uses tests/fleet/services.py to start it).

A round is every host pushing every domain once (a 60 s push interval compressed
into as little time as the machine allows). The load generator runs on the same
machine (it signs every document, as the domains would): its CPU use is charged
against the verifiers', so the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from sqlalchemy import func, select
from tests.fleet.material import Material
from tests.fleet.services import Postgres, verifier, wait_for

from semtrust.fleet.client import HostClient
from semtrust.fleet.db import appraisals, open_engine

TOKEN = "bench-operator-token-0123456789"


def enroll(url: str, m: Material, hosts: list[str]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=60) as c:
        for h in hosts:
            pub = m.host(h).read_text()
            r = c.post(f"{url}/api/v1/hosts", json={"name": h, "tma_key": pub}, headers=headers)
            r.raise_for_status()
        r = c.post(f"{url}/api/v1/workloads", headers=headers,
                   json={"name": "web", "signing_key": (m.tmp / "model.pub").read_text()})
        r.raise_for_status()
        r = c.post(f"{url}/api/v1/workloads/web/models", headers=headers,
                   json={"model": m.model_text})
        r.raise_for_status()


def run(n_verifiers: int, args: argparse.Namespace, pg: Postgres) -> dict[str, float]:
    db = pg.new_database()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    m = Material(tmp)
    hosts = [f"h{i:04d}" for i in range(args.hosts)]
    with verifier(db, tmp, token=TOKEN) as v1:
        enroll(v1.url, m, hosts)
        vs = [v1]
        extra = [verifier(db, tmp, token=TOKEN) for _ in range(n_verifiers - 1)]
        vs += [cm.__enter__() for cm in extra]
        try:
            clients = [HostClient(vs[i % len(vs)].url, h, m.host_keys[h], timeout=120)
                       for i, h in enumerate(hosts)]

            def push(c: HostClient) -> None:
                n = c.nonce()
                c.push(n, [m.doc(c.host, f"d{j}", n) for j in range(args.domains)])

            engine = open_engine(db)
            total = 0
            t0 = time.monotonic()
            with ThreadPoolExecutor(args.threads) as pool:
                for _ in range(args.rounds):
                    list(pool.map(push, clients))
                    total += len(clients) * args.domains
            t_pushed = time.monotonic() - t0

            def drained() -> bool:
                with engine.connect() as conn:
                    return conn.execute(select(func.count()).select_from(appraisals)
                                        .where(appraisals.c.state == "done")
                                        ).scalar_one() == total
            wait_for(drained, "queue drained", timeout=3600, every=0.05)
            elapsed = time.monotonic() - t0
            with engine.connect() as conn:
                lat = sorted(r[0] for r in conn.execute(
                    select(appraisals.c.appraised_at - appraisals.c.received_at)).all())
                first, last = conn.execute(select(func.min(appraisals.c.received_at),
                                                  func.max(appraisals.c.appraised_at))
                                           ).one()
            engine.dispose()
        finally:
            for cm in extra:
                cm.__exit__(None, None, None)
    return {"verifiers": n_verifiers, "documents": total, "push_s": t_pushed,
            "elapsed_s": elapsed, "per_s": total / (last - first),
            "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, len(lat) * 99 // 100)]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--domains", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    pg = Postgres()
    try:
        for n in (1, 2):
            r = run(n, args, pg)
            print(f"verifiers={r['verifiers']} documents={r['documents']} "
                  f"appraisals/s={r['per_s']:.0f} (pushing took {r['push_s']:.1f} s, "
                  f"drained after {r['elapsed_s']:.1f} s) latency p50={r['p50_ms']:.0f} ms "
                  f"p99={r['p99_ms']:.0f} ms", flush=True)
    finally:
        pg.close()


if __name__ == "__main__":
    main()
