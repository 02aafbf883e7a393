"""Trajectory modeling throughput: ``semtrust points``/``replay`` against a floor.

The floor is the least any Python TMA must do per JSON export record: decode
the line and run the three SHA-256 calls of one coefficient (COE, CELL and the
coefficient itself, at their real sizes). Dividing semtrust's time by the
floor's says how much the event model, validation and C-compatible number
rules cost on top. Peak RSS is taken from ``wait4`` on the child, and a second
replay of a file with the same distinct events but five times as many records
shows whether memory follows unique points or events.

Timings are printed, never asserted: this runs on shared machines.

``--distinct`` generates trajectories in which every record is fresh and
every COE and inode object is distinct (a long-running host's export), so no
object digest can come from a cache.

Usage::

    python bench/tma_bench.py                # 200k and 1M events
    python bench/tma_bench.py --quick        # 20k
    python bench/tma_bench.py --distinct --events 200000 --repeat 3
    python bench/tma_bench.py --events 50000 --events 300000 [--repeat R] [--no-heavy] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trajectory_gen  # bench-local module, found via the path above

DUP_RATIO = 0.3
HEAVY_FACTOR = 5
COE_BYTES = b"\x01" * 40  # 8 x u32 + u64 capeff
CELL_BYTES = b"\x02" * 150  # a file description: head, s_id, s_uuid, path, digest
COEFF_BYTES = b"\x03" * 105  # event name + task_id + H(COE) + H(CELL)


def _semtrust() -> list[str]:
    exe = Path(sys.executable).parent / "semtrust"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("semtrust")
    if found:
        return [found]
    return [sys.executable, "-c", "from semtrust.cli import main; main()"]


def _pin_prefix() -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", "0"] if taskset else []


def _pin_self() -> set[int] | None:
    """Pin this process to CPU 0 for the in-process floor; returns the old mask."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    old = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {0})
    except OSError:
        return None
    return old


def floor(path: Path, loads: Callable[[bytes], Any]) -> tuple[float, int]:
    """Decode every line and hash one coefficient's worth of bytes: the lower bound."""
    sha = hashlib.sha256
    n = 0
    old = _pin_self()
    try:
        t0 = time.perf_counter()
        with open(path, "rb") as fp:
            for line in fp:
                loads(line)
                sha(COEFF_BYTES + sha(COE_BYTES).digest() + sha(CELL_BYTES).digest()).digest()
                n += 1
        elapsed = time.perf_counter() - t0
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)
    return elapsed, n


