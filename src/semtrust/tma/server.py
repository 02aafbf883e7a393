"""``semtrust tma serve``: a TMA as its own process, for any number of domains.

It keeps the models, points, measurement, state, forensics and the attestation
key; the orchestrators that connect keep none of them. Peers are authenticated
before their first frame is read: over a Unix socket by ``SO_PEERCRED`` against
the allowed uids (file modes alone would not keep a root workload out), over TCP
by mutual TLS. A domain belongs to the identity that opened it and to that
session: ``open`` hands out a random token that every later change and a resume
must show, so another process of the same uid (a root workload on the
orchestrator's host, say) cannot feed or poison the domain. Any authenticated
peer may read and attest it.
Connections are served by one event-loop thread (``semtrust.tma.loop``); one lock
per domain.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import socket
import ssl
import stat
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

from semtrust.attest.attestation import (
    PrivateKey,
    build_attestation,
    key_id,
    parse_nonce,
    public_pem,
    sign_document,
)
from semtrust.errors import InputError, SemtrustError
from semtrust.model.modelfile import parse_model
from semtrust.model.tma import Verdict
from semtrust.tma.domains import VIEWS, SequenceError, ServedDomain, export_reply
from semtrust.tma.loop import Loop
from semtrust.tma.protocol import (
    COMPACT_VERSION,
    VERSION,
    Address,
    ProtocolError,
    TLSFiles,
    encode,
    parse_export,
    server_context,
    verdict_frame,
)

MAX_DOMAINS = 10000
MAX_MODELS = 256
MAX_NAME = 128
HANDSHAKE_TIMEOUT = 10.0
_PEERCRED = struct.Struct("3i")


class RequestError(Exception):
    """A request the TMA refuses (the connection stays open)."""


Handler = Callable[[str, dict[str, Any]], dict[str, Any] | None]


class TMAServer:
    """The domains, the models by digest, the key, and the listening sockets."""

    def __init__(self, *, key: PrivateKey | None = None, allow_uids: set[int] | None = None,
                 tls: TLSFiles | None = None, log: Callable[[str], None] | None = None) -> None:
        self.key = key
        self.allow_uids = allow_uids if allow_uids is not None else {os.getuid()}
        self.tls = server_context(tls) if tls is not None else None
        self.domains: dict[str, ServedDomain] = {}
        self.models: dict[bytes, bytes] = {}
        self.lock = threading.Lock()
        self.log = log or (lambda msg: print(f"semtrust tma: {msg}", file=sys.stderr))
        self._listeners: list[socket.socket] = []
        self._paths: list[str] = []
        self._conns: set[socket.socket] = set()
        self._loop: Loop | None = None
        self._closed = threading.Event()
        self.handlers: dict[str, Handler] = {
            "hello": self._hello, "open": self._open, "aggregate": self._aggregate,
            "base": self._base, "pseudonym": self._pseudonym, "load": self._load,
            "seal": self._seal, "enforce": self._enforce, "export": self._export,
            "sync": self._sync, "show": self._show, "attest": self._attest,
            "domains": self._domains, "drop": self._drop,
        }

    # ---------------------------------------------------------------- listening
    def listen(self, addr: Address) -> Address:
        """Bind ``addr``; returns the bound address (a TCP port 0 becomes the real one)."""
        if addr.kind == "unix":
            _clear_stale_socket(addr.path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.bind(addr.path)
            # Everyone may connect; SO_PEERCRED decides who is served.
            os.chmod(addr.path, 0o666)
            self._paths.append(addr.path)
        else:
            if self.tls is None:
                raise InputError("a TCP listener needs --cert, --cert-key and --client-ca",
                                 field="--listen")
            s = socket.create_server((addr.host, addr.port), reuse_port=False)
            addr = Address("tcp", host=addr.host, port=s.getsockname()[1])
        s.listen(128)
        self._listeners.append(s)
        with self.lock:
            if self._loop is None:
                self._loop = Loop(self)
            loop = self._loop
        loop.add_listener(s, addr.kind)
        return addr

    def wait(self) -> None:
        self._closed.wait()

    def close(self) -> None:
        self._closed.set()
        for s in self._listeners:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        for path in self._paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._paths.clear()
        self.drop_connections()
        with self.lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.stop()

    def drop_connections(self) -> None:
        """Close every client connection (the domains stay: clients may resume)."""
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def track(self, conn: socket.socket, open_: bool) -> None:
        """The loop's open connections, for ``drop_connections``."""
        with self.lock:
            if open_:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # ------------------------------------------------------------ connections
    def authenticate_unix(self, conn: socket.socket) -> str | None:
        """The peer's identity by ``SO_PEERCRED``, or None (refused, told why, closed)."""
        try:
            pid, uid, _gid = _PEERCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except OSError:
            conn.close()
            return None
        if uid in self.allow_uids:
            return f"uid:{uid}"
        why = f"uid {uid} (pid {pid}) is not allowed"
        self.log(f"refused: {why}")
        with contextlib.suppress(OSError):
            conn.settimeout(1.0)
            conn.sendall(encode({"id": None, "ok": False, "fatal": True,
                                 "error": f"refused: {why}"}))
        conn.close()
        return None

    def authenticate_tls(self, conn: socket.socket) -> tuple[socket.socket, str] | None:
        """Mutual TLS handshake (blocking, bounded); None if the peer is refused."""
        assert self.tls is not None
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tconn = self.tls.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self.log(f"refused a TLS peer: {exc}")
            conn.close()
            return None
        cert = tconn.getpeercert() or {}
        subject = ",".join(f"{pair[0]}={pair[1]}" for rdn in cert.get("subject", ())
                           for pair in rdn)
        return tconn, f"tls:{subject}"

    def check_request(self, req: dict[str, Any]) -> Handler:
        """The handler of a request (ProtocolError: other version or unknown verb)."""
        if req.get("v") != VERSION:
            raise ProtocolError(f"unsupported protocol version {req.get('v')!r}; "
                                f"this TMA speaks {VERSION}")
        op = req.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            raise ProtocolError(f"unknown verb {op!r}")
        return handler

    def request(self, ident: str, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one decoded request (ProtocolError: the frame itself is bad)."""
        handler = self.check_request(req)
        try:
            reply = handler(ident, req)
        except RequestError as exc:
            return {"ok": False, "error": str(exc)}
        except SequenceError as exc:
            return {"ok": False, "error": f"{exc}; the domain is now unattestable",
                    "sequence": True}
        except (SemtrustError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        return reply if reply is not None else {"ok": True}

    # ---------------------------------------------------------------- helpers
    def _domain(self, ident: str, req: dict[str, Any], *, write: bool) -> ServedDomain:
        name = _name(req)
        dom = self.domains.get(name)
        if dom is None:
            raise RequestError(f"no domain {name!r}")
        if write and (dom.owner != ident or not hmac.compare_digest(
                str(req.get("token", "")), dom.token)):
            raise RequestError(f"domain {name!r} belongs to another peer or session")
        return dom

    # ------------------------------------------------------------------ verbs
    def _hello(self, ident: str, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "version": VERSION, "peer": ident,
                "key_id": key_id(self.key) if self.key is not None else None}

    def _open(self, ident: str, req: dict[str, Any]) -> dict[str, Any]:
        name = _name(req)
        resume = req.get("resume") is True
        with self.lock:
            dom = self.domains.get(name)
            if dom is None:
                if resume:
                    raise RequestError(f"no domain {name!r} to resume (did the TMA restart?)")
                if len(self.domains) >= MAX_DOMAINS:
                    raise RequestError(f"this TMA holds {MAX_DOMAINS} domains already")
                dom = self.domains[name] = ServedDomain(name, ident)
            elif not resume:
                raise RequestError(f"domain {name!r} exists")
            elif dom.owner != ident or not hmac.compare_digest(str(req.get("token", "")),
                                                               dom.token):
                raise RequestError(f"domain {name!r} belongs to another peer or session")
        with dom.lock:
            return {"ok": True, "next_seq": dom.next_seq, "mode": dom.tma.mode.value,
                    "last": dom.last_reply(), "token": dom.token, "compact": COMPACT_VERSION}

    def _aggregate(self, ident: str, req: dict[str, Any]) -> None:
        dom = self._domain(ident, req, write=True)
        with dom.lock:
            dom.tma.set_aggregate(_hex32(req, "value"))

    def _base(self, ident: str, req: dict[str, Any]) -> None:
        dom = self._domain(ident, req, write=True)
        with dom.lock:
            dom.tma.set_base(_hex32(req, "value"))

    def _pseudonym(self, ident: str, req: dict[str, Any]) -> None:
        dom = self._domain(ident, req, write=True)
        with dom.lock:
            dom.tma.add_pseudonym(_hex32(req, "value"))

    def _load(self, ident: str, req: dict[str, Any]) -> dict[str, Any]:
        """Load a model sent as text, or one this TMA holds, named by its digest."""
        dom = self._domain(ident, req, write=True)
        text = req.get("model")
        if text is not None:
            if not isinstance(text, str):
                raise RequestError("'model' must be a string")
            data = text.encode("utf-8", "surrogateescape")
        else:
            digest = _hex32(req, "digest")
            with self.lock:
                held = self.models.get(digest)
            if held is None:
                return {"ok": False, "error": f"no model {digest.hex()}", "unknown": True}
            data = held
        model = parse_model(data, source=f"model for {dom.name}")
        with self.lock:
            if len(self.models) < MAX_MODELS:
                self.models[model.digest] = data
        base = _hex32(req, "base") if req.get("base") is not None else None
        agg = _hex32(req, "aggregate") if req.get("aggregate") is not None else None
        with dom.lock:
            dom.tma.load_model(model, base=base, aggregate=agg)
            dom.model_digest = model.digest
            return {"ok": True, "digest": model.digest.hex(), "points": dom.tma.point_count}

    def _seal(self, ident: str, req: dict[str, Any]) -> None:
        dom = self._domain(ident, req, write=True)
        with dom.lock:
            dom.tma.seal()

    def _enforce(self, ident: str, req: dict[str, Any]) -> None:
        dom = self._domain(ident, req, write=True)
        with dom.lock:
            dom.tma.enforce()

    def _export(self, ident: str, req: dict[str, Any]) -> dict[str, Any]:
        seq = req.get("seq")
        record = req.get("record")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise RequestError("'seq' must be a positive integer")
        if not isinstance(record, str):
            raise RequestError("'record' must be a string (one export line)")
        return export_reply(seq, self.export(ident, _name(req), req.get("token"), seq, record))

    def export(self, ident: str, name: str, token: object, seq: int, record: str | bytes
               ) -> Verdict | None:
        """Model one export record of a domain this peer and session own (the JSON
        ``export`` verb and the compact export frame both end here)."""
        dom = self.domains.get(name)
        if dom is None:
            raise RequestError(f"no domain {name!r}")
        if dom.owner != ident or not hmac.compare_digest(str(token or ""), dom.token):
            raise RequestError(f"domain {name!r} belongs to another peer or session")
        if seq < 1:
            raise RequestError("'seq' must be a positive integer")
        with dom.lock:
            v = dom.ingest(seq, record)
            dom.last = (seq, v)
            return v

    def export_frame(self, ident: str, name: str, token: str, payload: bytes) -> bytes | None:
        """Answer a compact export frame: a verdict frame if it asks for one, None for a
        pipelined one, a JSON error naming its ``seq`` if refused
        (ProtocolError: the frame itself is bad)."""
        seq, sync, record = parse_export(payload)
        try:
            v = self.export(ident, name, token, seq, record)
        except SequenceError as exc:
            return encode({"id": None, "ok": False, "seq": seq, "sequence": True,
                           "error": f"{exc}; the domain is now unattestable"})
        except (RequestError, SemtrustError, ValueError) as exc:
            return encode({"id": None, "ok": False, "seq": seq, "error": str(exc)})
        return verdict_frame(seq, v) if sync else None

    def _sync(self, ident: str, req: dict[str, Any]) -> dict[str, Any]:
        dom = self._domain(ident, req, write=False)
        with dom.lock:
            return {"ok": True, "next_seq": dom.next_seq}

    def _show(self, ident: str, req: dict[str, Any]) -> dict[str, Any]:
        dom = self._domain(ident, req, write=False)
        what = req.get("what")
        if what not in VIEWS:
            raise RequestError(f"unknown view {what!r}; one of {', '.join(VIEWS)}")
        with dom.lock:
            return {"ok": True, "result": dom.show(str(what))}

    def _attest(self, ident: str, req: dict[str, Any]) -> dict[str, Any]:
        """A signed attestation of the domain's state, signed here with the TMA's key."""
        dom = self._domain(ident, req, write=False)
        if self.key is None:
            raise RequestError("this TMA has no attestation key (serve --key FILE)")
        nonce_hex = req.get("nonce")
        if not isinstance(nonce_hex, str):
            raise RequestError("attest needs a 'nonce' (hex string)")
        try:
            nonce = parse_nonce(nonce_hex)
        except InputError as exc:
            raise RequestError(f"nonce: {exc.message}") from None
        with dom.lock:
            if dom.unattestable:
                first = dom.trust_events[0] if dom.trust_events else {}
                raise RequestError(f"domain {dom.name!r} is unattestable: "
                                   f"{dom.trust_event_count} trust event(s), first "
                                   f"{first.get('kind')}")
            t = dom.tma
            doc = build_attestation(
                domain=dom.name, mode=t.mode.name.lower(),
                aggregate=t.aggregate or bytes(32), base=t.base, measurement=t.measurement,
                state=t.state(), points=t.point_count, forensics=t.forensics_count,
                model_digest=dom.model_digest, untrusted=(), nonce=nonce)
        return {"ok": True, "result": sign_document(doc, self.key)}

    def _domains(self, ident: str, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            doms = list(self.domains.values())
        out = []
        for d in doms:
            with d.lock:
                out.append({"domain": d.name, "mode": d.tma.mode.value,
                            "events": d.tma.events, "points": d.tma.point_count,
                            "unattestable": d.unattestable})
        return {"ok": True, "result": out}

    def _drop(self, ident: str, req: dict[str, Any]) -> None:
        dom = self._domain(ident, req, write=True)
        with self.lock:
            self.domains.pop(dom.name, None)

    def public_key_pem(self) -> str | None:
        return public_pem(self.key) if self.key is not None else None

    # ------------------------------------------------------- stream importing
    def stream_domain(self, name: str, owner: str) -> ServedDomain:
        """The domain an exported stream feeds (created on its first record)."""
        with self.lock:
            dom = self.domains.get(name)
            if dom is None:
                if len(self.domains) >= MAX_DOMAINS:
                    raise RequestError(f"this TMA holds {MAX_DOMAINS} domains already")
                dom = self.domains[name] = ServedDomain(name, owner)
            elif dom.owner != owner:
                raise RequestError(f"domain {name!r} belongs to another peer")
            return dom


def _name(req: dict[str, Any]) -> str:
    name = req.get("domain")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or \
            not name.isprintable():
        raise RequestError(f"'domain' must be a printable name of 1-{MAX_NAME} characters")
    return name


def _hex32(req: dict[str, Any], key: str) -> bytes:
    v = req.get(key)
    if not isinstance(v, str) or len(v) != 64:
        raise RequestError(f"'{key}' must be 64 hex digits")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise RequestError(f"'{key}' must be 64 hex digits") from None


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on; refuse to replace anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise InputError("exists and is not a socket", source=path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise InputError("another TMA is listening here", source=path)
