"""External TMA: decision latency (in-process vs Unix socket vs TLS over loopback),
export throughput to Mosquitto at QoS 1, and one TMA serving 100 concurrent domains.

Run from the repository root as root (the broker runs as root):
    .venv/bin/python bench/external_tma_bench.py [--events 20000] [--export 200000]
        [--placement any|same|split] [--repeat 5] [--skip decisions|concurrent|export]

``--placement`` pins the bench and every thread of its TMA to one vCPU or to two for the
latency table (on a VM, waking another vCPU can cost more than the work), and prints a
bare socketpair ping-pong under the same placement as the floor.

The TMA is a real ``semtrust tma serve`` process; the broker is Debian's Mosquitto.
A decision is what the mediator asks of its TMA for one event in enforcing mode: the
in-process TMA models the cached coefficient of a known event; the remote one formats
the event as its export record, sends it and waits for the verdict. Prints figures,
asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from semtrust.events.reader import read_records  # noqa: E402
from semtrust.events.record import Event  # noqa: E402
from semtrust.model.modelfile import parse_model, render_model  # noqa: E402
from semtrust.model.tma import TMA  # noqa: E402
from semtrust.tma.client import RemoteTMA  # noqa: E402
from semtrust.tma.protocol import Address, TLSFiles, parse_address  # noqa: E402

VECTORS = ROOT / "tests" / "data" / "vectors"


def events() -> list[Event]:
    return [e for _n, e in read_records(VECTORS / "test-trajectory.json")
            if isinstance(e, Event)]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


def model_of(evs: list[Event]) -> tuple[bytes, object]:
    t = TMA()
    for e in evs:
        t.update(e)
    text = render_model(t).encode()
    return text, parse_model(text)


def decisions(tma: object, evs: list[Event], n: int, remote: bool) -> list[float]:
    coefs = [tma.coefficient(e) for e in evs]  # type: ignore[attr-defined]
    lat = []
    clock = time.perf_counter_ns
    upd = tma.update_coefficient  # type: ignore[attr-defined]
    for i in range(n):
        k = i % len(evs)
        t0 = clock()
        # in-process: the mediator's cache hit on a known point passes no event
        upd(coefs[k], evs[k] if remote else None)
        lat.append((clock() - t0) / 1000)
    return lat


def enforcing(tma: object, text: bytes, model: object, name: str) -> object:
    if isinstance(tma, RemoteTMA):
        tma.model_bytes[model.digest] = text  # type: ignore[attr-defined]
    tma.load_model(model)  # type: ignore[attr-defined]
    tma.enforce()  # type: ignore[attr-defined]
    return tma


def serve(d: Path, pki: object, nice: int = 0
          ) -> tuple[subprocess.Popen[str], Address, Address]:
    exe = str(Path(sys.executable).parent / "semtrust")
    prefix = ["nice", "-n", str(nice)] if nice else []
    p = subprocess.Popen([*prefix, exe, "tma", "serve", "--listen", f"unix:{d}/tma.sock",
                          "--listen",
                          "tcp:127.0.0.1:0", "--cert", pki.server.cert,  # type: ignore[attr-defined]
                          "--cert-key", pki.server.key,  # type: ignore[attr-defined]
                          "--client-ca", pki.server.ca],  # type: ignore[attr-defined]
                         stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert p.stdout is not None
    a = [parse_address(p.stdout.readline().split()[-1]) for _ in range(2)]
    return p, a[0], a[1]


def _domain_worker(args: tuple[str, str, int, int, float]) -> list[float]:
    path, prefix, ndom, n, pause = args
    evs = events()
    text, model = model_of(evs)
    out: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        r = enforcing(RemoteTMA(Address("unix", path=path), f"{prefix}-{i}"), text, model,
                      "")
        lat = []
        # The mediator's cache holds each known event's coefficient (as in decisions()).
        coefs = [r.coefficient(e) for e in evs]  # type: ignore[attr-defined]
        for j in range(n):
            e = evs[j % len(evs)]
            c = coefs[j % len(evs)]
            t0 = time.perf_counter_ns()
            r.update_coefficient(c, e)  # type: ignore[attr-defined]
            lat.append((time.perf_counter_ns() - t0) / 1000)
            time.sleep(pause)
        with lock:
            out.extend(lat)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(ndom)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of a process onto ``cpus`` (affinity is per thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cpus)


def pingpong(cpus: set[int], n: int = 20000) -> float:
    """The transport's floor: 800 bytes there and 48 back between this process and a
    child on ``cpus`` (placed like the TMA), no work on either side."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        os.sched_setaffinity(0, cpus)
        a.close()
        while b.recv(65536):
            b.send(b"v" * 48)
        os._exit(0)
    b.close()
    msg = b"r" * 800
    lat = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        a.send(msg)
        a.recv(65536)
        lat.append((clock() - t0) / 1000)
    a.close()
    os.waitpid(pid, 0)
    return statistics.median(lat)


