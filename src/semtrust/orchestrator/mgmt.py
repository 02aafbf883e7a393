"""Management socket of a domain: length-prefixed JSON, table-driven requests.

Wire protocol (AF_UNIX stream): each message is a 4-byte big-endian length and
that many bytes of UTF-8 JSON. Requests are objects with an ``op`` key;
responses are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
Requests are at most 64 KiB, responses at most 256 MiB. One request per
connection turn; the client may send several requests on one connection.

Peers are checked with ``SO_PEERCRED`` and ``SO_PEERPIDFD``: a peer that lives in
another pid namespace (every modeling domain has its own), or is one of this
domain's processes, or is neither root nor our own uid, is refused. File modes
alone would not keep a root workload out.

The client checks the server the same way: the peer must live in the client's
own pid namespace (a workload's forged server lives in its domain's) and be the
process recorded in ``NAME.pid`` next to the socket, so a socket renamed over a
domain's socket is not believed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semtrust.errors import InputError, SemtrustError
from semtrust.orchestrator.feed import follow_stream

if TYPE_CHECKING:
    from semtrust.orchestrator.domain import Domain

MAX_REQUEST = 64 << 10
MAX_CONNECTIONS = 32  # served at once; more are closed at once
MAX_RESPONSE = 256 << 20
#: Requests are flat objects; a little room for structured options, no more.
MAX_REQUEST_DEPTH = 4
SO_PEERPIDFD = 77
SHOW_VIEWS = ("trajectory", "forensics", "points", "counts", "state", "measurement", "model",
              "aggregate", "faults", "stats")

Handler = Callable[["Domain", dict[str, Any]], Any]


class MgmtError(SemtrustError):
    """A management request failed (the message is the server's or the transport's)."""


def _show(domain: Domain, req: dict[str, Any]) -> Any:
    what = req.get("what")
    if what not in SHOW_VIEWS:
        raise MgmtError(f"unknown view {what!r}; one of {', '.join(SHOW_VIEWS)}")
    return domain.show(str(what))


def _info(domain: Domain, req: dict[str, Any]) -> Any:
    return domain.info()


REQUESTS: dict[str, Handler] = {"show": _show, "info": _info, "ping": lambda d, r: "pong"}


#: Requests answered by a stream of messages on the connection (see orchestrator/feed.py).
STREAMS: dict[str, Callable[[Domain, dict[str, Any], socket.socket], None]] = {
    "follow": follow_stream}


def register_request(op: str, handler: Handler) -> None:
    """Add a request type (e.g. ``attest``); handler(domain, request) -> JSON-able result."""
    REQUESTS[op] = handler


# ------------------------------------------------------------------ framing


def send_msg(sock: socket.socket, obj: Any, limit: int) -> None:
    try:
        data = json.dumps(obj, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        data = json.dumps({"ok": False, "error": f"unencodable response: {exc}"}).encode()
    if len(data) > limit:
        data = json.dumps({"ok": False, "error": "response too large"}).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def recv_msg(sock: socket.socket, limit: int, *, strict: bool = False) -> Any:
    """One message. ``strict`` (requests, from a peer we do not trust) also refuses
    duplicate keys and nesting beyond ``MAX_REQUEST_DEPTH``; replies are parsed fast
    with depth limits only. Every malformed message is a MgmtError, never a traceback."""
    (n,) = struct.unpack(">I", _recv_exact(sock, 4))
    if n > limit:
        raise MgmtError(f"message of {n} bytes exceeds the limit of {limit}")
    data = _recv_exact(sock, n)
    from semtrust.strict import loads_limited, loads_strict  # loaded at the first message

    try:
        if strict:
            return loads_strict(data, source="request", max_depth=MAX_REQUEST_DEPTH,
                                max_bytes=limit)
        return loads_limited(data, source="reply", max_bytes=limit)
    except InputError as exc:
        raise MgmtError(f"malformed message: {exc}") from None


# ------------------------------------------------------------------- paths


def runtime_dir() -> Path:
    """Where domain sockets live: $XDG_RUNTIME_DIR/semtrust, /run/semtrust (root), or /tmp."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "semtrust"
    if os.geteuid() == 0:
        return Path("/run/semtrust")
    return Path(f"/tmp/semtrust-{os.geteuid()}")


def check_dir(d: Path) -> None:
    """Refuse a socket directory someone else controls (e.g. pre-created in /tmp)."""
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise MgmtError(f"{d}: not a private directory of uid {os.geteuid()}")


def socket_path(name: str) -> Path:
    if not name or "/" in name or name.startswith(".") or len(name) > 64:
        raise MgmtError(f"invalid domain name {name!r}")
    return runtime_dir() / f"{name}.sock"


# ------------------------------------------------------------------- server


def _pidns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def pid_path(sock: Path) -> Path:
    """Where the orchestrator serving ``sock`` records its pid."""
    return sock.with_suffix(".pid")


def server_refused(s: socket.socket, path: Path) -> str | None:
    """None if the peer of ``s`` is the orchestrator of ``path``, else why it is not."""
    raw = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    pid, uid, _gid = struct.unpack("=iII", raw)
    if pid <= 0:
        return "a server outside our pid namespace"
    if uid not in (0, os.geteuid()):
        return f"a server of uid {uid}"
    ns = _pidns(pid)
    if ns is None or ns != _pidns(os.getpid()):
        return f"a server in another pid namespace (pid {pid}, a modeling domain?)"
    try:
        recorded = int(pid_path(path).read_text().strip())
    except (OSError, ValueError):
        return "a server with no recorded pid"
    if recorded != pid:
        return f"pid {pid}, not the domain's orchestrator (pid {recorded})"
    return None


