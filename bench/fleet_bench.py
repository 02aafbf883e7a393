"""Fleet verifier capacity on PostgreSQL: simulated hosts push signed attestations to
one or two verifier processes; intake rate, appraisal rate, latency, CPU per document.

Usage (root or a PostgreSQL 15 server; tests/fleet/services.py starts the cluster):

    python bench/fleet_bench.py [--hosts 1000] [--domains 10] [--rounds 1]
        [--key-type ed25519|rsa] [--conns 8] [--order 1,2,1,2] [--rate DOCS_PER_S]
        [--pg-default | --pg-durable] [--verifier-arg ARG]... [--profile DIR] [--json]

A round is every host pushing every domain once: the fleet's 60 s push interval
compressed into as little time as the machine allows (a capacity test), or
paced at ``--rate`` documents per second. A warm-up round first creates the
domains (a running fleet's steady state). ``--profile`` needs ``py-spy`` on the
PATH (a developer tool, not a dependency).

The load generator is kept out of the verifiers' way as far as one machine
allows. Everything a host would compute — its signed nonce request, its
domains' signed attestations, the signed push request, down to the HTTP bytes —
is prepared before the timed windows. Two windows are timed: the nonce
requests of every host, then the pushes (the attestations carry the nonces just
issued). Requests go out over a few keep-alive connections per verifier
process from a minimal asyncio client (uvloop when installed) that writes the
prepared bytes and reads the status line and Content-Length body back.

Reported per run: intake rate (documents accepted per second of the push
window), appraisal rate (first to last stored result), sustained rate (first
receipt to last stored result), the rate over both windows, latency receipt ->
stored result (p50/p99) and the push round trip as the client saw it, CPU
seconds per document of the verifier processes, PostgreSQL and the load
generator (from /proc), and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import func, select
from tests.fleet.material import Material
from tests.fleet.services import Postgres, VerifierProcess, wait_for

from semtrust.attest.attestation import PrivateKey, public_pem
from semtrust.fleet.auth import sign_request
from semtrust.fleet.db import appraisals, domains, open_engine

TOKEN = "bench-operator-token-0123456789"
#: Settings for a throw-away bench cluster: nothing here survives a crash, and nothing
#: needs to. A production deployment decides these for itself (see bench/RESULTS.md).
BENCH_PG = ("-c synchronous_commit=off -c full_page_writes=off -c wal_level=minimal "
            "-c max_wal_senders=0 -c shared_buffers=256MB -c checkpoint_timeout=30min "
            "-c max_wal_size=4GB")
DURABLE_PG = "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ keys, cached
def host_keys(kind: str, n: int) -> list[PrivateKey]:
    """``n`` distinct host keys; RSA keys are slow to make, so they are kept in /tmp."""
    if kind == "ed25519":
        return [ed25519.Ed25519PrivateKey.generate() for _ in range(n)]
    cache = Path(tempfile.gettempdir()) / "semtrust-fleet-bench-rsa-keys"
    cache.mkdir(mode=0o700, exist_ok=True)
    keys: list[PrivateKey] = []
    for i in range(n):
        f = cache / f"{i}.pem"
        if f.exists():
            k = serialization.load_pem_private_key(f.read_bytes(), None)
            assert isinstance(k, rsa.RSAPrivateKey)
        else:
            k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            f.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        keys.append(k)
    return keys


# ------------------------------------------------------------------ a minimal client
def http_request(port: int, method: str, path: str, body: bytes,
                 headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             "Content-Type: application/json", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Reply:
    status: int
    body: bytes
    seconds: float


async def _connection(port: int, work: list[bytes], order: list[int],
                      replies: list[Reply | None], start: float, every: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while order:
            i = order.pop()
            if every:  # paced: request i is due at start + i * every
                delay = start + i * every - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            t = time.perf_counter()
            writer.write(work[i])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            replies[i] = Reply(status, body, time.perf_counter() - t)
    finally:
        writer.close()


async def _send_all(jobs: dict[int, list[tuple[int, bytes]]], conns: int, rate: float
                    ) -> dict[int, list[Reply]]:
    """Send each port's prepared requests over ``conns`` keep-alive connections, as
    fast as they are answered, or ``rate`` requests per second in all (0: unpaced)."""
    tasks = []
    out: dict[int, list[Reply | None]] = {}
    start = time.perf_counter()
    every = len(jobs) / rate if rate else 0.0
    for port, items in jobs.items():
        work = [b for _, b in items]
        order = list(range(len(work)))[::-1]
        out[port] = [None] * len(work)
        tasks += [_connection(port, work, order, out[port], start, every)
                  for _ in range(conns)]
    await asyncio.gather(*tasks)
    return {p: [r for r in rs if r is not None] for p, rs in out.items()}


def send_all(jobs: dict[int, list[tuple[int, bytes]]], conns: int, rate: float = 0.0
             ) -> dict[int, list[Reply]]:
    try:
        import uvloop

        return uvloop.run(_send_all(jobs, conns, rate))
    except ImportError:
        return asyncio.run(_send_all(jobs, conns, rate))


# ------------------------------------------------------------------ CPU accounting
def cpu_seconds(pids: list[int], children: bool = False) -> float:
    """CPU seconds of ``pids``; with ``children`` also of their exited, reaped children."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if children:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / CLK_TCK