def run_child(argv: list[str], stdout_path: str) -> tuple[float, float, int, str]:
    """Run ``argv`` pinned; returns (wall s, peak RSS MiB, exit code, stderr tail)."""
    with open(stdout_path, "wb") as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(_pin_prefix() + argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode("utf-8", "replace")
    # ru_maxrss is in KiB on Linux.
    return wall, usage.ru_maxrss / 1024, proc.returncode, tail


def generate(path: Path, events: int, fresh: int, seed: int, distinct: bool = False) -> float:
    t0 = time.perf_counter()
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as fp:
        trajectory_gen.generate(fp, events, seed, fresh, distinct=distinct)
    return time.perf_counter() - t0


def _row(name: str, events: int, points: int | str, wall: float, ref: float | None,
         rss: float | str) -> str:
    rate = events / wall if wall > 0 else float("inf")
    ratio = f"{wall / ref:6.2f}x" if ref else "     -"
    rss_s = f"{rss:8.1f}" if isinstance(rss, float) else f"{rss:>8}"
    return (f"| {name:<28} | {events:>9,} | {points!s:>9} | {wall:8.2f} | {rate:>11,.0f} | "
            f"{ratio} | {rss_s} |")


def _best(runs: list[tuple[float, float, int, str]]) -> tuple[float, float, int, str]:
    """Fastest of repeated runs (noise on a shared VM only ever adds time); max RSS."""
    for run in runs:
        if run[2] != 0:
            raise SystemExit(f"semtrust failed ({run[2]}): {run[3]}")
    wall = min(r[0] for r in runs)
    return wall, max(r[1] for r in runs), 0, ""


def _spread(walls: list[float]) -> str:
    return (f"{min(walls):.2f}/{statistics.median(walls):.2f}/{max(walls):.2f}"
            if walls else "-")


def _file(path: Path, events: int, fresh: int, seed: int, reuse: bool,
          distinct: bool = False) -> None:
    if reuse and path.exists():
        print(f"# reusing {path}", file=sys.stderr)
        return
    gen_s = generate(path, events, fresh, seed, distinct)
    size_mb = path.stat().st_size / (1 << 20)
    print(f"# generated {path} ({events:,} events, {fresh:,} distinct contents, "
          f"{size_mb:.0f} MiB) in {gen_s:.1f}s", file=sys.stderr)


def bench_size(n: int, workdir: Path, seed: int, heavy: bool, keep: bool,
               repeat: int = 1, distinct: bool = False) -> list[str]:
    """One size: floors and semtrust runs interleaved ``repeat`` times, fastest kept, so
    that load from other processes hits every measurement alike."""
    fresh = n if distinct else max(1, round(n * (1 - DUP_RATIO)))
    traj = workdir / f"traj-{n}-s{seed}{'-distinct' if distinct else ''}.json"
    _file(traj, n, fresh, seed, keep, distinct)
    cmd = _semtrust()
    out = str(workdir / "out.txt")
    try:
        import orjson

        loads_fast: Callable[[bytes], Any] | None = orjson.loads
    except ImportError:
        loads_fast = None

    f_json: list[float] = []
    f_fast: list[float] = []
    p_runs: list[tuple[float, float, int, str]] = []
    r_runs: list[tuple[float, float, int, str]] = []
    lines = 0
    for _ in range(repeat):
        wall, lines = floor(traj, json.loads)
        f_json.append(wall)
        if loads_fast is not None:
            f_fast.append(floor(traj, loads_fast)[0])
        p_runs.append(run_child([*cmd, "points", str(traj)], os.devnull))
        r_runs.append(run_child([*cmd, "replay", str(traj), "--json"], out))
    p_wall, p_rss, _, _ = _best(p_runs)
    r_wall, r_rss, _, _ = _best(r_runs)
    for name, walls in (("floor json", f_json), ("floor orjson", f_fast),
                        ("points", [r[0] for r in p_runs]), ("replay", [r[0] for r in r_runs])):
        print(f"# N={n:,} {name}: " + " ".join(f"{w:.2f}s" for w in walls), file=sys.stderr)
    summary = json.loads(Path(out).read_text())
    points = summary["points"]
    fj = min(f_json)

    rows = [_row("floor json.loads+3 sha256", lines, "-", fj, None, "-")]
    if f_fast:
        rows.append(_row("floor orjson.loads+3 sha256", lines, "-", min(f_fast), None, "-"))
    rows.append(_row("semtrust points", n, points, p_wall, fj, p_rss))
    rows.append(_row("semtrust replay --json", summary["events"], points, r_wall, fj, r_rss))
    rows.append(f"|   (min/median/max of {repeat}: floor json {_spread(f_json)} s, points "
                f"{_spread([r[0] for r in p_runs])} s, replay {_spread([r[0] for r in r_runs])}"
                " s) | | | | | | |")
    # Writing a model keeps every new point's event for its description, so each line
    # goes through the full parser: the cost of `replay --output-model`, measured once.
    model_out = workdir / "model.out"
    m_wall, m_rss, _, _ = _best([run_child(
        [*cmd, "replay", str(traj), "--json", "--output-model", str(model_out)], out)])
    model_out.unlink(missing_ok=True)
    rows.append(_row("  ... --output-model", n, points, m_wall, fj, m_rss))

    if heavy and not distinct:
        big = workdir / f"traj-{n}-s{seed}-x{HEAVY_FACTOR}.json"
        _file(big, HEAVY_FACTOR * n, fresh, seed, keep)
        h_floor, h_lines = floor(big, json.loads)
        h_wall, h_rss, _, _ = _best([run_child([*cmd, "replay", str(big), "--json"], out)])
        h = json.loads(Path(out).read_text())
        rows.append(_row(f"floor json.loads x{HEAVY_FACTOR} dups", h_lines, "-", h_floor,
                         None, "-"))
        rows.append(_row(f"semtrust replay x{HEAVY_FACTOR} dups", h["events"], h["points"],
                         h_wall, h_floor, h_rss))
        same = "yes" if (h["points"], h["state"]) == (points, summary["state"]) else "NO"
        rows.append(f"|   (same unique points and state as the {n:,}-event file: {same}) "
                    f"| | | | | | |")
        if not keep:
            big.unlink()
    if f_fast:
        rows.append(f"|   (ratio to the orjson floor: points {p_wall / min(f_fast):.2f}x, "
                    f"replay {r_wall / min(f_fast):.2f}x) | | | | | | |")
    if not keep:
        traj.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="semtrust trajectory modeling benchmark")
    ap.add_argument("--events", type=int, action="append",
                    help="trajectory size (repeatable; default 200000 and 1000000)")
    ap.add_argument("--quick", action="store_true", help="one 20k-event run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-heavy", action="store_true",
                    help=f"skip the {HEAVY_FACTOR}x-duplicates replay")
    ap.add_argument("--repeat", type=int, default=1,
                    help="repeat floor/points/replay and keep the fastest (default 1)")
    ap.add_argument("--distinct", action="store_true",
                    help="every record fresh, every COE and inode object distinct")
    ap.add_argument("--keep", metavar="DIR",
                    help="generate into DIR and keep the files (reused by later runs)")
    a = ap.parse_args(argv)
    runs = [(n, a.distinct, a.repeat)
            for n in a.events or ([20_000] if a.quick else [200_000, 1_000_000])]
    if not (a.events or a.quick or a.distinct):
        # The default run also measures the all-distinct case, best of three.
        runs.append((200_000, True, max(3, a.repeat)))

    cmd = _semtrust()
    wall, rss, _, _ = run_child([*cmd, "--version"], os.devnull)
    print(f"semtrust: {' '.join(cmd)}; pinned: {'taskset -c 0' if _pin_prefix() else 'no'}; "
          f"python {sys.version.split()[0]}; cpus {os.cpu_count()}")
    print(f"interpreter + import startup: {wall:.3f}s, {rss:.1f} MiB RSS "
          "(included in every semtrust row)")
    print()
    print("| run                          |    events |    points |   wall s |    events/s |"
          "  /floor | RSS MiB |")
    print("|------------------------------|----------:|----------:|---------:|------------:|"
          "-------:|--------:|")
    for n, distinct, repeat in runs:
        if distinct:
            print(f"| **{n:,} events, every COE and inode distinct** | | | | | | |")
        if a.keep:
            workdir = Path(a.keep)
            workdir.mkdir(parents=True, exist_ok=True)
            rows = bench_size(n, workdir, a.seed, not a.no_heavy, True, repeat, distinct)
        else:
            with tempfile.TemporaryDirectory(prefix="tma_bench.") as tmp:
                rows = bench_size(n, Path(tmp), a.seed, not a.no_heavy, False, repeat,
                                  distinct)
        print("\n".join(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
