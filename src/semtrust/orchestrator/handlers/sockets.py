"""Sockets: socket_create, connect, bind, accept and listen events."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import socket
import struct

from semtrust.events import (
    Inet6Addr,
    InetAddr,
    OtherAddr,
    SockAddr,
    SockDesc,
    SocketAddrCell,
    SocketCreateCell,
    UnixAddr,
)
from semtrust.orchestrator.core import _NR, MAX_SOCKADDR, Ctx, MediatorCore, Unmodelable, _s32


class SocketHandlers(MediatorCore):
    """Sockets: socket_create, connect, bind, accept and listen events."""

    # ---------------------------------------------------------------- sockets
    def _socket(self, c: Ctx) -> None:
        a = c.n.args
        cell = SocketCreateCell(a[0] & 0xFFFFFFFF, a[1] & 0xF, a[2] & 0xFFFFFFFF, 0)
        self.finish(c, [self.event(c, "socket_create", cell)])

    def _sock_of(self, c: Ctx, fdn: int) -> socket.socket | None:
        try:
            fd = pidfd_getfd(self._pidfd(c), fdn)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                return None
            raise Unmodelable(f"pidfd_getfd: {exc.strerror}") from None
        try:
            return socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return None  # not a socket: ENOTSOCK from the kernel

    def _sockdesc(self, c: Ctx, s: socket.socket) -> SockDesc:
        fam = s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        typ = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        proto = s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
        return SockDesc(fam, typ, proto, c.proc.task_id)

    def _sockaddr(self, c: Ctx) -> None:
        a = c.n.args
        etype = "socket_connect" if c.n.nr == _NR["connect"] else "socket_bind"
        self._address_event(c, etype, _s32(a[0]), a[1], a[2])

    def _sendto(self, c: Ctx) -> None:
        """sendto with a destination: the same peer check a connect() would get."""
        a = c.n.args
        self._address_event(c, "socket_connect", _s32(a[0]), a[4], a[5])

    def _address_event(self, c: Ctx, etype: str, fdn: int, addr_ptr: int, addr_len: int
                       ) -> None:
        """A socket_connect/socket_bind event for the socket ``fdn`` and the address the
        task passes; a bad descriptor is the kernel's to fail."""
        s = self._sock_of(c, fdn)
        if s is None:
            self.lst.allow(c.n.id)
            return
        with s:
            desc = self._sockdesc(c, s)
        alen = min(addr_len & 0xFFFFFFFF, MAX_SOCKADDR)
        raw = self.read_mem(c, addr_ptr, alen) if addr_ptr and alen else b""
        self.check_valid(c)
        self.finish(c, [self.event(c, etype, SocketAddrCell(desc, parse_sockaddr(raw)))])

    def _accept(self, c: Ctx) -> None:
        s = self._sock_of(c, _s32(c.n.args[0]))
        if s is None:
            self.lst.allow(c.n.id)
            return
        with s:
            desc = self._sockdesc(c, s)
            addr = sockname_addr(s)
        self.finish(c, [self.event(c, "socket_accept", SocketAddrCell(desc, addr))])

    def _listen(self, c: Ctx) -> None:
        s = self._sock_of(c, _s32(c.n.args[0]))
        if s is None:
            self.lst.allow(c.n.id)
            return
        with s:
            desc = self._sockdesc(c, s)
        self._generic(c, "socket_listen", {"family": desc.family, "type": desc.type,
                                           "protocol": desc.protocol})



# --------------------------------------------------------------------- sockets


def parse_sockaddr(raw: bytes) -> SockAddr:
    """The export-shape address of a raw ``struct sockaddr``."""
    if len(raw) < 2:
        return OtherAddr(_sha(raw))
    fam = struct.unpack_from("=H", raw)[0]
    if fam == socket.AF_INET and len(raw) >= 8:
        return InetAddr(int.from_bytes(raw[2:4], "little"), int.from_bytes(raw[4:8], "little"))
    if fam == socket.AF_INET6 and len(raw) >= 24:
        flow = int.from_bytes(raw[4:8], "little")
        scope = int.from_bytes(raw[24:28], "little") if len(raw) >= 28 else 0
        return Inet6Addr(int.from_bytes(raw[2:4], "little"), flow, scope, raw[8:24])
    if fam == socket.AF_UNIX:
        p = raw[2:]
        if p[:1] == b"\0":
            return UnixAddr("@" + p[1:].decode("utf-8", "backslashreplace"))
        return UnixAddr(p.split(b"\0", 1)[0].decode("utf-8", "backslashreplace"))
    return OtherAddr(_sha(raw))


def sockname_addr(s: socket.socket) -> SockAddr:
    """The bound address of a listening socket (ports zeroed: accept's is never hashed)."""
    try:
        name = s.getsockname()
    except OSError:
        return OtherAddr(bytes(32))
    if s.family == socket.AF_INET and isinstance(name, tuple):
        return InetAddr(0, int.from_bytes(socket.inet_aton(name[0]), "little"))
    if s.family == socket.AF_INET6 and isinstance(name, tuple):
        return Inet6Addr(0, 0, 0, socket.inet_pton(socket.AF_INET6, name[0]))
    if s.family == socket.AF_UNIX:
        if isinstance(name, bytes):
            return UnixAddr("@" + name[1:].decode("utf-8", "backslashreplace"))
        return UnixAddr(str(name))
    return OtherAddr(_sha(repr(name).encode()))


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """Duplicate a task's descriptor (``pidfd_getfd(2)``)."""
    rc = _libc.syscall(ctypes.c_long(438), ctypes.c_int(pidfd), ctypes.c_int(targetfd),
                      ctypes.c_uint(0))
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(rc)


#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "socket": "_socket", "connect": "_sockaddr", "bind": "_sockaddr", "accept": "_accept",
    "accept4": "_accept", "listen": "_listen", "sendto": "_sendto",
}
