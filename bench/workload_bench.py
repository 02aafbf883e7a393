"""Learning overhead on a real workload: a CPython test module, unsupervised vs learning.

Usage: .venv/bin/python bench/workload_bench.py [--reps N] [--module test.test_shutil]

Runs ``python -m unittest MODULE`` unsupervised and under ``semtrust run --output`` in
turn (interleaved, so machine noise hits both alike), from the same working directory,
and prints min/median/max wall time of each and of the per-repetition ratio.
Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--module", default="test.test_shutil")
    args = ap.parse_args()
    semtrust = str(Path(sys.executable).parent / "semtrust")
    work = [sys.executable, "-m", "unittest", "-q", args.module]
    plain: list[float] = []
    learn: list[float] = []
    with tempfile.TemporaryDirectory(prefix="semtrust-wl-") as tmp:
        model = str(Path(tmp) / "m")
        for _ in range(args.reps):
            plain.append(timed(work, tmp))
            learn.append(timed([semtrust, "run", "--output", model, "--", *work], tmp))
    ratios = [b / a for a, b in zip(plain, learn, strict=True)]

    def mmm(xs: list[float], f: str) -> str:
        return " / ".join(format(v, f) for v in (min(xs), statistics.median(xs), max(xs)))

    print(f"input: {' '.join(work[1:])} ({sys.version.split()[0]}), {args.reps} interleaved "
          "repetitions; min / median / max")
    print(f"| unsupervised s | learning s | ratio |\n|---|---|---|\n"
          f"| {mmm(plain, '.3f')} | {mmm(learn, '.3f')} | {mmm(ratios, '.2f')} |")


if __name__ == "__main__":
    main()
