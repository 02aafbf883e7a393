"""The TMA's connections, served by one thread around epoll.

A thread per connection made a hundred busy domains queue for the interpreter
lock, handed over at most every 5 ms: the tail of every decision. Here one
thread reads every connection, cuts its bytes into frames and answers the quick
verbs (export, sync, seal, ...) at once, in arrival order per connection.
Verbs that may take long (loading a model, rendering a view, signing) go to a
few worker threads; the connection reads nothing more until that reply is
queued, so its replies stay in order. Replies wait in a per-connection queue
written as the socket takes them; while more than ``MAX_PENDING_OUT`` bytes
wait, the connection is not read (a peer that never reads cannot grow it).
TLS handshakes run in short threads of their own (bounded by a timeout) and
hand the authenticated socket over.
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from semtrust.tma.protocol import (
    EXPORT_FRAME,
    MAX_FRAME,
    MAX_SMALL_FRAME,
    ProtocolError,
    decode,
    encode,
)

if TYPE_CHECKING:
    from semtrust.tma.server import TMAServer

#: Verbs answered by a worker thread (they may parse, render or sign megabytes).
SLOW_VERBS = frozenset({"load", "show", "attest", "domains"})
WORKERS = 4
RECV_SIZE = 1 << 16
SEND_SIZE = 1 << 18
#: Replies waiting for a slow reader before its connection stops being read.
MAX_PENDING_OUT = 1 << 20
_EXPORT_KIND = bytes([EXPORT_FRAME])
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                ssl.SSLWantWriteError)


class _Conn:
    """One authenticated peer: its socket, unread bytes and unsent replies."""

    __slots__ = ("busy", "closing", "domain", "events", "ident", "inbuf", "limit", "out",
                 "out_len", "out_pos", "sock", "tls", "token")

    def __init__(self, sock: socket.socket, ident: str) -> None:
        self.sock = sock
        self.ident = ident
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.inbuf = bytearray()
        self.out: collections.deque[bytes] = collections.deque()
        self.out_pos = 0  # bytes of out[0] already sent
        self.out_len = 0
        self.limit = MAX_SMALL_FRAME
        self.busy = False  # a slow verb is being answered
        self.closing = False  # close once the queued replies are sent
        self.events = 0
        # The domain last opened here, which compact export frames feed.
        self.domain: str | None = None
        self.token = ""


class Loop:
    """The event loop of one :class:`TMAServer` (started by its first listener)."""

    def __init__(self, server: TMAServer) -> None:
        self.server = server
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._listeners: dict[socket.socket, str] = {}
        self._inbox: SimpleQueue[tuple[str, Any, Any]] = SimpleQueue()
        self._conns: dict[socket.socket, _Conn] = {}
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="tma-slow")
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True, name="tma-loop")
        self.thread.start()

    # ------------------------------------------------------------ other threads
    def _post(self, kind: str, a: Any, b: Any = None) -> None:
        self._inbox.put((kind, a, b))
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def add_listener(self, s: socket.socket, kind: str) -> None:
        s.setblocking(False)
        self._post("listen", s, kind)

    def stop(self) -> None:
        """End the loop and close every connection (waits for it unless called from it)."""
        self._post("stop", None)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)
        self._pool.shutdown(wait=False)

    # ------------------------------------------------------------------- loop
    def _run(self) -> None:
        try:
            while not self._stop:
                answered: list[_Conn] = []
                for key, mask in self.sel.select():
                    obj = key.fileobj
                    if obj is self._wake_r:
                        self._drain_inbox()
                    elif key.data is not None:
                        try:
                            self._ready(key.data, mask, answered)
                        except Exception as exc:  # a bug ends one connection, not all
                            self.server.log(f"internal error on {key.data.ident}: {exc!r}")
                            self._close(key.data)
                    else:
                        self._accept(obj)  # type: ignore[arg-type]
                # Replies go out once every ready peer is answered: each send may wake
                # (and yield the CPU to) a waiting orchestrator.
                for c in answered:
                    if c.sock in self._conns:
                        self._flush(c)
        finally:
            for c in list(self._conns.values()):
                self._close(c)
            for s in list(self._listeners):
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(s)
            self.sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _drain_inbox(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while not self._inbox.empty():
            kind, a, b = self._inbox.get()
            if kind == "listen":
                self._listeners[a] = b
                self.sel.register(a, selectors.EVENT_READ, None)
            elif kind == "conn":
                self._add(a, b)
            elif kind == "done":
                c: _Conn = a
                c.busy = False
                if c.sock in self._conns:
                    self._queue(c, b)
                    self._frames(c)
                    self._flush(c)
            elif kind == "stop":
                self._stop = True

    def _accept(self, s: socket.socket) -> None:
        kind = self._listeners.get(s)
        while True:
            try:
                conn, _ = s.accept()
            except _WOULD_BLOCK:
                return
            except OSError:
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(s)
                self._listeners.pop(s, None)
                return
            if kind == "unix":
                ident = self.server.authenticate_unix(conn)
                if ident is not None:
                    self._add(conn, ident)
            else:
                # The handshake may take a slow peer seconds: not on this thread.
                threading.Thread(target=self._handshake, args=(conn,), daemon=True,
                                 name="tma-tls").start()

    def _handshake(self, conn: socket.socket) -> None:
        tconn = self.server.authenticate_tls(conn)
        if tconn is not None:
            self._post("conn", tconn[0], tconn[1])

    def _add(self, sock: socket.socket, ident: str) -> None:
        if self._stop:
            sock.close()
            return
        sock.setblocking(False)
        c = _Conn(sock, ident)
        self._conns[sock] = c
        self.server.track(sock, True)
        self._interest(c)

    # ------------------------------------------------------------- connections
    def _interest(self, c: _Conn) -> None:
        want = 0
        if not c.busy and not c.closing and c.out_len <= MAX_PENDING_OUT:
            want |= selectors.EVENT_READ
        if c.out:
            want |= selectors.EVENT_WRITE
        if want == c.events:
            return
        if c.events == 0:
            self.sel.register(c.sock, want, c)
        elif want == 0:
            self.sel.unregister(c.sock)
        else:
            self.sel.modify(c.sock, want, c)
        c.events = want

    def _close(self, c: _Conn) -> None:
        if self._conns.pop(c.sock, None) is None:
            return
        if c.events:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(c.sock)
            c.events = 0
        self.server.track(c.sock, False)
        with contextlib.suppress(OSError):
            c.sock.close()

    def _ready(self, c: _Conn, mask: int, answered: list[_Conn]) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(c)
            if c.sock not in self._conns:
                return
        if mask & selectors.EVENT_READ and not c.busy:
            if not self._recv(c):
                self._close(c)
                return
            self._frames(c)
            answered.append(c)

    def _recv(self, c: _Conn) -> bool:
        """Read what is there; False at the end of the stream or an error."""
        sock = c.sock
        while True:
            try:
                chunk = sock.recv(RECV_SIZE)
            except _WOULD_BLOCK:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            c.inbuf += chunk
            # A TLS socket may hold decrypted bytes epoll cannot see: read them all.
            if not c.tls or (len(chunk) < RECV_SIZE and not sock.pending()):  # type: ignore[attr-defined]
                return True

    def _frames(self, c: _Conn) -> None:
        """Answer every complete frame read so far (until a slow verb or a fatal one);
        the caller flushes (which also sets what the loop waits for)."""
        buf = c.inbuf
        pos = 0
        end = len(buf)
        server = self.server
        try:
            while not c.busy and not c.closing and end - pos >= 4:
                n = int.from_bytes(buf[pos:pos + 4], "big")
                if n > c.limit:
                    self._fatal(c, None, f"frame of {n} bytes exceeds the limit of {c.limit}")
                    return
                if end - pos - 4 < n:
                    break
                payload = bytes(buf[pos + 4:pos + 4 + n])
                pos += 4 + n
                rid: Any = None
                try:
                    if payload[:1] == _EXPORT_KIND:
                        if c.domain is None:
                            raise ProtocolError("an export frame before any open")
                        out = server.export_frame(c.ident, c.domain, c.token, payload)
                        if out is not None:
                            self._queue(c, out)
                        continue
                    req = decode(payload)
                    rid = req.get("id")
                    if req.get("op") in SLOW_VERBS:
                        server.check_request(req)
                        c.busy = True
                        self._pool.submit(self._slow, c, req)
                        break
                    reply = server.request(c.ident, req)
                except ProtocolError as exc:
                    self._fatal(c, rid, str(exc))
                    return
                except Exception as exc:  # a bug must not end every other connection
                    server.log(f"internal error answering {c.ident}: {exc!r}")
                    self._fatal(c, rid, "internal error")
                    return
                self._answer(c, req, rid, reply)
        finally:
            if pos:
                del buf[:pos]

    def _answer(self, c: _Conn, req: dict[str, Any], rid: Any, reply: dict[str, Any]) -> None:
        if reply.get("ok"):
            if req.get("op") == "open":
                c.limit = MAX_FRAME
                c.domain = str(req.get("domain"))
                c.token = str(reply.get("token"))
            elif req.get("sync") is False:
                return  # a pipelined export: only refusals are answered
        reply["id"] = rid
        self._queue(c, encode(reply))

    def _slow(self, c: _Conn, req: dict[str, Any]) -> None:
        """On a worker thread: answer a slow verb and hand the reply to the loop."""
        rid = req.get("id")
        try:
            reply = self.server.request(c.ident, req)
            reply["id"] = rid
            data = encode(reply)
        except Exception as exc:  # the connection waits for this reply: always send one
            self.server.log(f"internal error answering {c.ident}: {exc!r}")
            data = encode({"id": rid, "ok": False, "error": "internal error"})
        self._post("done", c, data)

    def _fatal(self, c: _Conn, rid: Any, error: str) -> None:
        self._queue(c, encode({"id": rid, "ok": False, "fatal": True, "error": error}))
        c.closing = True
        c.inbuf.clear()

    def _queue(self, c: _Conn, data: bytes) -> None:
        c.out.append(data)
        c.out_len += len(data)

    def _flush(self, c: _Conn) -> None:
        """Send queued replies as far as the socket takes them."""
        out = c.out
        sock = c.sock
        while out:
            first = out[0]
            chunk = memoryview(first)[c.out_pos:c.out_pos + SEND_SIZE]
            try:
                sent = sock.send(chunk)
            except _WOULD_BLOCK:
                break
            except OSError:
                self._close(c)
                return
            c.out_pos += sent
            c.out_len -= sent
            if c.out_pos >= len(first):
                out.popleft()
                c.out_pos = 0
        if c.closing and not out:
            self._close(c)
            return
        self._interest(c)
