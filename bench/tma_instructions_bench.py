"""Trajectory modeling cost in CPU instructions per event, free of machine noise.

Wall-clock figures on a shared VM move by +-25 % from run to run; instruction
counts under valgrind's callgrind do not. This runs ``semtrust points`` and
``replay --json`` and the json.loads/orjson + 3 SHA-256 floors of
``tma_bench.py`` on one generated trajectory, subtracts each program's
start-up (the same program on an empty input) and prints instructions per
event and the ratio to the json floor. Instructions are not time (C code
retires more of them per cycle than the interpreter), but a change that
saves instructions saves them on every machine.

Usage::

    python bench/tma_instructions_bench.py [--events 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trajectory_gen  # bench-local module, found via the path above

_FLOOR = """\
import hashlib, sys
sha = hashlib.sha256
COE, CELL, CO = b"\\x01" * 40, b"\\x02" * 150, b"\\x03" * 105
if sys.argv[2] == "orjson":
    import orjson
    loads = orjson.loads
else:
    import json
    loads = json.loads
with open(sys.argv[1], "rb") as fp:
    for line in fp:
        loads(line)
        sha(CO + sha(COE).digest() + sha(CELL).digest()).digest()
"""
_SEMTRUST = "import sys; from semtrust.cli import main; sys.argv[0] = 'semtrust'; main()"
_COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(argv: list[str]) -> int:
    """Instructions the program retires, as callgrind counts them."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
    )
    m = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or m is None:
        raise SystemExit(f"valgrind failed ({proc.returncode}): {proc.stderr[-800:]}")
    return int(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind): nothing measured")
        return 0
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="tma_instr.") as tmp:
        traj = Path(tmp) / "traj.json"
        empty = Path(tmp) / "empty.json"
        empty.write_bytes(b"")
        fresh = max(1, round(a.events * 0.7))
        with open(traj, "w", encoding="utf-8", errors="surrogateescape") as fp:
            trajectory_gen.generate(fp, a.events, a.seed, fresh)
        floor_py = Path(tmp) / "floor.py"
        floor_py.write_text(_FLOOR)
        runs = {
            "floor json.loads+3 sha256": ([py, str(floor_py)], ["json"], a.events + 1),
            "floor orjson.loads+3 sha256": ([py, str(floor_py)], ["orjson"], a.events + 1),
            "semtrust points": ([py, "-c", _SEMTRUST, "points"], [], a.events),
            "semtrust replay --json": ([py, "-c", _SEMTRUST, "replay"], ["--json"], a.events),
        }
        print(f"{a.events:,} events (seed {a.seed}), python {sys.version.split()[0]}; "
              "start-up subtracted\n")
        print("| run | instructions/event | / json floor |")
        print("|---|---:|---:|")
        floor = None
        for name, (head, tail, n) in runs.items():
            full = instructions([*head, str(traj), *tail])
            base = instructions([*head, str(empty), *tail])
            per = (full - base) / n
            floor = floor or per
            print(f"| {name} | {per:,.0f} | {per / floor:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
