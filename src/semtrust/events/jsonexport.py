"""TSEM JSON export records: parse into canonical events and format them back.

The reference parser reads every scalar as a quoted string, converts numbers
with C ``strtoll`` (base 0) and un-escapes strings by dropping a backslash and
keeping the next character. We let ``json.loads`` do the tokenising and apply
those rules on top, so a record parses here exactly as it does in the
reference TMA (spec §3.1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

from semtrust.errors import InputError
from semtrust.events.generic import generic_body
from semtrust.events.names import EVENT_NAME_SET, EXPLICIT_CELLS
from semtrust.events.numbers import _U32_CACHE, hexbytes, strtoll, u16, u32, u64
from semtrust.events.record import (
    Aggregate,
    Cell,
    Coe,
    Event,
    FileCell,
    FileDesc,
    GenericCell,
    Inet6Addr,
    InetAddr,
    Inode,
    LogRecord,
    MmapCell,
    OtherAddr,
    PathName,
    PseudonymRecord,
    Record,
    SockAddr,
    SockDesc,
    SocketAddrCell,
    SocketCreateCell,
    TaskKillCell,
    UnixAddr,
)

_JSONObj = dict[str, Any]

# ``\X`` -> ``X`` (C rule), except ``\"`` and ``\\`` which JSON needs and which
# decode to the same character under both rules. Pairs are consumed left to right.
_C_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _c_escape_pair(m: re.Match[str]) -> str:
    ch = m.group(1)
    return m.group(0) if ch in '"\\' else ch


_decoder = json.JSONDecoder(strict=False)


def _loads(text: str) -> Any:
    if "\\" in text:
        text = _C_ESCAPE.sub(_c_escape_pair, text)
    try:
        # orjson tokenises 3-4x faster than json; json decides what orjson refuses
        # (raw control characters, non-UTF-8 bytes kept as surrogates).
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _decoder.decode(text)


_COE_KEYS = ("uid", "euid", "suid", "gid", "egid", "sgid", "fsuid", "fsgid", "capeff")
_COE_CACHE: dict[tuple[object, ...], Coe] = {}
_INODE_CACHE: dict[tuple[object, ...], Inode] = {}
_CACHE_LIMIT = 1 << 14


def _cached(cache: dict[tuple[object, ...], Any], key: tuple[object, ...], value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _obj(parent: _JSONObj, key: str, path: str) -> _JSONObj:
    try:
        value = parent[key]
    except KeyError:
        raise InputError("missing object", field=f"{path}{key}") from None
    if not isinstance(value, dict):
        raise InputError("expected an object", field=f"{path}{key}")
    return value


def _str(parent: _JSONObj, key: str, path: str) -> str:
    try:
        value = parent[key]
    except KeyError:
        raise InputError("missing key", field=f"{path}{key}") from None
    if not isinstance(value, str):
        raise InputError("expected a quoted string", field=f"{path}{key}")
    return value


def _u32(parent: _JSONObj, key: str, path: str) -> int:
    text = parent.get(key)
    if type(text) is str:
        cached = _U32_CACHE.get(text)
        if cached is not None:
            return cached
        return u32(text, path + key)
    return u32(_str(parent, key, path), path + key)


def _hex(parent: _JSONObj, key: str, path: str, size: int | None) -> bytes:
    text = parent.get(key)
    if type(text) is not str:
        text = _str(parent, key, path)
    return hexbytes(text, path + key, size)


def _opt_u32(parent: _JSONObj, key: str, path: str) -> int | None:
    return _u32(parent, key, path) if key in parent else None


def _unhashed(parent: _JSONObj, key: str, path: str) -> int:
    """A number the reference never parses: kept for display, never an error."""
    value = parent.get(key)
    if not isinstance(value, str):
        return 0
    try:
        return strtoll(value, f"{path}{key}") & 0xFFFFFFFF
    except InputError:
        return 0


def _parse_coe(d: _JSONObj) -> Coe:
    c = _obj(d, "COE", "")
    key = tuple(map(c.get, _COE_KEYS))
    try:
        coe = _COE_CACHE.get(key)
    except TypeError:  # a list/object where a number belongs: the field parser names it
        coe = None
    if coe is None:
        coe = parse_coe_object(c)
        _cached(_COE_CACHE, key, coe)
    return coe


def parse_coe_object(c: _JSONObj) -> Coe:
    """The decoded ``COE`` object's credentials and capabilities."""
    p = "COE."
    return Coe(
        _u32(c, "uid", p), _u32(c, "euid", p), _u32(c, "suid", p),
        _u32(c, "gid", p), _u32(c, "egid", p), _u32(c, "sgid", p),
        _u32(c, "fsuid", p), _u32(c, "fsgid", p),
        u64(_str(c, "capeff", p), "COE.capeff"),
    )