def children(pid: int) -> list[int]:
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


def postgres_cpu(pg: Postgres) -> float:
    """The postmaster, every live backend and every backend that has exited (the pools
    open and close connections): the postmaster reaps them, so their CPU time is in
    its children's counters."""
    master = int((pg.data / "postmaster.pid").read_text().split()[0])
    live = children(master)
    return cpu_seconds([master], children=True) + cpu_seconds(live)


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ------------------------------------------------------------------ one run
def enroll(url: str, m: Material, names: list[str], keys: list[PrivateKey]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=60) as c:
        for name, k in zip(names, keys, strict=True):
            r = c.post(f"{url}/api/v1/hosts", json={"name": name, "tma_key": public_pem(k)},
                       headers=headers)
            r.raise_for_status()
        r = c.post(f"{url}/api/v1/workloads", headers=headers,
                   json={"name": "web", "signing_key": (m.tmp / "model.pub").read_text()})
        r.raise_for_status()
        r = c.post(f"{url}/api/v1/workloads/web/models", headers=headers,
                   json={"model": m.model_text})
        r.raise_for_status()


def pct(xs: list[float], p: int) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, len(s) * p // 100)]


def run(n_verifiers: int, args: argparse.Namespace, pg: Postgres,
        keys: list[PrivateKey]) -> dict[str, Any]:
    db = pg.new_database()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    m = Material(tmp)
    names = [f"h{i:04d}" for i in range(args.hosts)]
    for n, k in zip(names, keys, strict=True):
        m.host_keys[n] = k  # type: ignore[assignment]
    extra = tuple(args.verifier_arg)
    vs = [VerifierProcess(db, tmp, token=TOKEN, extra=extra) for _ in range(n_verifiers)]
    engine = open_engine(db)
    try:
        enroll(vs[0].url, m, names, keys)
        port_of = {n: vs[i % n_verifiers].port for i, n in enumerate(names)}
        total = args.hosts * args.domains * args.rounds

        def nonce_jobs(rounds: int) -> tuple[dict[int, list[tuple[int, bytes]]],
                                             dict[int, list[str]]]:
            """Signed nonce requests, per verifier port, and whose each one is."""
            jobs: dict[int, list[tuple[int, bytes]]] = {v.port: [] for v in vs}
            owners: dict[int, list[str]] = {v.port: [] for v in vs}
            for _ in range(rounds):
                for n in names:
                    hdr = sign_request(m.host_keys[n], "POST", "/api/v1/nonce", n, b"")
                    jobs[port_of[n]].append((0, http_request(port_of[n], "POST",
                                                             "/api/v1/nonce", b"", hdr)))
                    owners[port_of[n]].append(n)
            return jobs, owners

        def push_jobs(replies: dict[int, list[Reply]], owners: dict[int, list[str]]
                      ) -> dict[int, list[tuple[int, bytes]]]:
            """Every domain's attestation under its host's nonce, signed; the signed
            request around them."""
            jobs: dict[int, list[tuple[int, bytes]]] = {v.port: [] for v in vs}
            for port, rs in replies.items():
                for host, reply in zip(owners[port], rs, strict=True):
                    assert reply.status == 200, reply.body
                    nonce = json.loads(reply.body)["nonce"]
                    docs = [m.doc(host, f"d{j}", nonce) for j in range(args.domains)]
                    body = json.dumps({"nonce": nonce, "attestations": docs, "forensics": {}},
                                      separators=(",", ":")).encode()
                    hdr = sign_request(m.host_keys[host], "POST", "/api/v1/attestations",
                                       host, body)
                    jobs[port].append((0, http_request(port, "POST", "/api/v1/attestations",
                                                       body, hdr)))
            return jobs

        def queued() -> int:
            with engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(appraisals)
                                        .where(appraisals.c.state == "queued")).scalar_one())

        # Warm-up, not timed: the first push of each domain creates it; in a running
        # fleet every push after the first minute finds its domain.
        jobs, owners = nonce_jobs(1)
        send_all(push_jobs(send_all(jobs, args.conns), owners), args.conns)
        wait_for(lambda: queued() == 0, "warm-up appraised", timeout=3600, every=0.1)

        def unflagged() -> int:  # new domains get their first replica flag once
            with engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(domains)
                                        .where(domains.c.replica == "")).scalar_one())
        wait_for(lambda: unflagged() == 0, "replica flags set", timeout=3600, every=0.2)
        with engine.connect() as conn:
            warm_max = int(conn.execute(select(func.max(appraisals.c.id))).scalar_one())
        load0 = loadavg()

        jobs, owners = nonce_jobs(args.rounds)
        # with --workers, the worker processes are the supervisor's children
        vpids = [v.proc.pid for v in vs] + [c for v in vs for c in children(v.proc.pid)]
        spies = [subprocess.Popen(["py-spy", "record", "--format", "raw", "--rate", "200",
                                   "--gil", "--nonblocking", "-o",
                                   f"{args.profile}/verifier{n_verifiers}-{i}.txt", "-p",
                                   str(pid)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
                 for i, pid in enumerate(vpids)] if args.profile else []
        c0 = (cpu_seconds(vpids), postgres_cpu(pg), self_cpu())
        t0 = time.monotonic()
        nonce_replies = send_all(jobs, args.conns)
        t_nonce = time.monotonic() - t0
        c1 = (cpu_seconds(vpids), postgres_cpu(pg), self_cpu())

        pushes = push_jobs(nonce_replies, owners)
        c2 = (cpu_seconds(vpids), postgres_cpu(pg), self_cpu())
        t2 = time.monotonic()
        push_replies = send_all(pushes, args.conns, args.rate / args.domains)
        t_push = time.monotonic() - t2
        c3 = (cpu_seconds(vpids), postgres_cpu(pg), self_cpu())
        bad = [r for rs in push_replies.values() for r in rs if r.status != 202]
        assert not bad, f"{len(bad)} pushes refused, e.g. {bad[0].status} {bad[0].body[:200]!r}"

        wait_for(lambda: queued() == 0, "queue drained", timeout=3600, every=0.1)
        t_drained = time.monotonic() - t2
        c4 = (cpu_seconds(vpids), postgres_cpu(pg), self_cpu())
        load1 = loadavg()
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        with engine.connect() as conn:
            rows = conn.execute(select(appraisals.c.received_at, appraisals.c.appraised_at,
                                       appraisals.c.claims, appraisals.c.result)
                               .where(appraisals.c.id > warm_max)).all()
        assert len(rows) == total, (len(rows), total)
    finally:
        engine.dispose()
        for v in vs:
            v.close()
    lat = [r.appraised_at - r.received_at for r in rows]
    first_rx = min(r.received_at for r in rows)
    last_rx = max(r.received_at for r in rows)
    first_ap = min(r.appraised_at for r in rows)
    last_ap = max(r.appraised_at for r in rows)
    rtt = [r.seconds for rs in push_replies.values() for r in rs]
    nrtt = [r.seconds for rs in nonce_replies.values() for r in rs]
    n_push = sum(len(rs) for rs in push_replies.values())
    n_nonce = sum(len(rs) for rs in nonce_replies.values())
    return {
        "verifiers": n_verifiers, "documents": total,
        "trusted": sum(r.result == "trusted" for r in rows),
        "max_claims": max(r.claims for r in rows),
        "nonce_per_s": n_nonce / t_nonce,
        "nonce_rtt_p50_ms": 1000 * statistics.median(nrtt),
        "intake_per_s": total / t_push,
        "intake_server_per_s": total / max(1e-9, last_rx - first_rx),
        "appraisal_per_s": total / max(1e-9, last_ap - first_ap),
        "sustained_per_s": total / max(1e-9, last_ap - first_rx),
        # the nonce window and the push window back to back: the whole protocol
        "with_nonces_per_s": total / (t_nonce + t_drained),
        "push_s": t_push, "drained_s": t_drained,
        "lat_p50_ms": 1000 * statistics.median(lat), "lat_p99_ms": 1000 * pct(lat, 99),
        "push_rtt_p50_ms": 1000 * statistics.median(rtt), "push_rtt_p99_ms": 1000 * pct(rtt, 99),
        # CPU per request/document, milliseconds
        "cpu_nonce_ms": {k: 1000 * (c1[i] - c0[i]) / n_nonce
                         for i, k in enumerate(("verifier", "postgres", "loadgen"))},
        "cpu_doc_ms": {k: 1000 * (c4[i] - c2[i]) / total
                       for i, k in enumerate(("verifier", "postgres", "loadgen"))},
        "cpu_push_window_s": {k: c3[i] - c2[i]
                              for i, k in enumerate(("verifier", "postgres", "loadgen"))},
        "pushes": n_push, "load_before": load0, "load_after": load1,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--domains", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--conns", type=int, default=8, help="connections per verifier process")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="offer this many documents per second (paced pushes) instead of "
                         "pushing as fast as the verifiers answer")
    ap.add_argument("--key-type", choices=("ed25519", "rsa"), default="ed25519")
    ap.add_argument("--order", default="1,2,1,2",
                    help="verifier process counts, one run each, in this order")
    ap.add_argument("--pg-default", action="store_true",
                    help="PostgreSQL as the tests run it (fsync off only), not the bench "
                         "settings")
    ap.add_argument("--pg-durable", action="store_true",
                    help="PostgreSQL with fsync, synchronous_commit and full_page_writes on "
                         "(a production cluster's durability)")
    ap.add_argument("--verifier-arg", action="append", default=[],
                    help="extra argument for 'semtrust verifier serve' (repeatable)")
    ap.add_argument("--profile", metavar="DIR",
                    help="sample the verifiers with py-spy (collapsed stacks into DIR)")
    ap.add_argument("--json", action="store_true", help="print each run as JSON too")
    args = ap.parse_args()
    keys = host_keys(args.key_type, args.hosts)
    settings = "bench"
    options = BENCH_PG
    if args.pg_default:
        settings, options = "test", ""
    if args.pg_durable:  # later settings override the tests' fsync=off
        settings, options = "durable", DURABLE_PG
    pg = Postgres(options=options)
    print(f"# {args.hosts} hosts x {args.domains} domains x {args.rounds} round(s), "
          f"{args.key_type} TMA keys, {args.conns} connections per verifier, "
          f"{'offered ' + str(args.rate) + ' documents/s' if args.rate else 'unpaced'}, "
          f"PostgreSQL {settings} settings", flush=True)
    try:
        for n in (int(x) for x in args.order.split(",")):
            r = run(n, args, pg, keys)
            cd, cn = r["cpu_doc_ms"], r["cpu_nonce_ms"]
            print(f"verifiers={n} docs={r['documents']} trusted={r['trusted']} "
                  f"max_claims={r['max_claims']} | nonces/s={r['nonce_per_s']:.0f} "
                  f"(rtt p50 {r['nonce_rtt_p50_ms']:.1f} ms) | intake/s={r['intake_per_s']:.0f}"
                  f" appraisal/s={r['appraisal_per_s']:.0f} "
                  f"sustained/s={r['sustained_per_s']:.0f} "
                  f"with-nonces/s={r['with_nonces_per_s']:.0f} | push {r['push_s']:.2f} s, "
                  f"drained {r['drained_s']:.2f} s | latency p50={r['lat_p50_ms']:.0f} ms "
                  f"p99={r['lat_p99_ms']:.0f} ms, push rtt p50={r['push_rtt_p50_ms']:.0f} ms "
                  f"p99={r['push_rtt_p99_ms']:.0f} ms | CPU ms/doc verifier="
                  f"{cd['verifier']:.3f} pg={cd['postgres']:.3f} loadgen={cd['loadgen']:.3f}"
                  f" | CPU ms/nonce verifier={cn['verifier']:.3f} pg={cn['postgres']:.3f} "
                  f"loadgen={cn['loadgen']:.3f} | load {r['load_before']} -> "
                  f"{r['load_after']}", flush=True)
            if args.json:
                print(json.dumps(r), flush=True)
    finally:
        pg.close()


if __name__ == "__main__":
    main()
