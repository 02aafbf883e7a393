"""Number and string rules of the reference parser.

The reference TMA converts every numeric string with C ``strtoll(s, NULL, 0)``
and un-escapes strings by dropping a backslash and taking the next character
literally. Coefficients only match if we do exactly the same (spec §3.1).
"""

from __future__ import annotations

import re

from semtrust.errors import InputError

_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)
# Stands for a decimal of more than 20 digits: out of range with either sign (-(2**63)
# itself is in range, so 2**63 would not do).
_TOO_BIG = 1 << 64
_U32_MAX = 0xFFFFFFFF
_U16_MAX = 0xFFFF

_STRTOLL = re.compile(
    r"[ \t\n\v\f\r]*([+-]?)(0[xX](?=[0-9a-fA-F])[0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)?"
)


def python_strtoll(text: str, field: str = "") -> int:
    """C ``strtoll(text, NULL, 0)``: prefix-parse, stop at the first bad character.

    Out-of-range values (ERANGE) raise, as the reference treats them as errors.
    """
    if text.isascii() and text.isdigit() and (text[0] != "0" or len(text) == 1):
        # > 20 digits is out of range anyway; int() refuses > 4300 digits with ValueError.
        value = int(text) if len(text) <= 20 else _TOO_BIG
    else:
        m = _STRTOLL.match(text)
        assert m is not None  # the pattern can match the empty string
        sign, digits = m.group(1), m.group(2)
        if not digits:
            return 0
        if digits[:2] in ("0x", "0X"):
            value = int(digits[2:], 16)
        elif digits[0] == "0":
            value = int(digits, 8)
        else:
            value = int(digits) if len(digits) <= 20 else _TOO_BIG  # see above
        if sign == "-":
            value = -value
    if value > _INT64_MAX or value < _INT64_MIN:
        raise InputError(f"number out of range: {text!r}", field=field)
    return value


try:
    from semtrust.model._quick import strtoll as _native_strtoll
except ImportError:  # not built: the Python rules alone, same answers
    COMPILED = False

    def _native_strtoll(text: str, /) -> int | None:
        return None
else:
    COMPILED = True


def strtoll(text: str, field: str = "") -> int:
    """C ``strtoll(text, NULL, 0)``: prefix-parse, stop at the first bad character.

    Out-of-range values (ERANGE) raise, as the reference treats them as errors.
    The compiled conversion answers where it can; out of range, the Python rules
    decide and name the error.
    """
    value = _native_strtoll(text)
    return python_strtoll(text, field) if value is None else value


_U32_CACHE: dict[str, int] = {}
_CACHE_LIMIT = 1 << 16


def u32(text: str, field: str) -> int:
    """An unsigned 32-bit field; negative or larger values are errors.

    Memoised: ids, flags and modes repeat across events, and this is the
    hottest function of trajectory parsing.
    """
    value = _U32_CACHE.get(text)
    if value is not None:
        return value
    value = strtoll(text, field)
    if value < 0 or value > _U32_MAX:
        raise InputError(f"value {text!r} does not fit in 32 bits", field=field)
    if len(_U32_CACHE) < _CACHE_LIMIT:
        _U32_CACHE[text] = value
    return value


def u16(text: str, field: str) -> int:
    """An unsigned 16-bit field (the inode mode in the JSON format)."""
    value = strtoll(text, field)
    if value < 0 or value > _U16_MAX:
        raise InputError(f"value {text!r} does not fit in 16 bits", field=field)
    return value


def u64(text: str, field: str) -> int:
    """A 64-bit mask read as signed (``-1`` is all ones), as the reference does."""
    return strtoll(text, field) & 0xFFFFFFFFFFFFFFFF


def hexbytes(text: str, field: str, size: int | None = None) -> bytes:
    """Decode a hex string; ``size`` bytes exactly when given, else any non-empty even length."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    # fromhex skips whitespace: a length check rejects it, and odd or empty strings.
    if not value or 2 * len(value) != len(text):
        raise InputError(f"not a hex string: {text[:80]!r}", field=field)
    if size is not None and len(value) != size:
        raise InputError(f"expected {size} bytes of hex, got {len(value)}", field=field)
    return value


_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def c_unescape(text: str) -> str:
    """Drop each backslash and keep the next character literally (``\\n`` -> ``n``)."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(r"\1", text)
