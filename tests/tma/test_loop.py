"""The TMA's event loop and its compact frames, over a real Unix socket.

One thread serves every connection, so what one peer does (dribble a frame byte
by byte, never read its replies, send a bad compact frame, ask for a slow view)
must not stall or confuse any other, and replies must stay in request order.
"""

from __future__ import annotations

import socket
import struct

import pytest

from semtrust.events.jsonexport import format_event
from semtrust.events.record import Event
from semtrust.model.tma import TMA, Mode
from semtrust.tma.client import Connection, RemoteTMA
from semtrust.tma.protocol import (
    COMPACT_VERSION,
    EXPORT_FRAME,
    ProtocolError,
    encode,
    export_frame,
    parse_export,
    parse_verdict,
    read_frame,
    read_payload,
    verdict_frame,
)
from tests.tma.test_remote import Server, feed, records


def _events(name: str = "events18.json") -> list[Event]:
    return [r for r in records(name) if isinstance(r, Event)]


def _opened(unix_path: str, name: str) -> tuple[socket.socket, str]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(unix_path)
    s.sendall(encode({"v": 1, "id": 1, "op": "open", "domain": name}))
    reply = read_frame(s.makefile("rb"))
    assert reply is not None and reply["ok"] and reply["compact"] == COMPACT_VERSION
    return s, str(reply["token"])


def test_compact_frames_round_trip() -> None:
    frame = export_frame(7, b'{"x": 1}', True)
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert parse_export(frame[4:]) == (7, True, b'{"x": 1}')
    t = TMA()
    v = t.update(_events()[0])
    assert parse_verdict(verdict_frame(9, v)[4:]) == (9, v)
    assert parse_verdict(verdict_frame(3, None)[4:]) == (3, None)
    with pytest.raises(ProtocolError):
        parse_export(bytes([EXPORT_FRAME, 99, 1, 0]) + bytes(8) + b"{}")  # other version
    with pytest.raises(ProtocolError):
        parse_export(bytes([EXPORT_FRAME, 1]))  # truncated
    with pytest.raises(ProtocolError):
        parse_verdict(verdict_frame(1, v)[4:-1])


@pytest.mark.parametrize("frame", [
    export_frame(1, b"{}", True),                                     # before any open
    struct.pack(">I", 12) + bytes([EXPORT_FRAME, 2, 1, 0]) + bytes(8),  # other version
])
def test_bad_compact_frames_are_fatal_for_their_connection_only(server: Server,
                                                                 frame: bytes) -> None:
    _srv, unix, _tcp = server
    good = RemoteTMA(unix, f"good-{frame[5]}")
    evs = _events()
    feed(good, evs[:2])  # type: ignore[arg-type]
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(unix.path)
    if frame[5] != 1:  # the version check needs an opened domain to get that far
        s.close()
        s, _token = _opened(unix.path, "bad-version")
    s.sendall(frame)
    fp = s.makefile("rb")
    reply = read_frame(fp)
    assert reply is not None and reply["ok"] is False and reply["fatal"] is True
    assert read_frame(fp) is None, "the connection must be closed"
    s.close()
    feed(good, evs[2:4])  # type: ignore[arg-type]
    good.sync()
    assert good.events == 4


def test_compact_refusals_name_their_seq_and_are_trust_events(server: Server) -> None:
    _srv, unix, _tcp = server
    s, _token = _opened(unix.path, "compact-seq")
    fp = s.makefile("rb")
    line = format_event(_events()[0]).encode()
    s.sendall(export_frame(1, line, True))
    payload = read_payload(fp)
    assert payload is not None
    seq, v = parse_verdict(payload)
    assert seq == 1 and v is not None and v.trusted and v.mode is Mode.FREE
    # a pipelined duplicate is answered anyway: refusals always are
    s.sendall(export_frame(1, line, False) + export_frame(4, line, True))
    errors = [read_frame(fp), read_frame(fp)]
    assert [(e["seq"], e["sequence"]) for e in errors if e] == [(1, True), (4, True)]
    assert "expected 2, got 1" in str(errors[0]) and "expected 2, got 4" in str(errors[1])
    s.sendall(export_frame(2, b"not json", True))
    bad = read_frame(fp)
    assert bad is not None and bad["seq"] == 2 and not bad["ok"] and "fatal" not in bad
    c = Connection(unix, None)
    summary = c.call({"op": "show", "domain": "compact-seq", "what": "summary"})["result"]
    assert summary["events"] == 1 and summary["trust_events"] == 3
    c.close()
    s.close()


def test_a_frame_dribbled_byte_by_byte_is_answered(server: Server) -> None:
    _srv, unix, _tcp = server
    s, _token = _opened(unix.path, "dribble")
    data = export_frame(1, format_event(_events()[0]).encode(), True) + \
        encode({"v": 1, "id": 2, "op": "sync", "domain": "dribble"})
    for i in range(len(data)):
        s.send(data[i:i + 1])
    fp = s.makefile("rb")
    payload = read_payload(fp)
    assert payload is not None and parse_verdict(payload)[0] == 1
    reply = read_frame(fp)
    assert reply is not None and reply["id"] == 2 and reply["next_seq"] == 2
    s.close()


def test_replies_keep_request_order_across_slow_verbs(server: Server) -> None:
    _srv, unix, _tcp = server
    s, _token = _opened(unix.path, "order")
    line = format_event(_events()[0]).encode()
    frames = b""
    for i in range(2, 42):
        op = "show" if i % 3 else "sync"
        frames += encode({"v": 1, "id": i, "op": op, "domain": "order", "what": "summary"})
    frames += export_frame(1, line, True)
    s.sendall(frames)
    fp = s.makefile("rb")
    ids = []
    for _ in range(40):
        reply = read_frame(fp)
        assert reply is not None and reply["ok"], reply
        ids.append(reply["id"])
    assert ids == list(range(2, 42))
    payload = read_payload(fp)
    assert payload is not None and parse_verdict(payload)[0] == 1
    s.close()


def test_a_peer_that_never_reads_stalls_nobody(server: Server) -> None:
    _srv, unix, _tcp = server
    hog = socket.socket(socket.AF_UNIX)
    hog.connect(unix.path)
    hog.setblocking(False)
    # Hello frames without ever reading a reply: megabytes of answers pile up.
    frame = encode({"v": 1, "id": 1, "op": "hello"})
    sent = 0
    try:
        while sent < 8 << 20:
            sent += hog.send(frame * 64)
    except BlockingIOError:
        pass  # the TMA stopped reading it: its reply queue is full
    assert sent < 8 << 20, "a peer that never reads must be pushed back"
    r = RemoteTMA(unix, "bystander")
    r.enforce()
    verdicts = feed(r, _events())  # type: ignore[arg-type]
    assert len(verdicts) == len(_events()) and r.events == len(verdicts)
    hog.close()