_INODE_KEYS = ("uid", "gid", "mode", "s_magic", "s_id", "s_uuid")


def parse_inode_object(i: _JSONObj, ip: str = "file.inode.") -> Inode:
    """A decoded ``inode`` object; ``ip`` prefixes the field names in errors."""
    s_id = _str(i, "s_id", ip)
    if len(s_id.encode("utf-8", "surrogateescape")) > 31:
        raise InputError("s_id longer than 31 bytes", field=f"{ip}s_id")
    return Inode(
        _u32(i, "uid", ip), _u32(i, "gid", ip),
        u16(_str(i, "mode", ip), f"{ip}mode"),
        _u32(i, "s_magic", ip), s_id, _hex(i, "s_uuid", ip, 16),
    )


def _parse_file(cell: _JSONObj, path: str) -> FileDesc:
    f = _obj(cell, "file", path)
    fp = f"{path}file."
    i = _obj(f, "inode", fp)
    ip = f"{fp}inode."
    ikey = tuple(map(i.get, _INODE_KEYS))
    try:
        inode = _INODE_CACHE.get(ikey)
    except TypeError:  # unhashable (list/object) value: the field parser names it
        inode = None
    if inode is None:
        inode = parse_inode_object(i, ip)
        _cached(_INODE_CACHE, ikey, inode)
    pa = _obj(f, "path", fp)
    pp = f"{fp}path."
    instance = 0
    owner = None
    if "instance" in pa:
        instance = u64(_str(pa, "instance", pp), f"{pp}instance")
        if instance:
            owner = _hex(pa, "owner", pp, 32)
    dev_major = dev_minor = None
    if "dev" in pa:
        dev = _obj(pa, "dev", pp)
        dev_major = _unhashed(dev, "major", f"{pp}dev.")
        dev_minor = _unhashed(dev, "minor", f"{pp}dev.")
    pathname = _str(pa, "pathname", pp)
    if instance and "/" not in pathname:
        raise InputError("created-in-namespace path has no '/'", field=f"{pp}pathname")
    name = PathName(pathname, _str(pa, "type", pp), instance, owner, dev_major, dev_minor)
    return FileDesc(_u32(f, "flags", fp), inode, name, _hex(f, "digest", fp, 32))


def _parse_sock(cell: _JSONObj, path: str) -> SockDesc:
    s = _obj(cell, "sock", path)
    sp = f"{path}sock."
    return SockDesc(
        _u32(s, "family", sp), _u32(s, "type", sp), _u32(s, "protocol", sp),
        _hex(s, "owner", sp, 32),
    )


def _parse_addr(cell: _JSONObj, family: int, path: str, accept: bool) -> SockAddr:
    a = _obj(cell, "addr", path)
    ap = f"{path}addr."
    if family == 2:
        v4 = _obj(a, "af_inet", ap)
        p4 = f"{ap}af_inet."
        port = _unhashed(v4, "port", p4) if accept else _u32(v4, "port", p4)
        return InetAddr(port, _u32(v4, "address", p4))
    if family == 10:
        v6 = _obj(a, "af_inet6", ap)
        p6 = f"{ap}af_inet6."
        port = _unhashed(v6, "port", p6)
        if accept:
            flow, scope = _unhashed(v6, "flow", p6), _unhashed(v6, "scope", p6)
        else:
            flow, scope = _u32(v6, "flow", p6), _u32(v6, "scope", p6)
        return Inet6Addr(port, flow, scope, _hex(v6, "address", p6, 16))
    if family == 1:
        un = _obj(a, "af_unix", ap)
        address = _str(un, "address", f"{ap}af_unix.")
        if len(address.encode("utf-8", "surrogateescape")) > 108:
            raise InputError("AF_UNIX path longer than 108 bytes", field=f"{ap}af_unix.address")
        return UnixAddr(address)
    other = _obj(a, "af_other", ap)
    return OtherAddr(_hex(other, "address", f"{ap}af_other.", 32))


