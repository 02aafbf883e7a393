"""Coefficients straight from JSON export lines, without building events.

``points`` and ``replay`` need only each record's coefficient, and building
the full canonical event costs about three times the coefficient itself. Here
a line is decoded against a typed msgspec schema of the records we know,
the digests of COE and inode objects are cached by their raw JSON text, and
the CELL is hashed from the decoded fields. A COE or inode object that is not
in the cache is digested by the compiled ``_quick`` module straight from its
text when it has the plain shape (flat, string values, no escapes), else
decoded with orjson and read by the full parser's field rules.

This path only ever answers for lines it fully understands. A missing or
mistyped field, an out-of-range number, an unknown export type, a very long
or deeply nested line or anything else unusual makes it return None, and the
caller parses the line with the full parser, which then produces the
coefficient or names the error. So the two paths agree by construction on every line this one
accepts; ``tests/unit/test_quick.py`` checks it differentially on the
vectors, hypothesis events and mutated records.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Set
from typing import Annotated, Any

import msgspec
import orjson
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from semtrust.errors import InputError
from semtrust.events.describe import describe_text, family_name, type_name
from semtrust.events.jsonexport import parse_coe_object, parse_inode_object
from semtrust.events.names import EVENT_NAMES, EXPLICIT_CELLS
from semtrust.events.numbers import _U32_CACHE, strtoll, u32
from semtrust.events.record import (
    Inet6Addr,
    InetAddr,
    OtherAddr,
    SockDesc,
    SocketAddrCell,
    UnixAddr,
)
from semtrust.model.coefficient import (
    EMPTY_DIGEST,
    coe_digest,
    inode_preimage,
    is_pseudonym,
    lstr,
    path_preimage,
    typed_cell_preimage,
)
from semtrust.model.digest import sha256

try:
    from semtrust.model._quick import coe_id as _native_coe_id
    from semtrust.model._quick import inode_preimage as _native_inode_preimage
except ImportError:  # not built: every object through orjson, same answers
    COMPILED = False

    def _native_coe_id(raw: bytes, /) -> bytes | None:
        return None

    def _native_inode_preimage(raw: bytes, /) -> bytes | None:
        return None
else:
    COMPILED = True


def _never(raw: bytes, /) -> bytes | None:
    return None

_U32 = struct.Struct("<I")
_II = struct.Struct("<II")
_IIII = struct.Struct("<IIII")
_EVENT_EXPORTS = frozenset({"event", "async_event", "log"})
# What msgspec skips over in keys nobody reads, the full parser may refuse: integers
# over Python's 4300-digit limit (no such line fits in 4000 bytes) and nesting past
# orjson's 1024 levels, where its json fallback can exhaust the recursion limit (1000
# levels need 2000 bytes of brackets). A generic CELL is also re-serialised, by
# orjson up to 255 levels deep. Those lines all take the full parser.
_MAX_LINE = 4000
_MAX_NESTING = 1000
_MAX_GENERIC_NESTING = 200
# Each cache is emptied when full. Task identities get room for 65536 (about 13 MiB):
# a big trajectory has tens of thousands of tasks, and a cache that keeps emptying
# itself costs more than none.
_CACHE_LIMIT = 1 << 14
_TASK_CACHE_LIMIT = 1 << 16


# The schema: only what the coefficient and the full parser's checks read.
# Optional keys are UNSET when absent, so an explicit null is a type error
# (as it is for the full parser), never "absent".
class _Export(Struct, gc=False):
    type: str


# Header numbers are never hashed; the full parser only checks that strtoll reads them
# in range, which any string of at most 17 characters is (decimal, octal or hex).
# Longer ones fail validation here and take the full parser.
_Number = Annotated[str, Meta(max_length=17)]


class _Header(Struct, gc=False):
    type: str
    task_id: str
    # "" converts to 0 without error, exactly like an absent key does.
    pid: str = ""
    tnum: _Number = ""
    context: _Number = ""
    number: _Number = ""
    ttd: _Number = ""
    p_ttd: _Number = ""
    ts: _Number = ""
    process: str = ""
    p_task_id: str | UnsetType = UNSET


class _Dev(Struct, gc=False):
    """Any object: device numbers are never hashed, only the object is required."""


class _Path(Struct, gc=False):
    type: str
    pathname: str
    instance: str | UnsetType = UNSET
    owner: str | UnsetType = UNSET
    dev: _Dev | UnsetType = UNSET


class _File(Struct, gc=False):
    flags: str
    inode: Raw
    path: _Path
    digest: str


class _FileCell(Struct, gc=False):
    file: _File


class _MmapCell(Struct, gc=False):
    prot: str
    flags: str
    file: _File | UnsetType = UNSET


class _SocketCreate(Struct, gc=False):
    family: str
    type: str
    protocol: str
    kern: str


class _Sock(Struct, gc=False):
    family: str
    type: str
    protocol: str
    owner: str


class _Inet(Struct, gc=False):
    address: str
    port: str | UnsetType = UNSET


class _Inet6(Struct, gc=False):
    address: str
    flow: str | UnsetType = UNSET
    scope: str | UnsetType = UNSET


class _Unix(Struct, gc=False):
    address: str


class _Other(Struct, gc=False):
    address: str


class _Addr(Struct, gc=False):
    af_inet: _Inet | UnsetType = UNSET
    af_inet6: _Inet6 | UnsetType = UNSET
    af_unix: _Unix | UnsetType = UNSET
    af_other: _Other | UnsetType = UNSET


class _AddrCell(Struct, gc=False):
    sock: _Sock
    addr: _Addr


class _TaskKill(Struct, gc=False):
    target: str
    sig: str
    cross_ns: str


class _Record(Struct, gc=False):
    event: _Header
    COE: Raw
    export: _Export | UnsetType = UNSET
    file_open: _FileCell | UnsetType = UNSET
    mmap_file: _MmapCell | UnsetType = UNSET
    socket_create: _SocketCreate | UnsetType = UNSET
    socket_connect: _AddrCell | UnsetType = UNSET
    socket_bind: _AddrCell | UnsetType = UNSET
    socket_accept: _AddrCell | UnsetType = UNSET
    task_kill: _TaskKill | UnsetType = UNSET


_DECODER = msgspec.json.Decoder(_Record)

# Event name -> (its bytes, the generic CELL digest or None for explicit CELLs).
_NAMES: dict[str, tuple[bytes, bytes | None]] = {
    n: (n.encode(), None if n in EXPLICIT_CELLS
        else sha256(n.encode(), EMPTY_DIGEST))
    for n in EVENT_NAMES
}


class _Refused(Exception):
    """The line is outside this path; the full parser decides."""


def _num32(text: str) -> int:
    value = _U32_CACHE.get(text)
    if value is None:
        try:
            value = u32(text, "")
        except InputError:
            raise _Refused from None
    return value


def _num64(text: str) -> int:
    """A 64-bit field read like ``u64``: any strtoll value in range, then masked."""
    try:
        return strtoll(text) & 0xFFFFFFFFFFFFFFFF
    except InputError:
        raise _Refused from None


def _hex(text: str, size: int) -> bytes:
    """Exactly ``size`` bytes from exactly ``2 * size`` hex digits (fromhex skips spaces)."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise _Refused from None
    if len(value) != size or len(text) != 2 * size:
        raise _Refused
    return value


