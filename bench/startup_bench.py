"""Fixed cost of ``semtrust run``: ``semtrust run -- true`` against bare ``true``.

Runs, interleaved round by round so that load hits every command alike: bare
``true``, the interpreter floor (``python -c pass``, ``python -S -c pass``),
the CLI alone (``semtrust --version``) and ``semtrust run -- true``. Twice: as
the environment is, and with compiled bytecode (a private
``PYTHONPYCACHEPREFIX``, warmed first, ``PYTHONDONTWRITEBYTECODE`` unset),
because an installed package has its bytecode and a source tree run with
``PYTHONDONTWRITEBYTECODE=1`` compiles every module on every start.

Prints min/median/max wall milliseconds and the overhead of ``run -- true``
over ``true`` (medians). Timings are printed, never asserted.

Usage::

    python bench/startup_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _semtrust() -> list[str]:
    exe = Path(sys.executable).parent / "semtrust"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("semtrust")
    return [found] if found else [sys.executable, "-c", "from semtrust.cli import main; main()"]


def _wall(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): "
                         f"{done.stderr.decode(errors='replace')[-500:]}")
    return wall


def measure(env: dict[str, str], rounds: int) -> dict[str, list[float]]:
    true = shutil.which("true") or "/bin/true"
    cmd = _semtrust()
    commands = {
        "true": [true],
        "python -S -c pass": [sys.executable, "-S", "-c", "pass"],
        "python -c pass": [sys.executable, "-c", "pass"],
        "semtrust --version": [*cmd, "--version"],
        "semtrust run -- true": [*cmd, "run", "--", true],
    }
    for argv in commands.values():  # warm caches (and bytecode, where it is written)
        _wall(argv, env)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            walls[name].append(_wall(argv, env))
    return walls


def report(title: str, walls: dict[str, list[float]]) -> None:
    print(f"\n{title}\n")
    print("| command | min ms | median ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, w in walls.items():
        print(f"| `{name}` | {1e3 * min(w):.1f} | {1e3 * statistics.median(w):.1f} | "
              f"{1e3 * max(w):.1f} |")
    med = {name: statistics.median(w) for name, w in walls.items()}
    over = med["semtrust run -- true"] - med["true"]
    floor = med["python -c pass"] - med["true"]
    print(f"\n`semtrust run -- true` costs {1e3 * over:.1f} ms more than `true` (medians); "
          f"the interpreter alone {1e3 * floor:.1f} ms; the CLI with its imports "
          f"{1e3 * (med['semtrust --version'] - med['true']):.1f} ms.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="semtrust start-up benchmark")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args(argv)
    print(f"python {sys.version.split()[0]}; cpus {os.cpu_count()}; "
          f"load {Path('/proc/loadavg').read_text().split()[0]}; "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}")
    report("As the environment is:", measure(dict(os.environ), a.rounds))
    with tempfile.TemporaryDirectory(prefix="startup_bench.") as cache:
        env = dict(os.environ, PYTHONPYCACHEPREFIX=cache)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        report("With compiled bytecode:", measure(env, a.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