def _parse_cell(name: str, d: _JSONObj) -> Cell:
    if name not in EXPLICIT_CELLS:
        body = d.get(name, {})
        return GenericCell(generic_body(body))
    cell = _obj(d, name, "")
    p = f"{name}."
    if name == "file_open":
        return FileCell(_parse_file(cell, p))
    if name == "mmap_file":
        file = _parse_file(cell, p) if "file" in cell else None
        return MmapCell(_u32(cell, "prot", p), _u32(cell, "flags", p), file)
    if name == "socket_create":
        return SocketCreateCell(
            _u32(cell, "family", p), _u32(cell, "type", p), _u32(cell, "protocol", p),
            _u32(cell, "kern", p),
        )
    if name == "task_kill":
        return TaskKillCell(
            _hex(cell, "target", p, 32), _u32(cell, "sig", p), _u32(cell, "cross_ns", p)
        )
    sock = _parse_sock(cell, p)
    return SocketAddrCell(sock, _parse_addr(cell, sock.family, p, name == "socket_accept"))


def _parse_event(d: _JSONObj, export: str) -> Event:
    ev = _obj(d, "event", "")
    name = _str(ev, "type", "event.")
    if name not in EVENT_NAME_SET:
        raise InputError(f"unknown event type {name!r}", field="event.type")
    task_id = _hex(ev, "task_id", "event.", None)
    coe = _parse_coe(d)
    cell = _parse_cell(name, d)
    p = "event."
    tnum, context, number, ttd, p_ttd, ts = _header_nums(ev)
    return Event(
        name, task_id, coe, cell, export,
        pid=_opt_u32(ev, "pid", p),
        tnum=tnum, context=context, number=number,
        process=_str(ev, "process", p) if "process" in ev else None,
        ttd=ttd, p_ttd=p_ttd,
        p_task_id=_hex(ev, "p_task_id", p, None) if "p_task_id" in ev else None,
        ts=ts,
    )


_HEADER_NUMS = ("tnum", "context", "number", "ttd", "p_ttd", "ts")
# Six short decimals without a leading zero (which would be octal), as one string.
_PLAIN_DECIMALS = re.compile(r"(?:[1-9][0-9]{0,17}|0)(?:,(?:[1-9][0-9]{0,17}|0)){5}", re.ASCII)


def _header_nums(ev: _JSONObj) -> list[int | None]:
    """The header numbers. They are never hashed: when all six are plain short decimals
    (the kernel's form: 18 digits always fit in 63 bits) one match checks them all;
    anything else goes through the C converter field by field."""
    values = [ev.get(k) for k in _HEADER_NUMS]
    try:
        if _PLAIN_DECIMALS.fullmatch(",".join(values)):  # type: ignore[arg-type]
            return [int(v) for v in values]  # type: ignore[arg-type]
    except TypeError:  # a missing field or a non-string value
        pass
    return [None if v is None else u64(_str(ev, k, "event."), "event." + k)
            for k, v in zip(_HEADER_NUMS, values, strict=True)]


