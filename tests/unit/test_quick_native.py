"""The compiled ``_quick`` module against the Python rules it stands in for.

Contract: ``coe_id``, ``inode_preimage`` and ``strtoll`` of ``_quick`` either
return None or exactly what the Python code computes from the same text
(``parse_coe_object``/``parse_inode_object`` on the orjson-decoded object, then
``coe_digest``/``inode_preimage``; ``python_strtoll``); where the Python code
refuses, they return None. And they are not dead: plain objects and in-range
numbers get an answer. Whole lines with and without the module are compared in
``test_quick.py`` (check ``E``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semtrust.errors import InputError
from semtrust.events import numbers
from semtrust.events.jsonexport import parse_coe_object, parse_inode_object
from semtrust.model import quick
from semtrust.model.coefficient import coe_digest, inode_preimage
from tests import vectors

try:
    from semtrust.model import _quick
except ImportError:  # reported by test_the_extension_is_built
    _quick = None  # type: ignore[assignment]

native = pytest.mark.skipif(_quick is None, reason="semtrust.model._quick is not built")

COE_KEYS = ("uid", "euid", "suid", "gid", "egid", "sgid", "fsuid", "fsgid", "capeff")
INODE_KEYS = ("uid", "gid", "mode", "s_magic", "s_id", "s_uuid")


def test_the_extension_is_built() -> None:
    if _quick is None or not (quick.COMPILED and numbers.COMPILED):
        reason = ("semtrust.model._quick is not built (it needs gcc, the Python headers and "
                  "libssl-dev; scripts/setup.sh installs them); points and replay use orjson "
                  "and the Python number rules for every COE and inode object")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _python(raw: bytes, digest: Callable[[dict[str, Any]], bytes]) -> bytes | None:
    """What the quick path's Python fallback gives for an object's text."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    try:
        return digest(obj)
    except InputError:
        return None


def python_coe(raw: bytes) -> bytes | None:
    return _python(raw, lambda obj: coe_digest(parse_coe_object(obj)))


def python_inode(raw: bytes) -> bytes | None:
    return _python(raw, lambda obj: inode_preimage(parse_inode_object(obj)))


# ------------------------------------------------------------------------- strategies

_NUMBER_CHARS = " \t\n\v\f\r+-0123456789abcdefABCDEFxX8é\x00"
_BOUNDS = (0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
           1 << 64, 0x01021994)


@st.composite
def number_texts(draw: st.DrawFn) -> str:
    """Numbers as the export writes them, near every range bound, and oddities."""
    how = draw(st.sampled_from(["dec", "hex", "oct", "chars", "any"]))
    if how == "chars":
        return draw(st.text(alphabet=_NUMBER_CHARS, max_size=24))
    if how == "any":
        return draw(st.text(max_size=12))
    value = draw(st.one_of(st.sampled_from(_BOUNDS), st.integers(0, 1 << 66)))
    value += draw(st.sampled_from((0, 0, -1, 1)))
    body = {"dec": str, "hex": lambda v: f"0x{v:x}", "oct": lambda v: f"0{v:o}"}[how](abs(value))
    sign = draw(st.sampled_from(("", "", "-", "+")))
    return (draw(st.sampled_from(("", " ", "\t", "00"))) + sign + body
            + draw(st.sampled_from(("", "", "z", " 1", "9"))))


@st.composite
def objects(draw: st.DrawFn, keys: tuple[str, ...], texts: dict[str, Any]) -> tuple[bytes, bool]:
    """JSON text of an object with (mostly) the given keys; True when it is plain
    (flat, string values, printable ASCII, no escapes) with every key present."""
    pairs: list[tuple[str, Any]] = [(k, draw(texts.get(k, number_texts()))) for k in keys]
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    plain = True
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["drop", "dup", "extra", "nonstring", "nested"]))
        if op == "drop" and pairs:
            pairs.pop(draw(st.integers(0, len(pairs) - 1)))
            plain = False
        elif op == "dup":
            pairs.insert(draw(st.integers(0, len(pairs))),
                         (draw(st.sampled_from(keys)), draw(number_texts())))
        elif op == "extra":
            pairs.append((draw(st.sampled_from(("x", "UID", "uid ", ""))), draw(number_texts())))
        else:
            value: Any = draw(st.sampled_from((1, None, True, 1.5))) if op == "nonstring" \
                else {"a": "1"}
            pairs.insert(draw(st.integers(0, len(pairs))), (draw(st.sampled_from(keys)), value))
            plain = False
    sep = draw(st.sampled_from(((", ", ": "), (",", ":"), (" ,\n", " :\t"))))
    text = "{" + sep[0].join(f"{json.dumps(k)}{sep[1]}{json.dumps(v, ensure_ascii=False)}"
                             for k, v in pairs) + "}"
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # whitespace around, or a broken end
        raw = draw(st.sampled_from((b" ", b"\r\n", b""))) + raw + draw(
            st.sampled_from((b" ", b"\n", b"}", b",", b"\x0c")))
    keyset = {k for k, _ in pairs}
    plain = plain and set(keys) <= keyset and all(
        0x20 <= c < 0x80 and c != 0x5C for c in raw)
    return raw, plain


