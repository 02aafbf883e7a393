"""The canonical text of a generic CELL: compact JSON, as parsing produces it.

The mediator writes one for every generic event (an exec's ``bprm_committed_creds``
among them) and the export parser normalises to it; it lives apart from the export
format so that a domain's events do not load the whole of it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["generic_body"]


def generic_body(obj: Any) -> str:
    """Compact JSON text of a generic CELL object; json takes what orjson refuses
    (nesting over 255 levels, strings holding non-UTF-8 bytes)."""
    try:
        return orjson.dumps(obj).decode()
    except (orjson.JSONEncodeError, UnicodeError):
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
