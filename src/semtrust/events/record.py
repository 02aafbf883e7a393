"""The canonical security event.

One immutable record per security event, in the shape of the TSEM JSON export
(spec §3.1): an event header, the context of execution (COE) and a CELL that
describes the object acted on. Sensors, trajectory files and the kernel export
all produce these, so the TMA never needs to know where an event came from.

The records are named tuples: immutable like frozen dataclasses, and about three
times cheaper to build, which matters at a million events per trajectory.
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias

ZERO32 = bytes(32)


class Coe(NamedTuple):
    """Context of execution: the task's credentials and effective capabilities."""

    uid: int
    euid: int
    suid: int
    gid: int
    egid: int
    sgid: int
    fsuid: int
    fsgid: int
    capeff: int


class Inode(NamedTuple):
    """The inode facts the model binds: owner, mode and the filesystem identity."""

    uid: int
    gid: int
    mode: int
    s_magic: int
    s_id: str
    s_uuid: bytes


class PathName(NamedTuple):
    """Where the file was reached; ``instance``/``owner`` mark files created in the domain."""

    pathname: str
    type: str = "root"
    instance: int = 0
    owner: bytes | None = None
    dev_major: int | None = None
    dev_minor: int | None = None


class FileDesc(NamedTuple):
    """A file description: open flags, inode, path and content digest."""

    flags: int
    inode: Inode
    path: PathName
    digest: bytes


class FileCell(NamedTuple):
    """CELL of ``file_open``."""

    file: FileDesc


class MmapCell(NamedTuple):
    """CELL of ``mmap_file``; ``file`` is None for an anonymous mapping."""

    prot: int
    flags: int
    file: FileDesc | None = None


class SocketCreateCell(NamedTuple):
    """CELL of ``socket_create``."""

    family: int
    type: int
    protocol: int
    kern: int = 0


class SockDesc(NamedTuple):
    """The socket an address event acts on; ``owner`` is its creator's task identity."""

    family: int
    type: int
    protocol: int
    owner: bytes


class InetAddr(NamedTuple):
    """IPv4 address with port and address as the kernel prints them (host-order ints)."""

    port: int
    address: int


class Inet6Addr(NamedTuple):
    """IPv6 address; ``address`` is the 16 wire bytes."""

    port: int
    flow: int
    scope: int
    address: bytes


class UnixAddr(NamedTuple):
    """AF_UNIX path (abstract names included as text)."""

    address: str


class OtherAddr(NamedTuple):
    """Any other family: a 32-byte digest of the address."""

    address: bytes


SockAddr: TypeAlias = InetAddr | Inet6Addr | UnixAddr | OtherAddr


class SocketAddrCell(NamedTuple):
    """CELL of ``socket_connect``, ``socket_bind`` and ``socket_accept``."""

    sock: SockDesc
    addr: SockAddr


class TaskKillCell(NamedTuple):
    """CELL of ``task_kill``: the target's task identity and the signal."""

    target: bytes
    sig: int
    cross_ns: int = 0


class GenericCell(NamedTuple):
    """CELL of every other event type; its content is kept but never hashed (spec §2.4.7)."""

    body: str = "{}"


Cell: TypeAlias = (
    FileCell | MmapCell | SocketCreateCell | SocketAddrCell | TaskKillCell | GenericCell
)

EXPORT_TYPES = ("event", "async_event", "log")


class Event(NamedTuple):
    """One security event: header, COE and CELL.

    Only ``type``, ``task_id``, ``coe`` and ``cell`` enter the coefficient; the
    other header fields describe the event for people and are never hashed.
    """

    type: str
    task_id: bytes
    coe: Coe
    cell: Cell
    export: str = "event"
    pid: int | None = None
    tnum: int | None = None
    context: int | None = None
    number: int | None = None
    process: str | None = None
    ttd: int | None = None
    p_ttd: int | None = None
    p_task_id: bytes | None = None
    ts: int | None = None


class LegacyEvent(NamedTuple):
    """An event in the pre-JSON text format (spec §3.5), hashed by the legacy rules.

    The text is kept verbatim: it is the only faithful description of it.
    ``coefficient`` and ``pseudonym_digest`` are computed once at parse time.
    """

    type: str
    text: str
    coe_id: bytes
    cell_id: bytes
    task_id: bytes
    cell_id_pseudonym: bytes | None
    pseudonym: bytes | None


class Aggregate(NamedTuple):
    """An ``aggregate`` export record: the hardware aggregate of the platform."""

    value: bytes


class PseudonymRecord(NamedTuple):
    """A ``pseudonym`` record: a pseudonym the exporting TMA applies from here on.

    Not a TSEM kernel record: semtrust's export declares its pseudonyms in the stream so
    that a TMA fed only by the stream computes the same coefficients.
    """

    value: bytes


class LogRecord(NamedTuple):
    """A ``log`` export record that carries no full event (spec §9.3): recorded, not modeled."""

    process: str
    event: str
    action: str


Record: TypeAlias = Event | LegacyEvent | Aggregate | PseudonymRecord | LogRecord
