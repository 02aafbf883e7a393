"""Cost of supervision: per-decision latency and wall-time ratios (learning, enforcing).

Usage: .venv/bin/python bench/orchestrator_bench.py [--reps N] [--iterations N]

Micro: a C loop of open("/etc/hostname")+close (python fallback without gcc).
Macro: byte-compiling a copy of the Python standard library's packages (compileall -f).
Each workload runs unsupervised, learning (producing the model) and enforcing that
model; wall times are medians of --reps runs, interleaved so that machine noise hits all
three alike; ratios are medians of per-repetition ratios. Decision latency is measured inside the
orchestrator from receiving a notification to handing the answer to the kernel.
Needs root or unprivileged user namespaces. Prints figures; never asserts.

Peers (``peers()``): the same workloads and ``tar cf - /usr/include | gzip -1``
under ``strace -f -o /dev/null`` and under fapolicyd (the Debian package, its
sample rules compiled into /etc/fapolicyd/compiled.rules, started here with
``--permissive``), next to semtrust enforcing; each is skipped with a note
where the tool is not installed or does not start. fapolicyd watches the whole
machine, so its runs are a block with the daemon up between unsupervised runs
before and after, not interleaved one by one. ``--no-peers`` skips them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from semtrust.orchestrator.domain import Domain
from semtrust.orchestrator.run import RunOptions, run_domain

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

SKIP_PARTS = {"test", "site-packages", "dist-packages", "lib-dynload", "__pycache__", "idlelib",
              "tkinter", "turtledemo", "lib2to3"}


def micro_cmd(work: Path, n: int) -> list[str]:
    gcc = shutil.which("gcc")
    if gcc:
        src = work / "loop.c"
        src.write_text(C_LOOP)
        exe = work / "loop"
        subprocess.run([gcc, "-O2", "-o", str(exe), str(src)], check=True)
        return [str(exe), str(n)]
    return ["/usr/bin/python3", "-I", "-c",
            f"import os\nfor i in range({n}): os.close(os.open('/etc/hostname', os.O_RDONLY))"]


def macro_setup(work: Path) -> Path:
    lib = Path(os.__file__).parent
    if Path("/usr/lib/python3.11").is_dir():
        lib = Path("/usr/lib/python3.11")
    tree = work / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir()
    for part in sorted(os.listdir(lib)):
        if part in SKIP_PARTS or part.startswith("config-") or not (lib / part).is_dir():
            continue
        shutil.copytree(lib / part, tree / part,
                        ignore=shutil.ignore_patterns("__pycache__", "test", "tests"))
    return tree


def macro_cmd(tree: Path) -> list[str]:
    py = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    return [py, "-I", "-m", "compileall", "-q", "-f", str(tree)]


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_plain(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


class Runner:
    def __init__(self) -> None:
        self.lat: list[int] = []
        self.stats: list[dict[str, Any]] = []

    def report(self, d: Domain) -> None:
        self.lat.extend(d.latencies)
        self.stats.append(d.stats())

    def run(self, cmd: list[str], **opts: Any) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(1)
        os.dup2(devnull, 1)
        try:
            code = run_domain(RunOptions(command=cmd, name=f"bench-{os.getpid()}", **opts),
                              report=self.report)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        if code != 0:
            raise SystemExit(f"supervised run failed ({code}): {cmd}")


def bench(label: str, cmd: list[str], work: Path, reps: int, runner: Runner,
          before: Any = None) -> dict[str, Any]:
    """Interleave unsupervised / learning / enforcing per repetition (shared noise)."""
    model = work / f"{label}.model"

    def prep() -> None:
        if before is not None:
            before()

    prep()
    runner.run(cmd, output=str(model))  # the model that the enforcing runs use
    plain, learn, enforce = [], [], []
    lat: list[int] = []
    llat: list[int] = []
    forensics = decisions = 0
    for _ in range(reps):
        prep()
        plain.append(timed(lambda: run_plain(cmd)))
        prep()
        runner.lat.clear()
        learn.append(timed(lambda: runner.run(cmd, output=str(work / "scratch.model"))))
        llat.extend(runner.lat)
        prep()
        runner.lat.clear()
        runner.stats.clear()
        enforce.append(timed(lambda: runner.run(cmd, model=str(model), enforce=True)))
        lat.extend(runner.lat)
        forensics += runner.stats[-1]["forensics"]
        decisions = runner.stats[-1]["decisions"]
    p, le, en = (statistics.median(x) for x in (plain, learn, enforce))
    return {"label": label, "plain": p, "learn": le, "enforce": en, "forensics": forensics,
            "decisions": decisions, "lat": sorted(lat), "llat": sorted(llat),
            "learn_x": statistics.median(b / a for a, b in zip(plain, learn, strict=True)),
            "enforce_x": statistics.median(b / a for a, b in zip(plain, enforce, strict=True))}


def pct(lat: list[int], q: float) -> float:
    return lat[min(len(lat) - 1, int(len(lat) * q))] / 1000 if lat else float("nan")


# ------------------------------------------------------------------------------ peers

TAR_GZIP = ["sh", "-c", "tar cf - /usr/include 2>/dev/null | gzip -1 > /dev/null"]
FAPOLICYD_RULES = Path("/etc/fapolicyd/compiled.rules")


@contextlib.contextmanager
def fapolicyd_running(work: Path) -> Iterator[str | None]:
    """fapolicyd in permissive mode for the block; yields None once it listens, or
    why it could not be used."""
    exe = shutil.which("fapolicyd")
    if exe is None:
        yield "not installed (apt-get install fapolicyd)"
        return
    if not FAPOLICYD_RULES.exists():
        yield (f"no {FAPOLICYD_RULES}: copy the sample rules from "
               "/usr/share/fapolicyd/sample-rules to /etc/fapolicyd/rules.d, run fagenrules")
        return
    if os.geteuid() != 0:
        yield "needs root"
        return
    log = work / "fapolicyd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "--permissive", "--debug-deny"], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if b"Starting to listen" in log.read_bytes():
                break
            time.sleep(0.2)
        if proc.poll() is not None or b"Starting to listen" not in log.read_bytes():
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            yield f"did not start: {tail[0]}"
        else:
            yield None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def peers(workloads: list[tuple[str, list[str], Callable[[], Any] | None]], work: Path,
          reps: int, enforcing: dict[str, float]) -> None:
    """Wall-time ratios to the unsupervised run for strace -f and fapolicyd, printed
    next to semtrust enforcing (``enforcing``: label -> ratio, where measured)."""
    def timed_prep(cmd: list[str], prep: Callable[[], Any] | None) -> float:
        if prep is not None:
            prep()
        return timed(lambda: run_plain(cmd))

    strace = shutil.which("strace")
    notes: list[str] = []
    if strace is None:
        notes.append("strace: not installed")
    rows: dict[str, dict[str, float]] = {}
    for label, cmd, prep in workloads:
        plain: list[float] = []
        traced: list[float] = []
        for _ in range(reps):
            plain.append(timed_prep(cmd, prep))
            if strace is not None:
                traced.append(timed_prep([strace, "-f", "-o", "/dev/null", *cmd], prep))
        rows[label] = {"plain": statistics.median(plain)}
        if traced:
            rows[label]["strace"] = statistics.median(
                b / a for a, b in zip(plain, traced, strict=True))
    with fapolicyd_running(work) as why:
        if why is not None:
            notes.append(f"fapolicyd: {why}")
        else:
            for label, cmd, prep in workloads:
                rows[label]["fapolicyd"] = statistics.median(
                    timed_prep(cmd, prep) for _ in range(reps))
    for label, cmd, prep in workloads:  # unsupervised again, with the daemon gone
        if "fapolicyd" in rows[label]:
            after = statistics.median(timed_prep(cmd, prep) for _ in range(reps))
            rows[label]["fapolicyd"] /= statistics.median([rows[label]["plain"], after])

    def x(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}x"

    print("\n| workload | unsupervised s | semtrust enforcing | fapolicyd (permissive, sample "
          "rules) | strace -f -o /dev/null |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['plain']:.3f} | {x(enforcing.get(label))} | "
              f"{x(r.get('fapolicyd'))} | {x(r.get('strace'))} |")
    for note in notes:
        print(f"(skipped {note})")


def run_peers(reps: int, iterations: int, runner: Runner,
              results: list[dict[str, Any]]) -> None:
    """The peers table: the micro and macro workloads and tar | gzip (semtrust
    enforcing measured here for it), against strace -f and fapolicyd."""
    with tempfile.TemporaryDirectory(prefix="semtrust-peers-") as tmp:
        work = Path(tmp)
        tar = bench("tar+gzip", TAR_GZIP, work, reps, runner)
        tree = macro_setup(work)
        peers([("micro", micro_cmd(work, iterations), None),
               ("macro", macro_cmd(tree), lambda: macro_setup(work)),
               ("tar+gzip", TAR_GZIP, None)], work, reps,
              {r["label"]: r["enforce_x"] for r in [*results, tar]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--no-peers", action="store_true",
                    help="skip the strace -f and fapolicyd comparison")
    args = ap.parse_args()
    runner = Runner()
    with tempfile.TemporaryDirectory(prefix="semtrust-bench-") as tmp:
        work = Path(tmp)
        results = [bench("micro", micro_cmd(work, args.iterations), work, args.reps, runner)]
        tree = macro_setup(work)
        results.append(bench("macro", macro_cmd(tree), work, args.reps, runner,
                             before=lambda: macro_setup(work)))
    print("| workload | decisions/run | unsupervised s | learning s (x) | enforcing s (x) "
          "| decision median µs (learn / enforce) | p99 µs (learn / enforce) | forensics |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['label']} | {r['decisions']} | {r['plain']:.3f} | {r['learn']:.3f} "
              f"({r['learn_x']:.2f}x) | {r['enforce']:.3f} "
              f"({r['enforce_x']:.2f}x) | {pct(r['llat'], 0.5):.1f} / {pct(r['lat'], 0.5):.1f} | "
              f"{pct(r['llat'], 0.99):.1f} / {pct(r['lat'], 0.99):.1f} | {r['forensics']} |")
    print("(x = median over repetitions of the ratio to the "
          "unsupervised run of the same repetition)")
    if not args.no_peers:
        run_peers(args.reps, args.iterations, runner, results)


if __name__ == "__main__":
    main()
