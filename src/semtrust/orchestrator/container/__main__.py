"""`python -m semtrust.orchestrator.container mediator PLAN CTRLFD FANFD` (the keeper runs it)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from semtrust.orchestrator.container.mediator import mediator_main


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m semtrust.orchestrator.container mediator PLAN CTRLFD FANFD``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 4 and argv[0] == "mediator":
        return mediator_main(argv[1], int(argv[2]), int(argv[3]))
    print("usage: python -m semtrust.orchestrator.container mediator PLAN CTRLFD FANFD",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
