"""One-line human descriptions of events, for model comments, diffs and consoles."""

from __future__ import annotations

import ipaddress
import socket

from semtrust.events.record import (
    Event,
    FileCell,
    Inet6Addr,
    InetAddr,
    LegacyEvent,
    MmapCell,
    OtherAddr,
    SocketAddrCell,
    SocketCreateCell,
    TaskKillCell,
    UnixAddr,
)


def _addr(cell: SocketAddrCell) -> str:
    a = cell.addr
    if isinstance(a, InetAddr):
        ip = ipaddress.IPv4Address(a.address.to_bytes(4, "little"))
        port = int.from_bytes((a.port & 0xFFFF).to_bytes(2, "little"), "big")
        return f"{ip}:{port}"
    if isinstance(a, Inet6Addr):
        port = int.from_bytes((a.port & 0xFFFF).to_bytes(2, "little"), "big")
        return f"[{ipaddress.IPv6Address(a.address)}]:{port}"
    if isinstance(a, UnixAddr):
        return f"unix:{a.address}"
    assert isinstance(a, OtherAddr)
    return f"{family_name(cell.sock.family)} {a.address.hex()[:16]}"


def family_name(family: int) -> str:
    """``AF_INET`` for 2; the number for families Python does not name."""
    try:
        return socket.AddressFamily(family).name
    except ValueError:
        return f"family {family}"


_SOCK_FLAGS = ((0o2000000, "SOCK_CLOEXEC"), (0o4000, "SOCK_NONBLOCK"))


def type_name(kind: int) -> str:
    """``SOCK_STREAM`` for 1 (with ``|SOCK_NONBLOCK``-style flags when present)."""
    base = kind & 0xF
    try:
        text = socket.SocketKind(base).name
    except ValueError:
        text = f"type {base}"
    rest = kind & ~0xF
    for bit, name in _SOCK_FLAGS:
        if rest & bit:
            text += f"|{name}"
            rest &= ~bit
    return text + (f"|{rest:#x}" if rest else "")


def describe(ev: Event | LegacyEvent) -> str:
    """``type process object`` in a single line (no newlines, bounded length)."""
    if isinstance(ev, LegacyEvent):
        return f"{ev.type} (legacy record)"
    obj = ""
    cell = ev.cell
    if isinstance(cell, FileCell):
        obj = cell.file.path.pathname
    elif isinstance(cell, MmapCell):
        where = cell.file.path.pathname if cell.file is not None else "anonymous"
        obj = f"{where} prot={cell.prot:#x}"
    elif isinstance(cell, SocketCreateCell):
        obj = f"{family_name(cell.family)} {type_name(cell.type)} protocol={cell.protocol}"
    elif isinstance(cell, SocketAddrCell):
        obj = _addr(cell)
    elif isinstance(cell, TaskKillCell):
        obj = f"sig={cell.sig} target={cell.target.hex()[:16]}"
    return describe_text(ev.type, ev.process, obj)


def describe_text(name: str, process: str | None, obj: str) -> str:
    """The line ``describe`` makes of an event's name, process and object text."""
    text = " ".join(x for x in (name, process or "?", obj) if x)
    if not text.isprintable():  # rare: test the whole line first, in C
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:300]
