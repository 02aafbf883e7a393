"""The legacy text trajectory format (Quixote before JSON export, spec §3.5).

Lines look like ``event{k=v, …} COE{…} file{…}``. The format carries no
pathnames (only their digests), so there is no faithful conversion to the JSON
shape: we keep the line verbatim and reduce it at parse time to the COE and
CELL digests the legacy hashing defines. The clause and key lookups reproduce
the reference substring parser, quirks included, so coefficients match.
"""

from __future__ import annotations

import hashlib
import struct

from semtrust.errors import InputError
from semtrust.events.names import LEGACY_MEASURABLE, LEGACY_NAMES
from semtrust.events.numbers import hexbytes, strtoll, u32
from semtrust.events.record import LegacyEvent

_LEGACY_NAME_SET = frozenset(LEGACY_NAMES)
#: Constant that followed a generic event's sub-type in that era (not H("")).
LEGACY_GENERIC = bytes.fromhex("61878ae58a7c22b4eab932ed3fdf3454399beb48d744a70eab80c1d199d869c8")
_EMPTY = hashlib.sha256(b"").digest()
_INT64_MAX = (1 << 63) - 1


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def clause(line: str, name: str) -> str:
    """Body of the first ``NAME{`` that starts the line or follows a space."""
    tag = name + "{"
    start = 0
    while True:
        pos = line.find(tag, start)
        if pos < 0:
            raise InputError("missing clause", field=name)
        if pos == 0 or line[pos - 1] == " ":
            break
        start = pos + 1
    open_ = pos + len(tag)
    close = line.find("}", open_)
    if close < 0:
        raise InputError("clause has no closing '}'", field=name)
    body = line[open_:close]
    return body if body else "}"


def value(body: str, key: str, where: str) -> str:
    """Value of KEY in a clause body, with the reference's scan rules."""
    start = 0
    klen = len(key)
    while True:
        pos = body.find(key, start)
        if pos < 0:
            raise InputError("missing key", field=f"{where}.{key}")
        if (pos == 0 or body[pos - 1] == " ") and body[pos + klen : pos + klen + 1] == "=":
            break
        nxt = body.find(", ", pos)
        if nxt < 0:
            raise InputError("missing key", field=f"{where}.{key}")
        start = nxt + 2
    vstart = pos + klen + 1
    end = body.find(",", vstart)
    if end < 0:
        return body[vstart:]
    text = body[vstart:end]
    return text if text else ","


def _u32v(body: str, key: str, where: str) -> int:
    return u32(value(body, key, where), f"{where}.{key}")


def _hexv(body: str, key: str, where: str, size: int | None) -> bytes:
    return hexbytes(value(body, key, where), f"{where}.{key}", size)


def _file(line: str) -> tuple[bytes, bytes, bytes]:
    """FILE preimage split around the digest, and the pseudonym value of the file."""
    b = clause(line, "file")
    w = "file"
    s_id = _enc(value(b, "s_id", w))
    if len(s_id) > 31:
        raise InputError("s_id longer than 31 bytes", field="file.s_id")
    name_length = _u32v(b, "name_length", w)
    name = _hexv(b, "name", w, 32)
    head = (
        struct.pack(
            "<IIIHI",
            _u32v(b, "flags", w), _u32v(b, "uid", w), _u32v(b, "gid", w),
            _u32v(b, "mode", w) & 0xFFFF, name_length,
        )
        + name
        + struct.pack("<I", _u32v(b, "s_magic", w))
        + s_id.ljust(32, b"\0")
        + _hexv(b, "s_uuid", w, 16)
    )
    digest = _hexv(b, "digest", w, 32)
    pseudonym = hashlib.sha256(struct.pack("<I", name_length) + name).digest()
    return head, digest, pseudonym


def _u16(body: str, key: str, where: str) -> int:
    return _u32v(body, key, where) & 0xFFFF


