"""The orchestrator's side of an external TMA: :class:`RemoteTMA`.

``RemoteTMA`` has the interface the mediator, the domain, the management socket
and the attestation code use on an in-process :class:`~semtrust.model.tma.TMA`,
so ``run --tma ADDR`` only changes how the TMA is built. Every event goes to the
TMA as its export record with the next sequence number of the domain; the TMA
computes the coefficient and answers release or discipline.

* Sealed or enforcing: each event waits for its verdict.
* Learning: events are pipelined (the TMA answers only refusals); every
  ``SYNC_EVERY`` events a round trip confirms what was modeled.
* The orchestrator keeps no points: ``is_valid`` always answers "unknown", so the
  mediator sends every event in full; views are fetched from the TMA.
* Loss: one reconnect is tried; the TMA says which sequence number it expects and
  only the records after it are sent again (the last verdict is kept there), so
  no event is modeled twice. If that fails the TMA is lost for good: every later
  call raises :class:`TMALost` (the mediator denies and records it when
  enforcing), learning stops the workload at once, a sealed or enforcing one is
  killed after ``LOSS_GRACE_SECONDS``.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from semtrust.errors import InputError
from semtrust.events.jsonexport import parse_record
from semtrust.events.record import Event, LegacyEvent
from semtrust.model.coefficient import event_coefficient
from semtrust.model.tma import Mode, ModeledEvent, Verdict
from semtrust.tma.connection import Connection
from semtrust.tma.lines import LineFormatter
from semtrust.tma.protocol import (
    COMPACT_VERSION,
    Address,
    ProtocolError,
    RemoteError,
    TLSFiles,
    TMALost,
)

if TYPE_CHECKING:
    from semtrust.model.modelfile import Model

#: After losing its TMA an enforcing or sealed workload is killed this many seconds
#: later (meanwhile every mediated call is denied and recorded).
LOSS_GRACE_SECONDS = 2.0
SYNC_EVERY = 4096
_ERROR_CHECK_EVERY = 64


class RemoteTMA:
    """A domain's TMA in another process (see module docstring)."""

    #: Bumped when the pseudonym set changes (callers' coefficient caches watch it).
    pseudonym_epoch: int = 0

    def __init__(self, addr: Address, domain: str, *, tls: TLSFiles | None = None,
                 grace: float = LOSS_GRACE_SECONDS, resume: bool = False) -> None:
        self.addr = addr
        self.tls = tls
        self.domain = domain
        self.grace = grace
        self._lock = threading.RLock()
        self._mode = Mode.FREE
        self._pseudonyms: set[bytes] = set()
        self._seq = 0
        # Pipelined records the TMA has not confirmed: (seq, record line).
        self._unconfirmed: collections.deque[tuple[int, bytes]] = collections.deque()
        self._since_sync = 0
        self.lost: str | None = None
        #: Called once, without arguments, when the workload must stop (TMA lost).
        self.on_lost: list[Callable[[], None]] = []
        #: Model files by digest, sent when the TMA does not hold them already.
        self.model_bytes: dict[bytes, bytes] = {}
        self.mismatches = 0
        self._snapshot: dict[bytes, ModeledEvent] = {}
        self._lines = LineFormatter()
        try:
            self._conn = Connection(addr, tls)
            self._conn.call({"op": "hello"})
            opened = self._conn.call({"op": "open", "domain": domain, "resume": resume})
        except RemoteError as exc:
            raise InputError(f"TMA {addr}: {exc}", field="--tma") from None
        except (OSError, ProtocolError) as exc:
            raise InputError(f"TMA {addr}: cannot connect: {exc}", field="--tma") from None
        self._token = str(opened["token"])
        self._conn.compact = opened.get("compact") == COMPACT_VERSION
        self._seq = int(opened["next_seq"]) - 1
        self._mode = Mode(opened["mode"])

    # ------------------------------------------------------------ transport
    def _fail(self, why: str) -> TMALost:
        """Mark the TMA lost for good and start stopping the workload."""
        first = self.lost is None
        if first:
            self.lost = why
            self._conn.close()
            delay = 0.0 if self._mode is Mode.FREE else self.grace
            t = threading.Timer(delay, self._stop_workload)
            t.daemon = True
            t.start()
        return TMALost(f"external TMA {self.addr} lost: {self.lost}")

    def _stop_workload(self) -> None:
        for cb in list(self.on_lost):
            with contextlib.suppress(Exception):
                cb()

    def _reconnect(self) -> dict[str, Any] | None:
        """One new connection; re-send only what the TMA has not modeled. Returns the
        TMA's last synchronous reply (for a verdict lost with the old connection)."""
        self._conn.close()
        try:
            conn = Connection(self.addr, self.tls)
            conn.call({"op": "hello"})
            opened = conn.call({"op": "open", "domain": self.domain, "resume": True,
                                "token": self._token})
            nxt = int(opened["next_seq"])
            conn.compact = opened.get("compact") == COMPACT_VERSION
            self._conn = conn
            for seq, record in self._unconfirmed:
                if seq >= nxt:
                    self._send_async(seq, record)
            while self._unconfirmed and self._unconfirmed[0][0] < nxt:
                self._unconfirmed.popleft()
            return opened.get("last") if isinstance(opened.get("last"), dict) else None
        except (OSError, ProtocolError, RemoteError) as exc:
            raise self._fail(f"reconnect failed: {exc}") from None

    def _call(self, req: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self.lost is not None:
                raise TMALost(f"external TMA {self.addr} lost: {self.lost}")
            req = {**req, "token": self._token}
            try:
                reply = self._conn.call(dict(req))
            except RemoteError as exc:
                if exc.fatal:
                    raise self._fail(str(exc)) from None
                raise
            except (OSError, ProtocolError):
                self._reconnect()
                try:
                    reply = self._conn.call(dict(req))
                except (OSError, ProtocolError) as exc:
                    raise self._fail(str(exc)) from None
            self._check_async()
            return reply

    def _check_async(self) -> None:
        errors = self._conn.async_errors
        if errors:
            first = errors[0]
            raise self._fail(f"a pipelined event was refused: {first.get('error')}")

    def _show(self, what: str) -> Any:
        return self._call({"op": "show", "domain": self.domain, "what": what})["result"]

    # ------------------------------------------------------------ configuration
    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def sealed(self) -> bool:
        return self._mode is not Mode.FREE

    @property
    def pseudonyms(self) -> frozenset[bytes]:
        return frozenset(self._pseudonyms)

    def set_base(self, base: bytes) -> None:
        self._call({"op": "base", "domain": self.domain, "value": base.hex()})

    def set_aggregate(self, hw: bytes) -> None:
        self._call({"op": "aggregate", "domain": self.domain, "value": hw.hex()})

    def add_pseudonym(self, value: bytes) -> None:
        self._call({"op": "pseudonym", "domain": self.domain, "value": value.hex()})
        if value not in self._pseudonyms:
            self._pseudonyms.add(value)
            self.pseudonym_epoch += 1

    def seal(self) -> None:
        self._call({"op": "seal", "domain": self.domain})
        if self._mode is Mode.FREE:
            self._mode = Mode.SEALED

    def enforce(self) -> None:
        self._call({"op": "enforce", "domain": self.domain})
        self._mode = Mode.ENFORCING

    def load_model(self, model: Model, *, base: bytes | None = None,
                   aggregate: bytes | None = None) -> None:
        """Load ``model`` into the TMA: named by digest if it holds it, else sent."""
        req: dict[str, Any] = {"op": "load", "domain": self.domain,
                               "digest": model.digest.hex(),
                               "base": base.hex() if base is not None else None,
                               "aggregate": aggregate.hex() if aggregate is not None else None}
        try:
            self._call(req)
        except RemoteError:
            data = self.model_bytes.get(model.digest) or _model_text(model)
            del req["digest"]
            req["model"] = data.decode("utf-8", "surrogateescape")
            self._call(req)
        if not set(model.pseudonyms) <= self._pseudonyms:
            self._pseudonyms.update(model.pseudonyms)
            self.pseudonym_epoch += 1
        if model.sealed and self._mode is Mode.FREE:
            self._mode = Mode.SEALED

    # ------------------------------------------------------------------ update
    def coefficient(self, ev: ModeledEvent) -> bytes:
        """Computed here too: the mediator caches coefficients to skip describing
        events; the TMA's own coefficient is the one that counts."""
        return event_coefficient(ev, self._pseudonyms)

    def update(self, ev: ModeledEvent) -> Verdict:
        return self.update_coefficient(self.coefficient(ev), ev)

    def is_valid(self, c: bytes) -> bool | None:
        """Always unknown: the points live in the TMA, so every event is sent in full."""
        return None

    def update_coefficient(self, c: bytes, ev: ModeledEvent | None = None) -> Verdict:
        """Send ``ev`` as its export record; the verdict comes back (or, learning,
        is release by definition and the record is pipelined)."""
        if not isinstance(ev, Event):
            raise TMALost("an external TMA needs every event as its export record")
        record = self._lines.line(ev).encode("utf-8", "surrogateescape")
        with self._lock:
            if self.lost is not None:
                raise TMALost(f"external TMA {self.addr} lost: {self.lost}")
            self._seq += 1
            seq = self._seq
            if self._mode is Mode.FREE:
                return self._pipeline(seq, record, c)
            try:
                v = self._send_sync(seq, record)
            except RemoteError as exc:
                if exc.fatal:
                    raise self._fail(str(exc)) from None
                raise
            except (OSError, ProtocolError):
                last = self._reconnect()
                if last is not None and last.get("seq") == seq:
                    v = _verdict(last)  # it was modeled; only the answer was lost
                else:
                    try:
                        v = self._send_sync(seq, record)
                    except (OSError, ProtocolError) as exc:
                        raise self._fail(str(exc)) from None
            self._check_async()
        if v is None:
            raise ProtocolError(f"the TMA took event {seq} for another kind of record")
        if v.coefficient != c:
            self.mismatches += 1
        return Verdict(v.coefficient, v.added, v.trusted, self._mode)

    def _send_sync(self, seq: int, record: bytes) -> Verdict | None:
        conn = self._conn
        if conn.compact:
            return conn.export(seq, record, True)
        return _verdict(conn.call({"op": "export", "domain": self.domain, "seq": seq,
                                   "record": record.decode("utf-8", "surrogateescape"),
                                   "sync": True, "token": self._token}))

    def _send_async(self, seq: int, record: bytes) -> None:
        conn = self._conn
        if conn.compact:
            conn.export(seq, record, False)
        else:
            conn.send({"op": "export", "domain": self.domain, "seq": seq,
                       "record": record.decode("utf-8", "surrogateescape"), "sync": False,
                       "token": self._token})

    def _pipeline(self, seq: int, record: bytes, c: bytes) -> Verdict:
        self._unconfirmed.append((seq, record))
        try:
            self._send_async(seq, record)
            self._since_sync += 1
            if self._since_sync % _ERROR_CHECK_EVERY == 0:
                self._conn.poll_errors()
            if self._since_sync >= SYNC_EVERY:
                self._confirm()
        except (OSError, ProtocolError):
            self._reconnect()
        self._check_async()
        return Verdict(c, False, True, Mode.FREE)

    def _confirm(self) -> None:
        """A round trip: everything before the TMA's next number is modeled."""
        reply = self._conn.call({"op": "sync", "domain": self.domain})
        nxt = int(reply["next_seq"])
        while self._unconfirmed and self._unconfirmed[0][0] < nxt:
            self._unconfirmed.popleft()
        self._since_sync = 0

    def sync(self) -> None:
        """Wait until the TMA has modeled every event sent (raises if it refused one)."""
        with self._lock:
            self._call({"op": "sync", "domain": self.domain})
            self._unconfirmed.clear()
            self._since_sync = 0

    # ----------------------------------------------------------------- queries
    @property
    def measurement(self) -> bytes:
        return bytes.fromhex(self._show("measurement"))

    def state(self) -> bytes:
        return bytes.fromhex(self._show("state"))

    @property
    def aggregate(self) -> bytes | None:
        return bytes.fromhex(self._show("aggregate"))

    @property
    def base(self) -> bytes:
        return bytes.fromhex(self._show("base"))

    @property
    def events(self) -> int:
        return int(self._show("summary")["events"])

    @property
    def forensics_count(self) -> int:
        return int(self._show("summary")["forensics"])

    @property
    def point_count(self) -> int:
        return int(self._show("summary")["points"])

    @property
    def trajectory(self) -> list[ModeledEvent]:
        return _events(self._show("trajectory"))

    @property
    def forensics(self) -> list[ModeledEvent]:
        return _events(self._show("forensics"))

    def counts(self) -> list[int]:
        return [int(c) for c in self._show("counts")]

    def point_items(self) -> Iterable[tuple[bytes, int, bool]]:
        """``(coefficient, count, valid)`` fetched at once; the events of the points are
        kept for ``event_of`` (the model and trajectory writers ask right after)."""
        items = self._show("point_items")
        snap: dict[bytes, ModeledEvent] = {}
        out = []
        for hexp, count, valid, line in items:
            p = bytes.fromhex(hexp)
            if line is not None:
                snap[p] = _event(line)
            out.append((p, int(count), bool(valid)))
        self._snapshot = snap
        return out

    def points(self) -> list[bytes]:
        return [p for p, _c, _v in self.point_items()]

    def valid_points(self) -> list[bytes]:
        return [p for p, _c, v in self.point_items() if v]

    def forensic_points(self) -> list[bytes]:
        return [p for p, _c, v in self.point_items() if not v]

    def event_of(self, c: bytes) -> ModeledEvent | None:
        if c not in self._snapshot:
            self.point_items()
        return self._snapshot.get(c)

    def summary(self) -> dict[str, Any]:
        result = self._show("summary")
        assert isinstance(result, dict)
        return result

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _verdict(reply: dict[str, Any]) -> Verdict | None:
    """The verdict in a JSON export reply (None: the record was no event)."""
    if "coefficient" not in reply:
        return None
    return Verdict(bytes.fromhex(reply["coefficient"]), bool(reply.get("added")),
                   reply.get("verdict") == "release", Mode(reply.get("mode", "free")))


def _model_text(model: Model) -> bytes:
    """The model file's bytes, which must still be the ones that were parsed."""
    from semtrust.model.modelfile import MAX_MODEL_BYTES

    try:
        with open(model.source, "rb") as fp:
            data = fp.read(MAX_MODEL_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=model.source) from None
    if hashlib.sha256(data).digest() != model.digest:
        raise InputError("changed while being loaded", source=model.source)
    return data


def _event(line: str) -> Event | LegacyEvent:
    rec = parse_record(line, source="TMA")
    if not isinstance(rec, Event | LegacyEvent):
        raise ProtocolError("the TMA sent a non-event as a point's event")
    return rec


def _events(lines: list[str | None]) -> list[ModeledEvent]:
    return [_event(line) for line in lines if line is not None]


def open_session(addr: Address, tls: TLSFiles | None) -> Connection:
    """A bare connection for tools (show, attest, domains): hello already said."""
    try:
        conn = Connection(addr, tls)
        conn.call({"op": "hello"})
    except (OSError, ProtocolError) as exc:
        raise InputError(f"TMA {addr}: cannot connect: {exc}", field="--tma") from None
    except RemoteError as exc:
        raise InputError(f"TMA {addr}: {exc}", field="--tma") from None
    return conn


__all__ = ["LOSS_GRACE_SECONDS", "Connection", "RemoteTMA", "TMALost", "open_session"]
