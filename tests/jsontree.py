"""Walking decoded JSON records, for tests that mutate them at random places."""

from __future__ import annotations

from typing import Any


def key_paths(obj: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path into nested dicts."""
    out: list[tuple[str, ...]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out.extend(key_paths(v, (*prefix, k)))
    return out


def parent_of(obj: Any, path: tuple[str, ...]) -> Any:
    """The dict that holds the last key of ``path``."""
    for k in path[:-1]:
        obj = obj[k]
    return obj
