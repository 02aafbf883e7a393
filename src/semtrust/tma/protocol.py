"""The external TMA wire protocol: framing, bounds, addresses.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON,
one JSON object per frame. Every request carries ``v`` (the protocol version),
``op`` (a verb) and an ``id`` the reply echoes. Replies are ``{"id": N, "ok": true,
...}`` or ``{"id": N, "ok": false, "error": TEXT}``. A frame that is not a bounded,
well-formed request gets an error reply with ``"fatal": true`` and the connection
is closed; the TMA keeps serving every other connection and domain.

Sizes are bounded before anything is allocated (the length prefix is checked
first); nesting is bounded after a cheap count of opening brackets, so the common
event frame is never walked in Python.

Compact frames carry the one hot exchange without JSON: an event's export record
(``EXPORT_FRAME``) and its verdict (``VERDICT_FRAME``). Their first byte, which
can never open a JSON object, says which, the second their own format version. A
compact export applies to the domain opened (or resumed) on its connection, whose
``open`` reply says ``"compact": 1``; its refusals come back as JSON error replies
naming its ``seq``.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from semtrust.errors import SemtrustError
from semtrust.model.tma import Mode, Verdict

VERSION = 1
#: Largest frame either side accepts: a model file (64 MiB) with its JSON escapes fits.
MAX_FRAME = 80 << 20
#: Largest frame a peer may send before it has opened a domain (hello, open).
MAX_SMALL_FRAME = 64 << 10
#: Deepest JSON nesting accepted in a frame (event records are strings inside it).
MAX_DEPTH = 16
_HEADER = struct.Struct(">I")

#: First byte of a compact frame (a JSON frame starts with ``{``), and their version.
EXPORT_FRAME = 0x01
VERDICT_FRAME = 0x02
COMPACT_VERSION = 1
# export: kind, version, flags (SYNC), seq; the record's UTF-8 bytes follow.
_EXPORT = struct.Struct(">BBBxQ")
# verdict: kind, version, flags (RELEASE, ADDED, NO_VERDICT), mode, seq, coefficient.
_VERDICT = struct.Struct(">BBBBQ32s")
SYNC = 1
RELEASE, ADDED, NO_VERDICT = 1, 2, 4
_MODES = (Mode.FREE, Mode.SEALED, Mode.ENFORCING)
_MODE_INDEX = {m: i for i, m in enumerate(_MODES)}

#: Verbs: the Sancho command set (export, aggregate, seal, load, show) plus what a
#: TMA that outlives its orchestrator needs (open, enforce, sync, attest, ...).
VERBS = ("hello", "open", "aggregate", "base", "pseudonym", "load", "seal", "enforce",
         "export", "sync", "show", "attest", "domains", "drop")


class ProtocolError(SemtrustError):
    """A frame or a reply broke the protocol (bad length, JSON, depth, field)."""


class TMALost(ConnectionError):
    """The external TMA cannot be reached (connection lost and not restored)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class RemoteError(SemtrustError):
    """The TMA refused a request; ``fatal`` means it closed the connection."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def encode(obj: dict[str, Any]) -> bytes:
    """One frame: length prefix and compact JSON."""
    data = orjson.dumps(obj)
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(data)) + data


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        v, d = stack.pop()
        if d > limit:
            return d
        deepest = max(deepest, d)
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values() if isinstance(x, dict | list))
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v if isinstance(x, dict | list))
    return deepest


def decode(payload: bytes) -> dict[str, Any]:
    """Parse one frame's payload into a JSON object, within the depth bound."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    # Brackets inside strings count too, so this only bounds from above: a frame with
    # few brackets cannot be deep, and only the rare others are walked.
    if payload.count(b"{") + payload.count(b"[") > MAX_DEPTH and \
            _depth(obj, MAX_DEPTH) > MAX_DEPTH:
        raise ProtocolError(f"frame nested deeper than {MAX_DEPTH}")
    return obj


def read_frame(fp: BinaryIO, limit: int = MAX_FRAME) -> dict[str, Any] | None:
    """The next frame from a buffered reader; None at a clean end of stream."""
    payload = read_payload(fp, limit)
    return None if payload is None else decode(payload)


