"""Two verifier processes on one PostgreSQL split the queue: every document is
appraised exactly once, by one of them."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import func, select

from semtrust.fleet.client import HostClient
from semtrust.fleet.db import appraisals, open_engine
from tests.fleet.material import Material
from tests.fleet.services import Postgres, verifier, wait_for
from tests.fleet.test_verifier_api import TOKEN, setup_fleet

HOSTS = 8
DOMAINS = 10
ROUNDS = 3


def _appraised(metrics: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("semtrust_appraisals_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_processes_share_the_queue(postgres: Postgres, tmp_path: Path) -> None:
    db = postgres.new_database()
    m = Material(tmp_path)
    with verifier(db, tmp_path, token=TOKEN) as a, verifier(db, tmp_path, token=TOKEN) as b:
        hosts = tuple(f"n{i}" for i in range(HOSTS))
        setup_fleet(a, m, tmp_path, hosts=hosts)
        clients = {h: HostClient((a if i % 2 else b).url, h, m.host_keys[h])
                   for i, h in enumerate(hosts)}
        for _ in range(ROUNDS):
            for h, c in clients.items():
                n = c.nonce()
                c.push(n, [m.doc(h, f"d{j}", n) for j in range(DOMAINS)])
        total = HOSTS * DOMAINS * ROUNDS
        engine = open_engine(db)
        try:
            def done() -> bool:
                with engine.connect() as conn:
                    return conn.execute(select(func.count()).select_from(appraisals)
                                        .where(appraisals.c.state == "done")
                                        ).scalar_one() == total
            wait_for(done, "every document appraised", timeout=120)
            with engine.connect() as conn:
                claims = dict(conn.execute(select(appraisals.c.claims, func.count())
                                           .group_by(appraisals.c.claims)).all())
                workers = {w for (w,) in conn.execute(select(appraisals.c.claimed_by)
                                                      .distinct()).all()}
        finally:
            engine.dispose()
        assert claims == {1: total}
        ids = {httpx.get(v.url + "/healthz").json()["worker"] for v in (a, b)}
        assert workers <= ids
        counted = sum(_appraised(httpx.get(v.url + "/metrics").text) for v in (a, b))
        assert counted == total
        doms = httpx.get(a.url + "/api/v1/domains").json()
        assert len(doms) == HOSTS * DOMAINS and {d["status"] for d in doms} == {"trusted"}


def _children(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(d.name))
    return found


def test_workers_share_one_socket_and_the_queue(postgres: Postgres, tmp_path: Path) -> None:
    """``serve --workers 2``: two processes behind one port, each appraising."""
    db = postgres.new_database()
    m = Material(tmp_path)
    with verifier(db, tmp_path, token=TOKEN, extra=("--workers", "2")) as v:
        hosts = tuple(f"w{i}" for i in range(4))
        setup_fleet(v, m, tmp_path, hosts=hosts)
        workers = [p for p in _children(v.proc.pid)
                   if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(workers) == 2
        for h in hosts:
            c = HostClient(v.url, h, m.host_keys[h])
            n = c.nonce()
            c.push(n, [m.doc(h, f"d{j}", n) for j in range(DOMAINS)])
        def all_trusted() -> bool:
            doms = httpx.get(v.url + "/api/v1/domains").json()
            return len(doms) == len(hosts) * DOMAINS and all(d["status"] == "trusted"
                                                              for d in doms)
        wait_for(all_trusted, "every domain appraised")
        engine = open_engine(db)
        try:
            with engine.connect() as conn:
                claims = dict(conn.execute(select(appraisals.c.claims, func.count())
                                           .group_by(appraisals.c.claims)).all())
        finally:
            engine.dispose()
        assert claims == {1: len(hosts) * DOMAINS}