def _digest_object(
    cache: dict[bytes, bytes], raw: bytes, native: Callable[[bytes], bytes | None],
    digest: Callable[[dict[str, Any]], bytes],
) -> bytes:
    """``digest`` of a JSON object given as raw text, cached by that text (the same
    text always parses to the same fields): by ``native`` where it answers, else
    decoded and read by the full parser's rules. Anything the full parser would
    refuse is refused."""
    value = cache.get(raw)
    if value is not None:
        return value
    value = native(raw)
    if value is None:
        try:
            obj = orjson.loads(raw)
            if type(obj) is not dict:
                raise _Refused
            value = digest(obj)
        except (orjson.JSONDecodeError, InputError):
            raise _Refused from None
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[raw] = value
    return value


# The reference's string rule (spec §3.1): "\\X" -> "X", except the two escapes JSON
# needs, which decode to the same character under both rules. On bytes this is the
# full parser's text rewrite: a multi-byte character after a backslash keeps its bytes.
_C_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)


def _c_escape_pair(m: re.Match[bytes]) -> bytes:
    ch = m.group(1)
    return m.group(0) if ch in b'"\\' else ch


def _decode(raw: bytes) -> _Record | None:
    """The record on a line, read with the reference's string rule; None for what the
    schema does not take. (The rule only drops backslashes: the line's brackets, which
    the nesting checks count, stay the same.)"""
    if len(raw) > _MAX_LINE:
        return None
    if b"\\" in raw:
        raw = _C_ESCAPE.sub(_c_escape_pair, raw)
    try:
        return _DECODER.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None


