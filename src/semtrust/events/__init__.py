"""Canonical security events and the trajectory formats that carry them."""

from semtrust.events.names import EVENT_NAME_SET, EVENT_NAMES, EXPLICIT_CELLS
from semtrust.events.record import (
    ZERO32,
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
    LegacyEvent,
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

__all__ = [
    "EVENT_NAMES", "EVENT_NAME_SET", "EXPLICIT_CELLS", "ZERO32", "Aggregate", "Cell", "Coe",
    "Event", "FileCell", "FileDesc", "GenericCell", "Inet6Addr", "InetAddr", "Inode",
    "LegacyEvent", "LogRecord", "MmapCell", "OtherAddr", "PathName", "PseudonymRecord",
    "Record", "SockAddr", "SockDesc", "SocketAddrCell", "SocketCreateCell", "TaskKillCell",
    "UnixAddr",
]