class MgmtServer:
    """Serves one domain's socket on a daemon thread."""

    def __init__(self, domain: Domain, path: Path) -> None:
        self.domain = domain
        self.path = path
        self.refused = 0
        self._own_pidns = _pidns(os.getpid())
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_dir(path.parent)
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # stale socket of a dead domain
            else:
                raise MgmtError(f"domain {domain.name!r} is already running ({path})")
            finally:
                probe.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)
        tmp = path.with_suffix(f".pid.{os.getpid()}")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, pid_path(path))
        self.sock.listen(16)
        self._thread = threading.Thread(target=self._run, name="semtrust-mgmt", daemon=True)
        self._closed = False
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError, ValueError):
            if int(pid_path(self.path).read_text()) == os.getpid():
                pid_path(self.path).unlink()

    def peer_allowed(self, conn: socket.socket) -> str | None:
        """None if the peer may talk to us, else the reason it may not."""
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        pid, uid, _gid = struct.unpack("=iII", raw)
        if uid not in (0, os.geteuid()):
            return f"uid {uid} not allowed"
        try:
            pidfd = int.from_bytes(conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4),
                                   "little", signed=True)
        except OSError:
            pidfd = -1
        try:
            if pid <= 0:
                return "peer outside our pid namespace"
            if pid in self.domain.tasks.procs:
                return "peer is a process of a modeling domain"
            ns = _pidns(pid)
            if ns is None or ns != self._own_pidns:
                return "peer in another pid namespace (a modeling domain)"
            if pidfd >= 0:
                # The pid was checked by number: make sure it still is the peer.
                signal.pidfd_send_signal(pidfd, 0)
            elif os.path.exists(f"/proc/{pid}") is False:
                return "peer vanished"
        except OSError:
            return "peer vanished"
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        return None

    def _run(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                self.refused += 1
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._serve_one(conn)
        finally:
            self._slots.release()

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            why = self.peer_allowed(conn)
            if why is not None:
                self.refused += 1
                # Read (bounded) the first request so the peer sees the answer, not EPIPE.
                conn.settimeout(2)
                with contextlib.suppress(OSError, EOFError, MgmtError):
                    recv_msg(conn, MAX_REQUEST)
                with contextlib.suppress(OSError):
                    send_msg(conn, {"ok": False, "error": f"refused: {why}"}, MAX_RESPONSE)
                return
            while True:
                try:
                    req = recv_msg(conn, MAX_REQUEST, strict=True)
                except (EOFError, OSError):
                    return
                except MgmtError as exc:  # answer, then drop a peer that sends garbage
                    with contextlib.suppress(OSError):
                        send_msg(conn, {"ok": False, "error": str(exc)}, MAX_RESPONSE)
                    return
                try:
                    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                        raise MgmtError("request must be an object with an 'op'")
                    stream = STREAMS.get(req["op"])
                    if stream is not None:  # takes the connection over until it ends
                        stream(self.domain, req, conn)
                        return
                    handler = REQUESTS.get(req["op"])
                    if handler is None:
                        raise MgmtError(f"unknown request {req['op']!r}")
                    resp = {"ok": True, "result": handler(self.domain, req)}
                except Exception as exc:
                    resp = {"ok": False, "error": str(exc)}
                try:
                    send_msg(conn, resp, MAX_RESPONSE)
                except OSError:
                    return


# ------------------------------------------------------------------- client


def request(name_or_path: str | Path, req: dict[str, Any], timeout: float = 30.0) -> Any:
    """Send one request to a domain; return its result or raise MgmtError."""
    path = Path(name_or_path) if isinstance(name_or_path, Path) else socket_path(name_or_path)
    check_dir(path.parent)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except OSError as exc:
            raise MgmtError(f"no running domain at {path}: {exc.strerror}") from None
        why = server_refused(s, path)
        if why is not None:
            raise MgmtError(f"{path}: refusing to talk to {why}")
        try:
            send_msg(s, req, MAX_REQUEST)
            resp = recv_msg(s, MAX_RESPONSE)
        except (EOFError, OSError) as exc:
            raise MgmtError(f"{path}: connection failed: {exc}") from None
    finally:
        s.close()
    if not isinstance(resp, dict) or not resp.get("ok"):
        err = resp.get("error") if isinstance(resp, dict) else "malformed response"
        raise MgmtError(f"{path}: {err}")
    return resp.get("result")


def stream(name_or_path: str | Path, req: dict[str, Any]) -> Iterator[Any]:
    """Send a streaming request (``follow``); yield each message until the domain ends."""
    path = Path(name_or_path) if isinstance(name_or_path, Path) else socket_path(name_or_path)
    check_dir(path.parent)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            s.connect(str(path))
        except OSError as exc:
            raise MgmtError(f"no running domain at {path}: {exc.strerror}") from None
        send_msg(s, req, MAX_REQUEST)
        while True:
            try:
                msg = recv_msg(s, MAX_RESPONSE)
            except EOFError:
                return
            except OSError as exc:
                raise MgmtError(f"{path}: connection failed: {exc}") from None
            if isinstance(msg, dict) and msg.get("ok") is False:
                raise MgmtError(f"{path}: {msg.get('error')}")
            yield msg
    finally:
        s.close()


def list_domains() -> list[dict[str, Any]]:
    """Running domains in the runtime directory (stale sockets skipped)."""
    d = runtime_dir()
    out = []
    try:
        entries = sorted(d.iterdir())
    except OSError:
        return []
    for p in entries:
        if p.suffix != ".sock":
            continue
        try:
            info = request(p, {"op": "info"}, timeout=2.0)
        except MgmtError:
            continue
        if isinstance(info, dict):
            out.append(info)
    return out
