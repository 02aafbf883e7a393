"""The canonical security event.

One immutable record per security event, in the shape of the TSEM JSON export
(spec §3.1): an event header, the context of execution (COE) and a CELL that
describes the object acted on. Sensors, trajectory files and the kernel export
all produce these, so the TMA never needs to know where an event came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

ZERO32 = bytes(32)


@dataclass(frozen=True, slots=True)
class Coe:
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


@dataclass(frozen=True, slots=True)
class Inode:
    """The inode facts the model binds: owner, mode and the filesystem identity."""

    uid: int
    gid: int
    mode: int
    s_magic: int
    s_id: str
    s_uuid: bytes


@dataclass(frozen=True, slots=True)
class PathName:
    """Where the file was reached; ``instance``/``owner`` mark files created in the domain."""

    pathname: str
    type: str = "root"
    instance: int = 0
    owner: bytes | None = None
    dev_major: int | None = None
    dev_minor: int | None = None


@dataclass(frozen=True, slots=True)
class FileDesc:
    """A file description: open flags, inode, path and content digest."""

    flags: int
    inode: Inode
    path: PathName
    digest: bytes


@dataclass(frozen=True, slots=True)
class FileCell:
    """CELL of ``file_open``."""

    file: FileDesc


@dataclass(frozen=True, slots=True)
class MmapCell:
    """CELL of ``mmap_file``; ``file`` is None for an anonymous mapping."""

    prot: int
    flags: int
    file: FileDesc | None = None


@dataclass(frozen=True, slots=True)
class SocketCreateCell:
    """CELL of ``socket_create``."""

    family: int
    type: int
    protocol: int
    kern: int = 0


@dataclass(frozen=True, slots=True)
class SockDesc:
    """The socket an address event acts on; ``owner`` is its creator's task identity."""

    family: int
    type: int
    protocol: int
    owner: bytes


@dataclass(frozen=True, slots=True)
class InetAddr:
    """IPv4 address with port and address as the kernel prints them (host-order ints)."""

    port: int
    address: int


@dataclass(frozen=True, slots=True)
class Inet6Addr:
    """IPv6 address; ``address`` is the 16 wire bytes."""

    port: int
    flow: int
    scope: int
    address: bytes


@dataclass(frozen=True, slots=True)
class UnixAddr:
    """AF_UNIX path (abstract names included as text)."""

    address: str


@dataclass(frozen=True, slots=True)
class OtherAddr:
    """Any other family: a 32-byte digest of the address."""

    address: bytes


SockAddr: TypeAlias = InetAddr | Inet6Addr | UnixAddr | OtherAddr


@dataclass(frozen=True, slots=True)
class SocketAddrCell:
    """CELL of ``socket_connect``, ``socket_bind`` and ``socket_accept``."""

    sock: SockDesc
    addr: SockAddr


@dataclass(frozen=True, slots=True)
class TaskKillCell:
    """CELL of ``task_kill``: the target's task identity and the signal."""

    target: bytes
    sig: int
    cross_ns: int = 0


@dataclass(frozen=True, slots=True)
class GenericCell:
    """CELL of every other event type; its content is kept but never hashed (spec §2.4.7)."""

    body: str = "{}"


Cell: TypeAlias = (
    FileCell | MmapCell | SocketCreateCell | SocketAddrCell | TaskKillCell | GenericCell
)

EXPORT_TYPES = ("event", "async_event", "log")


@dataclass(frozen=True, slots=True)
class Event:
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


@dataclass(frozen=True, slots=True)
class LegacyEvent:
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


@dataclass(frozen=True, slots=True)
class Aggregate:
    """An ``aggregate`` export record: the hardware aggregate of the platform."""

    value: bytes


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A ``log`` export record that carries no full event (spec §9.3): recorded, not modeled."""

    process: str
    event: str
    action: str


Record: TypeAlias = Event | LegacyEvent | Aggregate | LogRecord
