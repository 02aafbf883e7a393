"""The domains an external TMA holds, and the one place an export record is modeled.

Both the socket server and the MQTT importer feed records through
:meth:`ServedDomain.ingest`, so a trajectory gives the same points, measurement
and state whichever way it arrived. Records are read by the quick
coefficient path (a schema decode with digest caches) and parsed in full only when
they add a point (whose event is kept as its description) or when the quick path
defers. The sequence number of each record is
checked here: a gap or a duplicate is a trust event (the domain becomes
unattestable), never silently modeled.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from semtrust.errors import InputError
from semtrust.events.jsonexport import format_event, parse_record, parse_record_bytes
from semtrust.events.record import Aggregate, Event, LegacyEvent, LogRecord, PseudonymRecord
from semtrust.model.quick import QuickCoefficients
from semtrust.model.tma import TMA, Verdict
from semtrust.model.views import TMA_VIEWS, tma_view

#: Trust events kept per domain (the count goes on past it).
MAX_TRUST_EVENTS = 1000


class SequenceError(Exception):
    """A record arrived out of sequence (gap or duplicate); it was not modeled."""


class ServedDomain:
    """One modeling domain's TMA and its bookkeeping on the TMA's side."""

    def __init__(self, name: str, owner: str) -> None:
        self.name = name
        self.owner = owner
        # Shown by every change of the domain: the session that opened it, not just its uid.
        self.token = secrets.token_hex(16)
        self.tma = TMA()
        self.lock = threading.Lock()
        self.next_seq = 1
        self.model_digest: bytes | None = None
        self.trust_events: list[dict[str, Any]] = []
        self.trust_event_count = 0
        self.logs = 0
        self.duplicates = 0
        self.ended = False
        # The last export's number and verdict, for a client that reconnects without
        # having read the answer.
        self.last: tuple[int, Verdict | None] | None = None
        self.created = time.time()
        self._quick = QuickCoefficients()
        self._quick_epoch = 0
        self._source = f"domain {name}"

    def last_reply(self) -> dict[str, Any] | None:
        """The last export's answer as a JSON reply (for ``open`` with ``resume``)."""
        if self.last is None:
            return None
        return export_reply(*self.last)

    @property
    def unattestable(self) -> bool:
        return self.trust_event_count > 0

    def trust_event(self, kind: str, **detail: Any) -> None:
        """Record something that makes the model untrustworthy (caller holds ``lock``)."""
        self.trust_event_count += 1
        if len(self.trust_events) < MAX_TRUST_EVENTS:
            self.trust_events.append({"kind": kind, "time": time.time(), **detail})

    def ingest(self, seq: int, record: str | bytes | None, *, duplicates_ok: bool = False
               ) -> Verdict | None:
        """Model one export record numbered ``seq`` (caller holds ``lock``).

        Returns the verdict for an event, None for an aggregate or log record, or
        for ``record`` None: the end of an exported stream.
        Raises SequenceError (after recording the trust event) for a gap or a
        duplicate; with ``duplicates_ok`` (MQTT at QoS 1 delivers at least once) an
        already seen number is dropped and counted instead. Raises InputError
        for a record that cannot be parsed (a trust event too; the number is used).
        """
        expected = self.next_seq
        if seq != expected:
            if seq < expected and duplicates_ok:
                self.duplicates += 1
                raise SequenceError(f"duplicate {seq} dropped")
            kind = "duplicate" if seq < expected else "gap"
            self.trust_event(kind, expected=expected, got=seq)
            if kind == "gap" and duplicates_ok:
                # A stream cannot ask for the lost records again: report and go on.
                self.next_seq = seq
                return self.ingest(seq, record, duplicates_ok=True)
            raise SequenceError(f"sequence {kind}: expected {expected}, got {seq}")
        self.next_seq = expected + 1
        if record is None:
            self.ended = True
            return None
        tma = self.tma
        source = self._source
        try:
            raw = record if isinstance(record, bytes) else record.encode()
        except UnicodeEncodeError:  # lone surrogates: only the text parser reads them
            raw = None
        try:
            if raw is None:
                rec = parse_record(str(record), source=source, line=seq)
            else:
                if self._quick_epoch != tma.pseudonym_epoch:
                    # Pseudonyms change file digests: a reader with the current set.
                    self._quick = QuickCoefficients(tma.pseudonyms)
                    self._quick_epoch = tma.pseudonym_epoch
                c = self._quick.of_line(raw)
                if c is not None and tma.is_valid(c) is not None:
                    # A known point: its count goes up; nothing to parse or keep.
                    return tma.update_coefficient(c)
                if raw is record:
                    _utf8(raw, source, seq)  # kept events are shown and sent as text
                rec = parse_record_bytes(raw, source=source, line=seq)
        except InputError as exc:
            self.trust_event("bad-record", seq=seq, error=str(exc))
            raise
        if isinstance(rec, Event | LegacyEvent):
            return tma.update(rec)
        if isinstance(rec, Aggregate):
            self.tma.set_aggregate(rec.value)
        elif isinstance(rec, PseudonymRecord):
            self.tma.add_pseudonym(rec.value)
        elif isinstance(rec, LogRecord):
            self.logs += 1
        return None

    # ------------------------------------------------------------------ views
    def show(self, what: str) -> Any:
        """A read-only view (caller holds ``lock``); KeyError for an unknown one."""
        t = self.tma
        if what in TMA_VIEWS:
            return tma_view(t, what)
        if what == "base":
            return t.base.hex()
        if what == "mode":
            return t.mode.value
        if what == "trajectory":
            return [_line(e) for e in t.trajectory]
        if what == "forensics":
            return [_line(e) for e in t.forensics]
        if what == "point_items":
            out = []
            for p, count, valid in t.point_items():
                ev = t.event_of(p)
                out.append([p.hex(), count, valid, _line(ev) if ev is not None else None])
            return out
        if what == "trust_events":
            return list(self.trust_events)
        if what == "summary":
            return self.summary()
        raise KeyError(what)

    def summary(self) -> dict[str, Any]:
        t = self.tma
        return {"domain": self.name, "mode": t.mode.value, "events": t.events,
                "points": t.point_count, "forensics": t.forensics_count,
                "measurement": t.measurement.hex(), "state": t.state().hex(),
                "aggregate": (t.aggregate or bytes(32)).hex(), "base": t.base.hex(),
                "pseudonyms": sorted(p.hex() for p in t.pseudonyms),
                "next_seq": self.next_seq, "trust_events": self.trust_event_count,
                "duplicates": self.duplicates, "logs": self.logs, "ended": self.ended,
                "unattestable": self.unattestable,
                "model_digest": self.model_digest.hex() if self.model_digest else None}


def _utf8(raw: bytes, source: str, seq: int) -> None:
    try:
        raw.decode()
    except UnicodeDecodeError as exc:
        raise InputError(f"record is not UTF-8 (byte {exc.start})", source=source,
                         line=seq) from None


def export_reply(seq: int, v: Verdict | None) -> dict[str, Any]:
    """The JSON reply to an export (``v`` None: the record was no event)."""
    if v is None:
        return {"ok": True, "seq": seq}
    return {"ok": True, "seq": seq, "verdict": "release" if v.trusted else "discipline",
            "coefficient": v.coefficient.hex(), "added": v.added, "mode": v.mode.value}


def _line(ev: Event | LegacyEvent | None) -> str | None:
    return format_event(ev) if isinstance(ev, Event) else None


VIEWS = ("points", "counts", "state", "measurement", "aggregate", "base", "mode", "model",
         "trajectory", "forensics", "point_items", "trust_events", "summary")