def _socket_addr(line: str, kind: str) -> bytes:
    b = clause(line, kind)
    family = _u16(b, "family", kind)
    if kind == "socket_accept":
        head = struct.pack("<HHH", family, _u16(b, "type", kind), _u16(b, "port", kind))
        if family == 2:
            return head + struct.pack("<I", _u32v(b, "addr", kind))
        if family == 10:
            return head + _hexv(b, "addr", kind, 16)
        return head + _hexv(b, "addr", kind, 32)
    if family == 2:
        return struct.pack("<HHI", family, _u16(b, "port", kind), _u32v(b, "addr", kind))
    if family == 10:
        return (
            struct.pack("<HH", family, _u16(b, "port", kind))
            + _hexv(b, "addr", kind, 16)
            + struct.pack("<II", _u32v(b, "flow", kind), _u32v(b, "scope", kind))
        )
    return struct.pack("<H", family) + _hexv(b, "addr", kind, 32)


def parse_legacy(line: str, *, source: str = "<string>", lineno: int = 0) -> LegacyEvent:
    """Parse one legacy trajectory line into its digests."""
    try:
        return _parse(line)
    except InputError as exc:
        raise exc.located(source, lineno) from None


def _parse(line: str) -> LegacyEvent:
    if not line:
        raise InputError("empty line")
    if "pid{" in line:
        u32(clause(line, "pid"), "pid")
    ev = clause(line, "event")
    name = value(ev, "type", "event")
    if name not in _LEGACY_NAME_SET:
        raise InputError(f"unknown event type {name!r}", field="event.type")
    if name not in LEGACY_MEASURABLE:
        raise InputError(f"event type {name!r} has no legacy CELL", field="event.type")
    task_id = _hexv(ev, "task_id", "event", None)

    coe = clause(line, "COE")
    ids = [_u32v(coe, k, "COE") for k in ("uid", "euid", "suid", "gid", "egid", "sgid", "fsuid")]
    _u32v(coe, "fsgid", "COE")  # parsed and range-checked, but never hashed
    cap = strtoll(value(coe, "cap", "COE"), "COE.cap")
    if cap > _INT64_MAX:
        raise InputError("cap out of range", field="COE.cap")
    coe_id = hashlib.sha256(struct.pack("<8IQ", *ids, ids[6], cap & ((1 << 64) - 1))).digest()

    head: bytes
    digest = b""
    pseudonym: bytes | None = None
    if name == "file_open":
        head, digest, pseudonym = _file(line)
    elif name == "mmap_file":
        b = clause(line, "mmap_file")
        anonymous = _u32v(b, "type", "mmap_file") != 0
        head = struct.pack(
            "<III",
            _u32v(b, "reqprot", "mmap_file"), _u32v(b, "prot", "mmap_file"),
            _u32v(b, "flags", "mmap_file"),
        )
        if not anonymous:
            fhead, digest, pseudonym = _file(line)
            head += fhead
    elif name == "socket_create":
        b = clause(line, "socket_create")
        head = struct.pack(
            "<IIII", *(_u32v(b, k, "socket_create") for k in ("family", "type", "protocol", "kern"))
        )
    elif name in ("socket_connect", "socket_bind", "socket_accept"):
        head = _socket_addr(line, name)
    elif name == "task_kill":
        b = clause(line, "task_kill")
        head = struct.pack("<II", _u32v(b, "cross", "task_kill"), _u32v(b, "signal", "task_kill"))
        head += _hexv(b, "target", "task_kill", 32)
    else:  # generic_event
        head = _enc(value(clause(line, "generic_event"), "type", "generic_event")) + LEGACY_GENERIC
    cell_id = hashlib.sha256(head + digest).digest()
    alt = hashlib.sha256(head + _EMPTY).digest() if pseudonym is not None else None
    return LegacyEvent(name, line, coe_id, cell_id, task_id, alt, pseudonym)