def loadavg() -> str:
    with open("/proc/loadavg") as fp:
        return " ".join(fp.read().split()[:3])


def _decision_table(args: argparse.Namespace, evs: list[Event], text: bytes, model: object,
                    unix: Address, tcp: Address, pki: object) -> object:
    """Decision latency, the three TMAs interleaved round by round (so a burst of load
    from elsewhere hits all three alike); min/median/max of the rounds' medians."""
    makers = (
        ("in-process", lambda: TMA()),
        ("unix socket", lambda: RemoteTMA(unix, f"b-unix-{os.getpid()}")),
        ("TLS loopback", lambda: RemoteTMA(tcp, f"b-tls-{os.getpid()}",
                                           tls=TLSFiles(*pki.client.__dict__.values()))),  # type: ignore[attr-defined]
    )
    tmas = []
    for label, make in makers:
        tma = enforcing(make(), text, model, label)
        decisions(tma, evs, 500, label != "in-process")  # warm up
        tmas.append((label, tma))
    medians: dict[str, list[float]] = {label: [] for label, _ in makers}
    every: dict[str, list[float]] = {label: [] for label, _ in makers}
    per = max(1, args.events // args.rounds)
    print(f"load average before: {loadavg()}")
    for _ in range(args.rounds):
        for label, tma in tmas:
            lat = decisions(tma, evs, per, label != "in-process")
            medians[label].append(statistics.median(lat))
            every[label].extend(lat)
    print(f"load average after: {loadavg()}")
    base = statistics.median(medians["in-process"])
    print(f"\n{args.rounds} interleaved rounds of {per} decisions each")
    print("| TMA | median µs (min / median / max of rounds) | p99 µs | added to median µs |")
    print("|---|---|---|---|")
    rows = []
    for label, _ in makers:
        ms = medians[label]
        med = statistics.median(ms)
        p99 = pct(every[label], 0.99)
        print(f"| {label} | {min(ms):.1f} / {med:.1f} / {max(ms):.1f} | {p99:.1f} | "
              f"{med - base:+.1f} |")
        rows.append((label, min(ms), med, max(ms), p99))
    return rows


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as fp:
        f = fp.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _concurrent(args: argparse.Namespace, unix: Address, server_pid: int) -> object:
    """Many concurrent domains, each a thread with its own connection, spread over
    client processes (one Python process would measure its own GIL, not the TMA)."""
    nproc = args.procs
    per = args.domains // nproc
    pause = args.pause_ms / 1000
    p99s = []
    for run in range(args.repeat):
        print(f"\nload average before: {loadavg()}")
        t0 = time.perf_counter()
        with multiprocessing.Pool(nproc) as pool:
            c0 = cpu_seconds(server_pid)
            parts = pool.map(_domain_worker,
                             [(unix.path, f"c{k}-{run}-{os.getpid()}", per, args.per_domain,
                               pause) for k in range(nproc)])
            c1 = cpu_seconds(server_pid)
        wall = time.perf_counter() - t0
        print(f"load average after: {loadavg()}")
        lat = [x for p in parts for x in p]
        n = len(lat)
        p99s.append(pct(lat, 0.99))
        print(f"{per * nproc} domains ({nproc} processes x {per} threads) x {args.per_domain} "
              f"decisions ({args.pause_ms:g} ms apart) in {wall:.1f} s ({n / wall:,.0f} "
              f"decisions/s; the TMA used {c1 - c0:.2f} CPU s, {(c1 - c0) / n * 1e6:.0f} µs "
              f"per decision): median {statistics.median(lat):.0f} µs, p99 {p99s[-1]:.0f} µs, "
              f"max {max(lat):.0f} µs")
    print(f"p99 over {args.repeat} runs: min {min(p99s):.0f} / median "
          f"{statistics.median(p99s):.0f} / max {max(p99s):.0f} µs")
    return p99s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--export", type=int, default=200000)
    ap.add_argument("--domains", type=int, default=100)
    ap.add_argument("--per-domain", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5, help="runs of the concurrent part")
    ap.add_argument("--tma-nice", type=int, default=0,
                    help="run the TMA process at this nice value (e.g. -10)")
    ap.add_argument("--placement", choices=("any", "same", "split"), default="any",
                    help="decision latency with the TMA on any vCPU (the scheduler's "
                         "choice), on this process's vCPU, or on another one")
    ap.add_argument("--pause-ms", type=float, default=2.0,
                    help="each domain's pause between decisions (concurrent)")
    ap.add_argument("--procs", type=int, default=10, help="client processes (concurrent)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=("decisions", "concurrent", "export"),
                    help="leave out one part (repeatable)")
    args = ap.parse_args()
    from tests.tma.broker import Mosquitto
    from tests.tma.certs import Pki

    d = Path(tempfile.mkdtemp(prefix="tmab"))
    pki = Pki(d / "pki")
    evs = events()
    text, model = model_of(evs)
    proc, unix, tcp = serve(d, pki, args.tma_nice)
    results: dict[str, object] = {}
    try:
        if "decisions" not in args.skip:
            mine = os.sched_getaffinity(0)
            if args.placement != "any":
                pin(os.getpid(), {0})
                pin(proc.pid, {0 if args.placement == "same" else 1})
            try:
                print(f"placement {args.placement}: bare Python ping-pong over a socketpair, "
                      f"round trip median "
                      f"{pingpong(os.sched_getaffinity(proc.pid)):.1f} µs")
                results["decisions"] = _decision_table(args, evs, text, model, unix, tcp, pki)
            finally:
                pin(os.getpid(), mine)
                pin(proc.pid, mine)
        if "concurrent" not in args.skip:
            results["concurrent"] = _concurrent(args, unix, proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    if "export" in args.skip:
        return

    # Export throughput at QoS 1, counted by a TMA that models the stream.
    broker = Mosquitto(d)
    os.environ.update(broker.env)
    topic = f"bench/{os.getpid()}"
    exe = str(Path(sys.executable).parent / "semtrust")
    imp = subprocess.Popen([exe, "tma", "serve", "--listen", f"unix:{d}/imp.sock", "--from",
                            broker.url(topic)], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert imp.stdout is not None
    imp.stdout.readline()
    imp.stdout.readline()
    time.sleep(1)
    try:
        from semtrust.events.jsonexport import format_event
        from semtrust.tma.mqtt import Publisher, parse_mqtt_url

        lines = [format_event(e) for e in evs]
        for batch in (200, 1):
            n = args.export if batch > 1 else args.export // 10
            name = f"exp-{batch}-{os.getpid()}"
            pub = Publisher(parse_mqtt_url(broker.url(topic), "--to"), name)
            t0 = time.perf_counter()
            for i in range(0, n, batch):
                pub.publish([lines[(i + j) % len(lines)] for j in range(min(batch, n - i))])
            ok = pub.close()
            dt = time.perf_counter() - t0
            summary: dict[str, object] = {}
            for _ in range(6000):
                r = subprocess.run([exe, "tma", "show", f"unix:{d}/imp.sock", name, "summary",
                                    "--json"], capture_output=True, text=True)
                if r.returncode == 0:
                    summary = json.loads(r.stdout)
                    if summary.get("ended"):
                        break
                time.sleep(0.5)
            print(f"\nexport {n} records, {batch} per message, QoS 1: {n / dt:,.0f} records/s "
                  f"(all acknowledged: {ok}); the TMA modeled {summary.get('events')} events, "
                  f"{summary.get('trust_events')} trust events")
    finally:
        imp.terminate()
        imp.wait()
        broker.stop()


if __name__ == "__main__":
    main()
