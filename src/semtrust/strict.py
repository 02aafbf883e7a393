"""Strict decoders for untrusted input: JSON with limits, canonical Base64.

Python's ``json`` lets the last of two equal keys win and raises
``RecursionError`` (not ``ValueError``) on deep nesting; orjson also lets the
last key win. A signed document read that way can carry a decoy copy of a
field, so every reader of documents a verifier trusts goes through
:func:`loads_strict`: duplicate keys at any level, nesting deeper than the
caller's format allows, documents over the size limit, NaN/Infinity and
invalid UTF-8 are all refused with an :class:`InputError` naming the source,
before any field is looked at.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from semtrust.errors import InputError

__all__ = ["b64decode_canonical", "json_depth", "loads_limited", "loads_strict"]


class _Duplicate(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_depth(value: Any) -> int:
    """Deepest nesting of lists and objects in a parsed JSON value (``{}`` is 1).

    Iterative, so it cannot itself recurse too deeply.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in children if isinstance(c, dict | list))
    return deepest


def loads_strict(data: bytes, *, source: str, max_depth: int, max_bytes: int,
                 line: int | None = None) -> Any:
    """Parse one JSON document, refusing duplicate keys, deep nesting and oversize.

    ``max_depth`` counts containers: ``{}`` is depth 1, ``{"a": []}`` depth 2. The C
    scanner of ``json`` stops a document nested beyond Python's recursion limit with
    a RecursionError after reading only that far, so parsing first is safe.
    """
    if len(data) > max_bytes:
        raise InputError(f"larger than {max_bytes} bytes", source=source, line=line)
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except _Duplicate as exc:
        raise InputError(f"duplicate key {str(exc)[:60]!r}", source=source, line=line) \
            from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 (byte {exc.start})", source=source, line=line) from None
    except ValueError as exc:
        raise InputError(f"not JSON ({exc})", source=source, line=line) from None
    except RecursionError:
        raise InputError(f"JSON nested too deeply; the format allows {max_depth} levels",
                         source=source, line=line) from None
    # Fewer brackets than the limit cannot nest beyond it (counted in C, no walk).
    if data.count(b"[") + data.count(b"{") > max_depth:
        depth = json_depth(value)
        if depth > max_depth:
            raise InputError(f"JSON nested {depth} levels deep; the format allows "
                             f"{max_depth}", source=source, line=line)
    return value


def loads_limited(data: bytes, *, source: str, max_bytes: int) -> Any:
    """Parse a possibly large JSON document from a peer we already trust (a reply),
    with the size limit and Python's recursion limit as depth limit, both turned
    into an InputError; duplicate keys are not looked for. ``json`` rather than
    orjson: orjson turns integers over 64 bits into floats."""
    if len(data) > max_bytes:
        raise InputError(f"larger than {max_bytes} bytes", source=source)
    try:
        return json.loads(data)
    except RecursionError:
        raise InputError("JSON nested too deeply", source=source) from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise InputError(f"not JSON ({exc})", source=source) from None


def b64decode_canonical(text: str, what: str) -> bytes:
    """Standard Base64 with ``=`` padding, no white space, zero trailing bits: the text
    must be exactly what encoding its bytes gives, so every value has one spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what} is not valid Base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise InputError(f"{what} is not canonical Base64 (padding or trailing bits)")
    return raw