_INODE_TEXTS: dict[str, Any] = {
    "s_id": st.one_of(st.sampled_from(("sda1", "tmpfs", "", "x" * 31, "x" * 32, "é" * 15,
                                       "a\\b", 'q"'))),
    "s_uuid": st.one_of(st.sampled_from(("00" * 16, "a953e99a39e54e478c9edf24815ddc49",
                                         "A953E99A39E54E478C9EDF24815DDC49", "0" * 31,
                                         "0" * 33, "g" * 32, " " + "0" * 31)),
                        st.binary(min_size=16, max_size=16).map(bytes.hex)),
    "s_magic": st.one_of(st.sampled_from(("0x1021994", "0x01021994", "16914836", "0xef53")),
                         number_texts()),
    "mode": st.one_of(st.sampled_from(("0100644", "0177777", "0200000", "65535", "65536")),
                      number_texts()),
}


# ------------------------------------------------------------------------------ tests

@native
@settings(max_examples=400, deadline=None)
@given(objects(COE_KEYS, {}))
def test_coe_id_equals_the_python_digest(case: tuple[bytes, bool]) -> None:
    raw, plain = case
    want = python_coe(raw)
    got = _quick.coe_id(raw)
    assert got is None or got == want, f"compiled {got!r}, Python {want!r}: {raw!r}"
    if plain and want is not None:
        assert got is not None, f"compiled deferred on a plain COE: {raw!r}"


@native
@settings(max_examples=400, deadline=None)
@given(objects(INODE_KEYS, _INODE_TEXTS))
def test_inode_preimage_equals_the_python_bytes(case: tuple[bytes, bool]) -> None:
    raw, plain = case
    want = python_inode(raw)
    got = _quick.inode_preimage(raw)
    assert got is None or got == want, f"compiled {got!r}, Python {want!r}: {raw!r}"
    if plain and want is not None:
        assert got is not None, f"compiled deferred on a plain inode: {raw!r}"


@native
@settings(max_examples=1000, deadline=None)
@given(number_texts())
def test_strtoll_equals_the_python_rules(text: str) -> None:
    try:
        want: int | None = numbers.python_strtoll(text)
    except InputError:
        want = None
    assert _quick.strtoll(text) == want, repr(text)
    if want is None:
        with pytest.raises(InputError):
            numbers.strtoll(text, "f")
    else:
        assert numbers.strtoll(text, "f") == want


@native
@pytest.mark.parametrize("text", ["\ud800", "1\udcff", "\udcff7"])
def test_strtoll_leaves_lone_surrogates_to_python(text: str) -> None:
    assert _quick.strtoll(text) is None
    assert numbers.strtoll(text) == numbers.python_strtoll(text)


@native
@pytest.mark.parametrize("name", ["test-trajectory.json", "events18.json"])
def test_vector_objects_take_the_compiled_path(name: str) -> None:
    """Every COE and inode of the vectors, as the export writes them, is answered
    natively, with the Python answer."""
    seen = 0
    for line in vectors.path(name).read_bytes().splitlines():
        if not line.strip() or b"\\" in line:
            continue
        obj = orjson.loads(line)
        coe = json.dumps(obj["COE"]).encode()
        assert _quick.coe_id(coe) == python_coe(coe) is not None
        for cell in obj.values():
            inode = cell.get("file", {}).get("inode") if isinstance(cell, dict) else None
            if isinstance(inode, dict):
                raw = json.dumps(inode).encode()
                assert _quick.inode_preimage(raw) == python_inode(raw) is not None
                seen += 1
    assert seen


@native
def test_wrong_argument_types_raise() -> None:
    with pytest.raises(TypeError):
        _quick.coe_id("{}")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _quick.inode_preimage(bytearray(b"{}"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _quick.strtoll(b"1")  # type: ignore[arg-type]
