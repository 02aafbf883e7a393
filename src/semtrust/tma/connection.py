"""One framed connection to an external TMA (the orchestrator's side).

Blocking calls matched to their replies by id, pipelined sends whose refusals are
collected on the way, and the compact export frame with its verdict.
"""

from __future__ import annotations

import contextlib
import select
from typing import Any, BinaryIO

from semtrust.model.tma import Verdict
from semtrust.tma.protocol import (
    MAX_FRAME,
    VERDICT_FRAME,
    VERSION,
    Address,
    ProtocolError,
    RemoteError,
    TLSFiles,
    connect,
    decode,
    encode,
    export_frame,
    parse_verdict,
    read_payload,
)

#: A call that gets no answer in this time counts as a lost TMA.
CALL_TIMEOUT = 10.0
_VERDICT_KIND = bytes([VERDICT_FRAME])


class Connection:
    """One framed connection to a TMA: blocking calls, pipelined sends."""

    def __init__(self, addr: Address, tls: TLSFiles | None, timeout: float = CALL_TIMEOUT
                 ) -> None:
        self.addr = addr
        self.sock = connect(addr, tls, timeout)
        self.fp: BinaryIO = self.sock.makefile("rb", buffering=1 << 16)  # type: ignore[assignment]
        self._id = 0
        #: Refusals of pipelined requests, read while waiting for another reply.
        self.async_errors: list[dict[str, Any]] = []
        #: The TMA takes compact export frames for the domain opened here.
        self.compact = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.fp.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, req: dict[str, Any]) -> int:
        self._id += 1
        req["id"] = self._id
        req["v"] = VERSION
        self.sock.sendall(encode(req))
        return self._id

    def _read(self) -> dict[str, Any]:
        payload = read_payload(self.fp, MAX_FRAME)
        if payload is None:
            raise ConnectionResetError("the TMA closed the connection")
        if payload[:1] == _VERDICT_KIND:
            raise ProtocolError("a verdict nobody waits for")
        return decode(payload)

    def export(self, seq: int, record: bytes, sync: bool) -> Verdict | None:
        """Send a compact export frame; with ``sync``, wait for its verdict (None: the
        record was no event). RemoteError if refused."""
        self.sock.sendall(export_frame(seq, record, sync))
        if not sync:
            return None
        while True:
            payload = read_payload(self.fp, MAX_FRAME)
            if payload is None:
                raise ConnectionResetError("the TMA closed the connection")
            if payload[:1] == _VERDICT_KIND:
                got, v = parse_verdict(payload)
                if got != seq:
                    raise ProtocolError(f"verdict for {got} while waiting for {seq}")
                return v
            reply = decode(payload)
            if reply.get("fatal") or (reply.get("id") is None and reply.get("seq") == seq):
                raise RemoteError(str(reply.get("error")), fatal=bool(reply.get("fatal")))
            self.async_errors.append(reply)

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its reply; RemoteError if refused."""
        try:
            rid = self.send(req)
        except OSError:
            # A peer refused at once (say, by uid) has sent why before closing.
            try:
                reply = self._read()
            except (OSError, ProtocolError):
                raise ConnectionResetError("the TMA closed the connection") from None
            raise RemoteError(str(reply.get("error")), fatal=True) from None
        while True:
            reply = self._read()
            if reply.get("id") == rid or reply.get("fatal"):
                break
            self.async_errors.append(reply)
        if not reply.get("ok"):
            raise RemoteError(str(reply.get("error")), fatal=bool(reply.get("fatal")))
        return reply

    def poll_errors(self) -> None:
        """Collect refusals of pipelined requests that have already arrived."""
        pending = getattr(self.sock, "pending", None)
        while (pending is not None and pending()) or \
                select.select([self.sock], [], [], 0)[0]:
            self.async_errors.append(self._read())


__all__ = ["CALL_TIMEOUT", "Connection"]