def read_payload(fp: BinaryIO, limit: int = MAX_FRAME) -> bytes | None:
    """The next frame's payload, JSON or compact; None at a clean end of stream."""
    head = fp.read(4)
    if not head:
        return None
    if len(head) < 4:
        raise ProtocolError("truncated frame header")
    (n,) = _HEADER.unpack(head)
    if n > limit:
        raise ProtocolError(f"frame of {n} bytes exceeds the limit of {limit}")
    payload = fp.read(n)
    if len(payload) < n:
        raise ProtocolError("truncated frame")
    return payload


def export_frame(seq: int, record: bytes, sync: bool) -> bytes:
    """A compact export frame, length prefix included."""
    n = _EXPORT.size + len(record)
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(n) + _EXPORT.pack(EXPORT_FRAME, COMPACT_VERSION, SYNC if sync else 0,
                                          seq) + record


def parse_export(payload: bytes) -> tuple[int, bool, bytes]:
    """``(seq, sync, record)`` of a compact export frame's payload."""
    if len(payload) < _EXPORT.size:
        raise ProtocolError("truncated export frame")
    _kind, version, flags, seq = _EXPORT.unpack_from(payload)
    if version != COMPACT_VERSION or flags & ~SYNC:
        raise ProtocolError(f"unsupported export frame (version {version}, flags {flags})")
    return seq, bool(flags & SYNC), payload[_EXPORT.size:]


def verdict_frame(seq: int, v: Verdict | None) -> bytes:
    """A compact verdict frame (length prefix included); None: the record was no event."""
    if v is None:
        return _HEADER.pack(_VERDICT.size) + _VERDICT.pack(
            VERDICT_FRAME, COMPACT_VERSION, NO_VERDICT, 0, seq, bytes(32))
    flags = (RELEASE if v.trusted else 0) | (ADDED if v.added else 0)
    return _HEADER.pack(_VERDICT.size) + _VERDICT.pack(
        VERDICT_FRAME, COMPACT_VERSION, flags, _MODE_INDEX[v.mode], seq, v.coefficient)


def parse_verdict(payload: bytes) -> tuple[int, Verdict | None]:
    """``(seq, verdict)`` of a compact verdict frame's payload."""
    if len(payload) != _VERDICT.size:
        raise ProtocolError("bad verdict frame size")
    _kind, version, flags, mode, seq, c = _VERDICT.unpack(payload)
    if version != COMPACT_VERSION or mode >= len(_MODES) or flags & ~7:
        raise ProtocolError(f"unsupported verdict frame (version {version})")
    if flags & NO_VERDICT:
        return seq, None
    return seq, Verdict(c, bool(flags & ADDED), bool(flags & RELEASE), _MODES[mode])


# ------------------------------------------------------------------ addresses


@dataclass(frozen=True)
class TLSFiles:
    """Certificate, its key and the CA that signs the peer's certificates (PEM files)."""

    cert: str
    key: str
    ca: str


@dataclass(frozen=True)
class Address:
    """``unix:PATH`` or ``tcp:HOST:PORT``."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.host}:{self.port}"


def parse_address(text: str, option: str = "--tma") -> Address:
    """Parse an ADDR option; InputError-like ProtocolError names the option."""
    kind, _, rest = text.partition(":")
    if kind == "unix" and rest:
        return Address("unix", path=rest)
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if host and port.isdigit() and 0 <= int(port) < 65536:
            return Address("tcp", host=host, port=int(port))
    raise ProtocolError(f"{option}: address must be unix:PATH or tcp:HOST:PORT, "
                        f"not {text!r}")


def server_context(tls: TLSFiles) -> ssl.SSLContext:
    """Mutual TLS, server side: a client certificate signed by ``tls.ca`` is required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(tls.cert, tls.key)
    ctx.load_verify_locations(tls.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(tls: TLSFiles) -> ssl.SSLContext:
    """Mutual TLS, client side: the TMA's certificate must be signed by ``tls.ca`` and
    name the host we dial."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(tls.cert, tls.key)
    ctx.load_verify_locations(tls.ca)
    return ctx


def connect(addr: Address, tls: TLSFiles | None, timeout: float) -> socket.socket:
    """A connected (and for TCP, TLS-wrapped) socket to the TMA."""
    if addr.kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(timeout)
        try:
            s.connect(addr.path)
        except OSError:
            s.close()
            raise
        return s
    if tls is None:
        raise ProtocolError(f"{addr}: a TCP TMA needs TLS files (certificate, key, CA)")
    raw = socket.create_connection((addr.host, addr.port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return client_context(tls).wrap_socket(raw, server_hostname=addr.host)
    except BaseException:
        raw.close()
        raise
