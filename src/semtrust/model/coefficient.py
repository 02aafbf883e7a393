"""Security state coefficients: pure functions, byte-compatible with the reference TMA.

``coefficient = H(name || task_id || H(COE) || H(CELL))`` (spec §2.1). All
integers are little-endian with the widths the reference uses. Nothing here
does I/O or keeps state, so the same functions serve replay, live sensors and
verifiers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Set

from semtrust.events.record import (
    Cell,
    Coe,
    Event,
    FileCell,
    FileDesc,
    GenericCell,
    Inet6Addr,
    InetAddr,
    Inode,
    LegacyEvent,
    MmapCell,
    OtherAddr,
    SockDesc,
    SocketAddrCell,
    SocketCreateCell,
    TaskKillCell,
    UnixAddr,
)
from semtrust.model.digest import sha256

ZERO = bytes(32)
EMPTY_DIGEST = sha256()
TMPFS_MAGIC = 0x01021994
_COE = struct.Struct("<8IQ")
_INODE = struct.Struct("<IIHI")  # after the u32 open flags
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SOCK = struct.Struct("<III")
_II = struct.Struct("<II")


def coe_digest(c: Coe) -> bytes:
    """COE_ID; the reference hashes fsuid in the fsgid slot (spec §2.3), and so must we."""
    return sha256(
        _COE.pack(c.uid, c.euid, c.suid, c.gid, c.egid, c.sgid, c.fsuid, c.fsuid, c.capeff)
    )


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def lstr(b: bytes) -> bytes:
    """The spec's length-prefixed string: ``u32(len) || bytes``."""
    return _U32.pack(len(b)) + b


def pseudonym(pathname: str) -> bytes:
    """Pseudonym value of a path: ``H(u32(len) || path)`` (spec §2.5)."""
    return sha256(lstr(_enc(pathname)))


def inode_preimage(i: Inode) -> bytes:
    """The inode's part of a file description: owner, mode, filesystem name and UUID."""
    s_id = _enc(i.s_id)
    return b"".join((
        _INODE.pack(i.uid, i.gid, i.mode, i.s_magic),
        s_id + bytes(32 - len(s_id)),
        ZERO[:16] if i.s_magic == TMPFS_MAGIC else i.s_uuid,
    ))


def path_preimage(path_type: str, pathname: bytes, instance: int, owner: bytes | None) -> bytes:
    """Where the file was reached; a file created in the domain is named by its directory,
    instance and creator instead of its full path (spec §2.4.1 rows 8-9)."""
    if instance:
        return b"".join((
            lstr(_enc(path_type)),
            lstr(pathname[: pathname.rfind(b"/") + 1]),
            _U64.pack(instance),
            owner if owner is not None else ZERO,
        ))
    return lstr(_enc(path_type)) + lstr(pathname)


def is_pseudonym(pathname: bytes, pseudonyms: Set[bytes]) -> bool:
    """True when the path's pseudonym is loaded: its content digest is then not hashed."""
    return bool(pseudonyms) and sha256(_U32.pack(len(pathname)), pathname) in pseudonyms


def file_preimage(f: FileDesc, pseudonyms: Set[bytes] = frozenset()) -> bytes:
    """The file description's bytes as they enter a CELL (spec §2.4.1)."""
    p = f.path
    path = _enc(p.pathname)
    return b"".join((
        _U32.pack(f.flags),
        inode_preimage(f.inode),
        path_preimage(p.type, path, p.instance, p.owner),
        EMPTY_DIGEST if is_pseudonym(path, pseudonyms) else f.digest,
    ))


def file_digest(f: FileDesc, pseudonyms: Set[bytes] = frozenset()) -> bytes:
    """CELL_ID of a ``file_open`` on this file."""
    return sha256(file_preimage(f, pseudonyms))


def _sock(s: SockDesc) -> bytes:
    return _SOCK.pack(s.family, s.type, s.protocol) + s.owner