def parse_object(d: Any) -> Record:
    """Turn one decoded export record into a canonical record."""
    if not isinstance(d, dict):
        raise InputError("a record must be a JSON object")
    if "export" in d:
        export = _str(_obj(d, "export", ""), "type", "export.")
    elif "aggregate" in d and "event" not in d:
        export = "aggregate"
    elif "log" in d and "event" not in d:
        export = "log"
    else:
        export = "event"
    if export == "aggregate":
        return Aggregate(_hex(_obj(d, "aggregate", ""), "value", "aggregate.", 32))
    if export == "pseudonym":
        return PseudonymRecord(_hex(_obj(d, "pseudonym", ""), "value", "pseudonym.", 32))
    if export == "log" and "event" not in d:
        lg = _obj(d, "log", "")
        return LogRecord(
            _str(lg, "process", "log."), _str(lg, "event", "log."), _str(lg, "action", "log.")
        )
    if export not in ("event", "async_event", "log"):
        raise InputError(f"unknown export type {export!r}", field="export.type")
    return _parse_event(d, export)


def parse_record_bytes(raw: bytes, *, source: str = "<bytes>", line: int = 0) -> Record:
    """Parse one JSON export line as read from a file.

    A line with no backslash that is valid UTF-8 goes to orjson as bytes (no decode,
    no escape rewriting); every other line takes the text path of ``parse_record``.
    """
    if b"\\" not in raw:
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            return _parse_located(d, source, line)
    return parse_record(raw.decode("utf-8", "surrogateescape"), source=source, line=line)


def _parse_located(d: Any, source: str, line: int) -> Record:
    try:
        return parse_object(d)
    except InputError as exc:
        raise exc.located(source, line) from None
    except RecursionError:  # a generic CELL too deep for json.dumps (orjson reads 1023 levels)
        raise InputError("record nested too deeply", source=source, line=line) from None


def parse_record(text: str, *, source: str = "<string>", line: int = 0) -> Record:
    """Parse one JSON export line; errors name ``source``, ``line`` and the field."""
    try:
        d = _loads(text)
    except ValueError as exc:
        raise InputError(f"not a JSON record: {exc}", source=source, line=line) from None
    except RecursionError:
        raise InputError("record nested too deeply", source=source, line=line) from None
    return _parse_located(d, source, line)


# --------------------------------------------------------------------------- format


def _q(s: str) -> str:
    """Quote a string so the C rule reads it back unchanged (``\\"`` and ``\\\\``)."""
    return json.dumps(s, ensure_ascii=False)


def _format_file(f: FileDesc) -> str:
    i, p = f.inode, f.path
    path = []
    if p.dev_major is not None or p.dev_minor is not None:
        path.append(
            f'"dev": {{"major": "{p.dev_major or 0}", "minor": "{p.dev_minor or 0}"}}'
        )
    if p.instance:
        owner = (p.owner or bytes(32)).hex()
        path.append(f'"owner": "{owner}", "instance": "{_u64_text(p.instance)}"')
    path.append(f'"type": {_q(p.type)}, "pathname": {_q(p.pathname)}')
    return (
        f'"file": {{"flags": "{f.flags}", "inode": {{"uid": "{i.uid}", "gid": "{i.gid}", '
        f'"mode": "0{i.mode:o}", "s_magic": "0x{i.s_magic:x}", "s_id": {_q(i.s_id)}, '
        f'"s_uuid": "{i.s_uuid.hex()}"}}, "path": {{{", ".join(path)}}}, '
        f'"digest": "{f.digest.hex()}"}}'
    )


def _format_addr(addr: SockAddr) -> str:
    if isinstance(addr, InetAddr):
        return f'"af_inet": {{"port": "{addr.port}", "address": "{addr.address}"}}'
    if isinstance(addr, Inet6Addr):
        return (
            f'"af_inet6": {{"port": "{addr.port}", "flow": "{addr.flow}", '
            f'"scope": "{addr.scope}", "address": "{addr.address.hex()}"}}'
        )
    if isinstance(addr, UnixAddr):
        return f'"af_unix": {{"address": {_q(addr.address)}}}'
    return f'"af_other": {{"address": "{addr.address.hex()}"}}'


