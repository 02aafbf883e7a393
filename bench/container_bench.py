"""Container mode: start-up overhead, file-open decision latency, macro workload.

Usage: .venv/bin/python bench/container_bench.py [--reps N] [--starts N] [--iterations N]

A busybox bundle (plus a static C open loop when gcc can build one, and /data with 300
small files) runs under plain ``runc run`` and under ``semtrust run --bundle`` (learning,
then enforcing the learned model).
* start-up: ``true`` in the container, wall time of the whole command (the semtrust figure
  includes the CLI's and the mediator's Python start-up and the rootfs copy onto tmpfs);
* micro: N x open("/etc/hostname")+close in one process (fanotify decides every open);
* macro: tar|gzip and sha256sum over /data and /bin, five rounds (fork/exec, opens).
Decision latency = inside the mediator, fanotify event read to answer (SEMTRUST_STATS).
Needs root, runc, busybox-static. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from semtrust.orchestrator.bundle import build_busybox_bundle, load_bundle, write_config

SEMTRUST = str(Path(sys.executable).parent / "semtrust")
C_LOOP = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 20000;
    for (long i = 0; i < n; i++) { int fd = open("/etc/hostname", O_RDONLY); close(fd); }
    return 0;
}
"""
MACRO = ("for i in 1 2 3 4 5; do tar cf - /data /bin | gzip -1 | wc -c; "
         "cat /data/* | sha256sum; done > /dev/null")


def build(tmp: Path) -> tuple[Path, bool]:
    b = build_busybox_bundle(tmp / "bundle", ["true"], files={"/etc/hostname": "bench\n"})
    data = b / "rootfs" / "data"
    data.mkdir()
    for i in range(300):
        (data / f"f{i:03d}").write_bytes(os.urandom(4096))
    have_loop = False
    gcc = shutil.which("gcc")
    if gcc:
        src = tmp / "loop.c"
        src.write_text(C_LOOP)
        r = subprocess.run([gcc, "-O2", "-static", "-o", str(b / "rootfs" / "bin" / "openloop"),
                            str(src)], capture_output=True)
        have_loop = r.returncode == 0
    return b, have_loop


def runc_bundle(b: Path, tmp: Path, args: list[str]) -> Path:
    """A copy of the bundle's config with ``args`` for plain runc (rootfs shared)."""
    bun = load_bundle(b)
    cfg = dict(bun.config)
    cfg["process"] = dict(cfg["process"], args=args)
    cfg["root"] = {"path": str(bun.rootfs), "readonly": True}
    d = tmp / f"runc-{abs(hash(tuple(args)))}"
    write_config(cfg, d)
    return d


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{argv[:6]}... failed ({r.returncode}): {r.stderr.decode()[-300:]}")
    return dt


def plain_runc(d: Path, root: Path, n: int) -> float:
    return timed(["runc", "--root", str(root), "run", "--bundle", str(d), f"bench-{n}"])


def supervised(b: Path, args: list[str], stats: Path, model: Path | None,
               output: Path | None = None) -> tuple[float, dict[str, Any]]:
    argv = [SEMTRUST, "run", "--bundle", str(b)]
    if model is not None:
        argv += ["--model", str(model), "--enforce"]
    if output is not None:
        argv += ["--output", str(output)]
    env = dict(os.environ, SEMTRUST_STATS=str(stats))
    dt = timed([*argv, "--", *args], env=env)
    return dt, json.loads(stats.read_text())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=20000)
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("runc"):
        print("container_bench: needs root and runc; skipped")
        return 0
    with tempfile.TemporaryDirectory(prefix="ctbench.") as t:
        tmp = Path(t)
        b, have_loop = build(tmp)
        root = tmp / "runc-root"
        n = 0
        rows: list[str] = []

        # start-up
        d = runc_bundle(b, tmp, ["true"])
        plain, sup = [], []
        for _ in range(a.starts):
            n += 1
            plain.append(plain_runc(d, root, n))
            sup.append(supervised(b, ["true"], tmp / "s.json", None)[0])
        p, s = statistics.median(plain), statistics.median(sup)
        rows.append(f"| start-up (`true`) | {a.starts} | {p * 1000:.0f} ms | {s * 1000:.0f} ms "
                    f"({s / p:.2f}x, +{(s - p) * 1000:.0f} ms) | – | – | – |")

        workloads: list[tuple[str, list[str]]] = []
        if have_loop:
            workloads.append((f"micro: {a.iterations} open+close",
                              ["/bin/openloop", str(a.iterations)]))
        else:
            print("container_bench: gcc -static unavailable; micro skipped")
        workloads.append(("macro: tar|gzip + sha256sum x5", ["sh", "-c", MACRO]))
        for label, args in workloads:
            d = runc_bundle(b, tmp, args)
            model = tmp / "w.model"
            supervised(b, args, tmp / "s.json", None, output=model)  # learn once
            plain, learn, enf = [], [], []
            lat: list[dict[str, Any]] = []
            for _ in range(a.reps):
                n += 1
                plain.append(plain_runc(d, root, n))
                learn.append(supervised(b, args, tmp / "s.json", None)[0])
                dt, st = supervised(b, args, tmp / "s.json", model)
                enf.append(dt)
                lat.append(st)
            p, lr, en = (statistics.median(x) for x in (plain, learn, enf))
            med = statistics.median(x.get("file_latency_ns_median", 0) for x in lat) / 1000
            p99 = statistics.median(x.get("file_latency_ns_p99", 0) for x in lat) / 1000
            opens = lat[-1].get("file_events_modeled", 0)
            fx = lat[-1].get("forensics", 0)
            rows.append(f"| {label} | {opens} opens | {p:.3f} s | {lr:.3f} s ({lr / p:.2f}x) | "
                        f"{en:.3f} s ({en / p:.2f}x) | {med:.1f} / {p99:.1f} µs | {fx} |")
        print("| workload | n | runc alone | semtrust learning (x) | semtrust enforcing (x) "
              "| file decision median / p99 | forensics |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
