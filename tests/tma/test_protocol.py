"""Framing and bounds of the external TMA protocol."""

from __future__ import annotations

import io
import struct

import pytest

from semtrust.tma.protocol import (
    MAX_DEPTH,
    Address,
    ProtocolError,
    decode,
    encode,
    parse_address,
    read_frame,
)


def test_frame_round_trip() -> None:
    req = {"v": 1, "op": "export", "id": 3, "record": '{"a": "{[\\"x"}'}
    fp = io.BytesIO(encode(req) + encode({"v": 1, "op": "sync"}))
    assert read_frame(fp) == req
    assert read_frame(fp) == {"v": 1, "op": "sync"}
    assert read_frame(fp) is None


def test_oversized_length_is_refused_before_reading() -> None:
    fp = io.BytesIO(struct.pack(">I", 1 << 20) + b"{}")
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        read_frame(fp, limit=1 << 16)


def test_truncated_frames() -> None:
    with pytest.raises(ProtocolError, match="header"):
        read_frame(io.BytesIO(b"\x00\x00"))
    with pytest.raises(ProtocolError, match="truncated"):
        read_frame(io.BytesIO(struct.pack(">I", 10) + b"{}"))


def test_not_json_or_not_object() -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        decode(b"{nope")
    with pytest.raises(ProtocolError, match="not a JSON object"):
        decode(b"[1, 2]")


def test_depth_is_bounded() -> None:
    ok = b'{"a":' * (MAX_DEPTH - 1) + b"1" + b"}" * (MAX_DEPTH - 1)
    assert decode(ok)
    deep = b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1)
    with pytest.raises(ProtocolError, match="nested deeper"):
        decode(deep)
    # brackets inside strings do not count as depth
    assert decode(b'{"r": "' + b"{" * 100 + b'"}')


def test_addresses() -> None:
    assert parse_address("unix:/run/tma.sock") == Address("unix", path="/run/tma.sock")
    assert parse_address("tcp:127.0.0.1:7000") == Address("tcp", host="127.0.0.1", port=7000)
    assert str(parse_address("tcp:[::1]:7")) == "tcp:::1:7"
    for bad in ("unix:", "tcp:host", "tcp::80", "tcp:h:99999", "http://x"):
        with pytest.raises(ProtocolError, match="--tma"):
            parse_address(bad)
