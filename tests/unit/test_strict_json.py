"""Strict JSON for documents a verifier trusts, and the attestation reader on top."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semtrust.attest.verify import parse_attestation
from semtrust.errors import InputError
from semtrust.strict import b64decode_canonical, json_depth, loads_limited, loads_strict

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab"\\[]{}é', max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids,
                                                              max_size=3),
    max_leaves=20,
)


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


@settings(max_examples=300)
@given(_json_values)
def test_depth_scan_matches_the_parsed_depth(value: Any) -> None:
    text = json.dumps(value).encode()
    assert json_depth(value) == _depth(value)
    got = loads_strict(text, source="v", max_depth=max(1, _depth(value)), max_bytes=1 << 20)
    assert got == value


def test_refusals_are_input_errors() -> None:
    for data, what in ((b'{"a": 1, "a": 1}', "duplicate key 'a'"),
                       (b'{"x": {"b": [], "b": []}}', "duplicate key 'b'"),
                       (b"[" * 50 + b"]" * 50, "nested 50 levels"),
                       (b"[" * 50000 + b"]" * 50000, "nested too deeply"),
                       (b'{"a": NaN}', "not JSON"),
                       (b'"\xff"', "not UTF-8"),
                       (b'{"a":' * 10 + b"1" + b"}" * 10, "nested 10 levels"),
                       (b" " * 200, "larger than")):
        with pytest.raises(InputError, match=what) as err:
            loads_strict(data, source="doc", max_depth=8,
                         max_bytes=150 if data.startswith(b" ") else 1 << 20)
        assert str(err.value).startswith("doc: ")


def test_limited_reader_handles_what_orjson_refuses() -> None:
    assert loads_limited(b'{"n": 184467440737095516150}', source="r", max_bytes=99) == \
        {"n": 184467440737095516150}
    with pytest.raises(InputError, match="nested"):
        loads_limited(b"[" * 500000 + b"]" * 500000, source="r", max_bytes=1 << 20)
    with pytest.raises(InputError, match="not JSON"):
        loads_limited(b"{x", source="r", max_bytes=99)


def test_canonical_base64() -> None:
    assert b64decode_canonical("AAE=", "v") == b"\0\1"
    for bad in ("AAE", "AAF=", "AA E=", "AAE=\n", "AAE==", "AA-_"):
        with pytest.raises(InputError):
            b64decode_canonical(bad, "v")


@settings(max_examples=300)
@given(st.binary(max_size=300) | _json_values.map(lambda v: json.dumps(v).encode()))
def test_attestation_reader_only_raises_input_errors(data: bytes) -> None:
    with contextlib.suppress(InputError):
        parse_attestation(data, source="a")