def _addr_preimage(cell: SocketAddrCell, accept: bool) -> bytes:
    a = cell.addr
    family = cell.sock.family
    if family == 2 and isinstance(a, InetAddr):
        # The reference never parses an accepted socket's port (spec §9.2: 0).
        port = 0 if accept else a.port & 0xFFFF
        return struct.pack("<HI", port, a.address)
    if family == 10 and isinstance(a, Inet6Addr):
        # The reference never parses the IPv6 port at all.
        if accept:
            return b"\0\0" + a.address
        return b"\0\0" + a.address + _II.pack(a.flow, a.scope)
    if family == 1 and isinstance(a, UnixAddr):
        raw = _enc(a.address)
        nul = raw.find(b"\0")
        return raw if nul < 0 else raw[:nul]
    if isinstance(a, OtherAddr) and family not in (1, 2, 10):
        # connect/bind hash sizeof(pointer) bytes of the digest (a reference bug, kept).
        return a.address if accept else a.address[:8]
    raise ValueError(f"address {type(a).__name__} does not match socket family {family}")


def cell_preimage(ev: Event, pseudonyms: Set[bytes] = frozenset()) -> bytes:
    """The CELL preimage of an event (spec §2.4)."""
    return typed_cell_preimage(ev.type, ev.cell, pseudonyms)


def typed_cell_preimage(name: str, cell: Cell, pseudonyms: Set[bytes] = frozenset()) -> bytes:
    """The CELL preimage of a ``name`` event; accept differs from connect/bind (spec §9.2)."""
    if isinstance(cell, FileCell):
        return file_preimage(cell.file, pseudonyms)
    if isinstance(cell, MmapCell):
        head = file_preimage(cell.file, pseudonyms) if cell.file is not None else b""
        return head + _II.pack(cell.prot, cell.flags)
    if isinstance(cell, SocketCreateCell):
        return struct.pack("<IIII", cell.family, cell.type, cell.protocol, cell.kern)
    if isinstance(cell, SocketAddrCell):
        return _sock(cell.sock) + _addr_preimage(cell, name == "socket_accept")
    if isinstance(cell, TaskKillCell):
        return _II.pack(cell.cross_ns, cell.sig) + cell.target
    assert isinstance(cell, GenericCell)
    return _enc(name) + EMPTY_DIGEST


def cell_digest(ev: Event, pseudonyms: Set[bytes] = frozenset()) -> bytes:
    """CELL_ID of an event."""
    return sha256(cell_preimage(ev, pseudonyms))


def event_coefficient(ev: Event | LegacyEvent, pseudonyms: Set[bytes] = frozenset()) -> bytes:
    """The security state coefficient of one event."""
    if isinstance(ev, LegacyEvent):
        cell_id = ev.cell_id
        if pseudonyms and ev.pseudonym in pseudonyms and ev.cell_id_pseudonym is not None:
            cell_id = ev.cell_id_pseudonym
        return sha256(ev.type.encode(), ev.task_id, ev.coe_id, cell_id)
    return sha256(
        ev.type.encode(), ev.task_id, coe_digest(ev.coe), cell_digest(ev, pseudonyms)
    )


def task_identity(parent_task_id: bytes, coe: Coe, exe: FileDesc) -> bytes:
    """TASK_ID of a task after exec (spec §2.2): binds lineage, credentials and the binary."""
    return sha256(
        b"bprm_committed_creds", parent_task_id, ZERO, coe_digest(coe), file_digest(exe)
    )


def hw_aggregate(pcrs: Iterable[bytes]) -> bytes:
    """Hardware aggregate over PCR 0-7 values, each zero-padded to 32 bytes (spec §2.8)."""
    return sha256(*(p.ljust(32, b"\0") for p in pcrs))


def extend(measurement: bytes, value: bytes, base: bytes = ZERO) -> bytes:
    """``H(m || H(base || v))``: one step of the linear extension (spec §2.6)."""
    return sha256(measurement, sha256(base, value))


def aggregate_extension(hw_aggregate_value: bytes, base: bytes = ZERO) -> bytes:
    """The value a model's measurement and state start from."""
    return extend(ZERO, hw_aggregate_value, base)


def state_value(hw_aggregate_value: bytes, base: bytes, points: Iterable[bytes]) -> bytes:
    """Order-independent state: the aggregate first, then the sorted distinct points."""
    state = aggregate_extension(hw_aggregate_value, base)
    for p in sorted(set(points)):
        state = extend(state, p, base)
    return state