def format_cell(cell: Cell) -> str:
    """The CELL object's body (without its key) in ABI-v4 shape."""
    if isinstance(cell, FileCell):
        return "{" + _format_file(cell.file) + "}"
    if isinstance(cell, MmapCell):
        parts = [_format_file(cell.file)] if cell.file is not None else []
        parts.append(f'"prot": "{cell.prot}", "flags": "{cell.flags}"')
        return "{" + ", ".join(parts) + "}"
    if isinstance(cell, SocketCreateCell):
        return (
            f'{{"family": "{cell.family}", "type": "{cell.type}", '
            f'"protocol": "{cell.protocol}", "kern": "{cell.kern}"}}'
        )
    if isinstance(cell, SocketAddrCell):
        s = cell.sock
        return (
            f'{{"sock": {{"family": "{s.family}", "type": "{s.type}", '
            f'"protocol": "{s.protocol}", "owner": "{s.owner.hex()}"}}, '
            f'"addr": {{{_format_addr(cell.addr)}}}}}'
        )
    if isinstance(cell, TaskKillCell):
        return (
            f'{{"target": "{cell.target.hex()}", "sig": "{cell.sig}", '
            f'"cross_ns": "{cell.cross_ns}"}}'
        )
    return cell.body


def _cap_text(cap: int) -> str:
    """Hex capability mask; above 2^63 as the negative value strtoll reads back to it."""
    return f"0x{cap:x}" if cap < (1 << 63) else f"-0x{(1 << 64) - cap:x}"


def _u64_text(value: int) -> str:
    """A 64-bit field in decimal; above 2^63 as the negative value strtoll reads back to
    it (``u64`` masks ``-2`` to 2^64 - 2, but refuses 18446744073709551614)."""
    return str(value) if value < (1 << 63) else str(value - (1 << 64))


_HEADER_INTS = ("pid", "tnum", "context", "number")


def _process_member(process: str) -> str:
    return f'"process": {_q(process)}'


def header_members(ev: Event, process: Callable[[str], str] = _process_member) -> str:
    """The members of an event's header object (no braces), in the reference's order;
    ``process`` gives the ``"process": ...`` member (a caller may cache it)."""
    head: list[str] = []
    for key in _HEADER_INTS:
        value = getattr(ev, key)
        if value is not None:
            head.append(f'"{key}": "{_u64_text(value)}"')
    if ev.process is not None:
        head.append(process(ev.process))
    head.append(f'"type": "{ev.type}"')
    if ev.ttd is not None:
        head.append(f'"ttd": "{_u64_text(ev.ttd)}"')
    if ev.p_ttd is not None:
        head.append(f'"p_ttd": "{_u64_text(ev.p_ttd)}"')
    head.append(f'"task_id": "{ev.task_id.hex()}"')
    if ev.p_task_id is not None:
        head.append(f'"p_task_id": "{ev.p_task_id.hex()}"')
    if ev.ts is not None:
        head.append(f'"ts": "{_u64_text(ev.ts)}"')
    return ", ".join(head)


def format_event(ev: Event, *, export: bool = True) -> str:
    """One JSON export line (no newline); ``export=False`` drops the wrapper."""
    head = header_members(ev)
    c = ev.coe
    coe = (
        f'"COE": {{"uid": "{c.uid}", "euid": "{c.euid}", "suid": "{c.suid}", '
        f'"gid": "{c.gid}", "egid": "{c.egid}", "sgid": "{c.sgid}", "fsuid": "{c.fsuid}", '
        f'"fsgid": "{c.fsgid}", "capeff": "{_cap_text(c.capeff)}"}}'
    )
    body = f'"event": {{{head}}}, {coe}, "{ev.type}": {format_cell(ev.cell)}'
    if export:
        return f'{{"export": {{"type": "{ev.export}"}}, {body}}}'
    return "{" + body + "}"


def format_pseudonym(value: bytes) -> str:
    """The ``pseudonym`` record semtrust's export declares its pseudonyms with."""
    return f'{{"export": {{"type": "pseudonym"}}, "pseudonym": {{"value": "{value.hex()}"}}}}'


def format_aggregate(value: bytes) -> str:
    """The ``aggregate`` export record."""
    return f'{{"export": {{"type": "aggregate"}}, "aggregate": {{"value": "{value.hex()}"}}}}'