class QuickCoefficients:
    """Computes coefficients of JSON export lines; ``of_line`` returns None to defer.

    Holds bounded caches (COE and inode digests by raw text, task identities by
    hex text) and the pseudonyms of the model in use.
    """

    def __init__(self, pseudonyms: Set[bytes] = frozenset(), native: bool = True) -> None:
        """``native=False`` keeps the compiled object digests out (the tests compare)."""
        self._pseudonyms = frozenset(pseudonyms)
        self._native_coe = _native_coe_id if native else _never
        self._native_inode = _native_inode_preimage if native else _never
        self._coes: dict[bytes, bytes] = {}
        self._inodes: dict[bytes, bytes] = {}
        self._tasks: dict[str, bytes] = {}
        self._kinds: dict[str, bytes] = {}  # path type -> its length-prefixed bytes

    def add_pseudonym(self, value: bytes) -> None:
        """A pseudonym declared by the stream itself (none of the caches depend on it)."""
        self._pseudonyms = self._pseudonyms | {value}

    def of_line(self, raw: bytes) -> bytes | None:
        """The coefficient of one event line, or None if the full parser must decide
        (aggregate and log records, errors, and every unusual shape)."""
        rec = _decode(raw)
        if rec is None:
            return None
        try:
            return self._coefficient(rec, raw)
        except _Refused:
            return None

    def _coefficient(self, rec: _Record, raw: bytes) -> bytes:
        h = rec.event
        names = _NAMES.get(h.type)
        if names is None:
            raise _Refused
        export = rec.export
        if export is not UNSET and export.type not in _EVENT_EXPORTS:
            raise _Refused
        if h.pid not in _U32_CACHE:
            _num32(h.pid)
        tasks = self._tasks
        task_id = tasks.get(h.task_id) or self._task(h.task_id)
        if h.p_task_id is not UNSET and h.p_task_id not in tasks:
            self._task(h.p_task_id)
        coe_raw = bytes(rec.COE)
        coe_id = self._coes.get(coe_raw) or self._coe(coe_raw)
        name, cell_id = names
        if cell_id is None:
            if len(raw) > 2 * _MAX_NESTING and (
                    raw.count(b"[") + raw.count(b"{") > _MAX_NESTING):
                raise _Refused
            cell_id = sha256(self._cell(h.type, rec))
        elif raw.count(b"[") + raw.count(b"{") > _MAX_GENERIC_NESTING:
            raise _Refused
        return sha256(name, task_id, coe_id, cell_id)

    def describe_line(self, raw: bytes) -> str | None:
        """``describe`` of the event on a line ``of_line`` answered for, read through the
        same schema instead of the full parser; None where only the full parser can say
        (socket addresses, whose unhashed ports are read leniently, and any odd line)."""
        rec = _decode(raw)
        if rec is None:
            return None
        name = rec.event.type
        try:
            obj = self._object_text(name, rec)
        except _Refused:
            return None
        return describe_text(name, rec.event.process, obj)

    @staticmethod
    def _object_text(name: str, rec: _Record) -> str:
        """What ``describe`` shows of the object acted on (``_Refused`` if unsure)."""
        if name == "file_open" and rec.file_open is not UNSET:
            return rec.file_open.file.path.pathname
        if name == "mmap_file" and rec.mmap_file is not UNSET:
            mm = rec.mmap_file
            where = "anonymous" if mm.file is UNSET else mm.file.path.pathname
            return f"{where} prot={_num32(mm.prot):#x}"
        if name == "socket_create" and rec.socket_create is not UNSET:
            sc = rec.socket_create
            return (f"{family_name(_num32(sc.family))} {type_name(_num32(sc.type))} "
                    f"protocol={_num32(sc.protocol)}")
        if name == "task_kill" and rec.task_kill is not UNSET:
            tk = rec.task_kill
            return f"sig={_num32(tk.sig)} target={_hex(tk.target, 32).hex()[:16]}"
        if name in _NAMES and name not in EXPLICIT_CELLS:
            return ""
        raise _Refused  # socket addresses, and cells that are missing

    # ------------------------------------------------------------------ parts
    def _task(self, text: str) -> bytes:
        value = self._tasks.get(text)
        if value is None:
            if not text or len(text) & 1:
                raise _Refused
            try:
                value = bytes.fromhex(text)
            except ValueError:
                raise _Refused from None
            if 2 * len(value) != len(text):  # fromhex skipped white space
                raise _Refused
            if len(self._tasks) >= _TASK_CACHE_LIMIT:
                self._tasks.clear()
            self._tasks[text] = value
        return value

    def _coe(self, raw: bytes) -> bytes:
        return _digest_object(self._coes, raw, self._native_coe,
                              lambda obj: coe_digest(parse_coe_object(obj)))

    def _inode(self, raw: bytes) -> bytes:
        return _digest_object(
            self._inodes, raw, self._native_inode,
            lambda obj: inode_preimage(parse_inode_object(obj)))

    def _file(self, f: _File) -> bytes:
        p = f.path
        pathname = p.pathname.encode()
        digest = _hex(f.digest, 32)  # checked even when a pseudonym replaces it
        if self._pseudonyms and is_pseudonym(pathname, self._pseudonyms):
            digest = EMPTY_DIGEST
        inode = bytes(f.inode)
        flags = _U32_CACHE.get(f.flags)
        head = _U32.pack(_num32(f.flags) if flags is None else flags) + (
            self._inodes.get(inode) or self._inode(inode))
        if p.instance is UNSET:
            kind = self._kinds.get(p.type)
            if kind is None:
                if len(self._kinds) >= _CACHE_LIMIT:
                    self._kinds.clear()
                kind = self._kinds[p.type] = lstr(p.type.encode())
            return b"".join((head, kind, lstr(pathname), digest))
        instance = _num64(p.instance)
        owner = None
        if instance:
            if p.owner is UNSET or b"/" not in pathname:
                raise _Refused
            owner = _hex(p.owner, 32)
        return b"".join((head, path_preimage(p.type, pathname, instance, owner), digest))

    def _cell(self, name: str, rec: _Record) -> bytes:
        if name == "file_open":
            cell = rec.file_open
            if cell is UNSET:
                raise _Refused
            return self._file(cell.file)
        if name == "mmap_file":
            mm = rec.mmap_file
            if mm is UNSET:
                raise _Refused
            head = self._file(mm.file) if mm.file is not UNSET else b""
            return head + _II.pack(_num32(mm.prot), _num32(mm.flags))
        if name == "socket_create":
            sc = rec.socket_create
            if sc is UNSET:
                raise _Refused
            return _IIII.pack(
                _num32(sc.family), _num32(sc.type), _num32(sc.protocol), _num32(sc.kern)
            )
        if name == "task_kill":
            tk = rec.task_kill
            if tk is UNSET:
                raise _Refused
            return _II.pack(_num32(tk.cross_ns), _num32(tk.sig)) + _hex(tk.target, 32)
        return self._addr_cell(name, rec)

    def _addr_cell(self, name: str, rec: _Record) -> bytes:
        ac = (rec.socket_connect if name == "socket_connect"
              else rec.socket_bind if name == "socket_bind" else rec.socket_accept)
        if ac is UNSET:
            raise _Refused
        s = ac.sock
        sock = SockDesc(_num32(s.family), _num32(s.type), _num32(s.protocol), _hex(s.owner, 32))
        accept = name == "socket_accept"
        a = ac.addr
        addr: InetAddr | Inet6Addr | UnixAddr | OtherAddr
        if sock.family == 2:
            v4 = a.af_inet
            if v4 is UNSET:
                raise _Refused
            if accept:
                port = 0
            elif v4.port is UNSET:
                raise _Refused
            else:
                port = _num32(v4.port)
            addr = InetAddr(port, _num32(v4.address))
        elif sock.family == 10:
            v6 = a.af_inet6
            if v6 is UNSET:
                raise _Refused
            flow = scope = 0
            if not accept:
                if v6.flow is UNSET or v6.scope is UNSET:
                    raise _Refused
                flow, scope = _num32(v6.flow), _num32(v6.scope)
            addr = Inet6Addr(0, flow, scope, _hex(v6.address, 16))
        elif sock.family == 1:
            un = a.af_unix
            if un is UNSET or len(un.address.encode()) > 108:
                raise _Refused
            addr = UnixAddr(un.address)
        else:
            other = a.af_other
            if other is UNSET:
                raise _Refused
            addr = OtherAddr(_hex(other.address, 32))
        return typed_cell_preimage(name, SocketAddrCell(sock, addr), self._pseudonyms)

