#!/usr/bin/env python3
"""Print the syscall classification as Markdown; ``--write README.md`` updates the README.

The table lives in ``semtrust.orchestrator.syscalls``; the README holds this output
between its marker comments (a unit test fails when they differ).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from semtrust.orchestrator.syscalls import markdown_table, readme_section


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write":
        path = Path(argv[1])
        path.write_text(readme_section(path.read_text()))
        return 0
    if argv:
        print("usage: syscall_table.py [--write README.md]", file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
