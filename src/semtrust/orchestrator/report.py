"""What a domain tells its user about events outside the model: live and at the end.

``Watch`` follows the few events that matter to a person — new points, forensic
events, calls of untrusted processes, faults — and keeps the reason of each
forensic event (``semtrust.model.explain``) and the event that made each process
untrusted. ``print_report`` writes the end-of-run summary (bounded), and the
live feed (``console NAME follow``) gets the same items as they happen.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from semtrust.events import Event
from semtrust.events.record import LegacyEvent
from semtrust.model.tma import Verdict
from semtrust.orchestrator.feed import Feed

# Describing and explaining events is loaded at the first event outside the model (or
# call of an untrusted process): a run that stays inside it never needs either.
if TYPE_CHECKING:
    from semtrust.model.explain import Explainer, Explanation
    from semtrust.model.modelfile import Model
    from semtrust.orchestrator.domain import Domain
    from semtrust.orchestrator.tasks import Process

MAX_TRACKED = 10000
REPORT_LINES = 20


def record_object(ev: Event | LegacyEvent | None) -> dict[str, Any] | None:
    """An event as its export record, as a JSON object (not a string)."""
    if not isinstance(ev, Event):
        return None
    from semtrust.events.jsonexport import format_event

    obj = json.loads(format_event(ev))
    assert isinstance(obj, dict)
    return obj


class Watch:
    """Per-domain reasons, untrusted-since bookkeeping and the live feed."""

    def __init__(self) -> None:
        self._explainer: Explainer | None = None  # made on first use
        self._model: Model | None = None
        self.feed = Feed()
        # tgid -> description of the event that made it (or an ancestor) untrusted
        self.since: dict[int, str] = {}
        self.untrusted_calls: dict[int, int] = {}
        self.names: dict[int, str] = {}
        # forensic point -> its explanation (first seen)
        self.reasons: dict[bytes, Explanation] = {}

    def use_model(self, model: Model) -> None:
        """Explain against ``model``'s recorded events. Reading them is deferred to the
        first event outside the model: a clean run of a large model never pays for it."""
        self._model = model
        self._explainer = None

    @property
    def explainer(self) -> Explainer:
        if self._explainer is None:
            from semtrust.model.explain import Explainer

            if self._model is None:
                self._explainer = Explainer({})
            else:
                from semtrust.model.modelfile import point_records

                self._explainer = Explainer(point_records(self._model))
                self._model = None
        return self._explainer

    # -------------------------------------------------------------- hooks
    def event(self, domain: Domain, proc: Process, ev: Event | None, coefficient: bytes,
              v: Verdict) -> None:
        """Called by the domain for a new point or an untrusting event."""
        full = ev if ev is not None else domain.tma.event_of(coefficient)
        reason: Explanation | None = None
        if not v.trusted:
            from semtrust.events.describe import describe

            if proc.tgid not in self.since and len(self.since) < MAX_TRACKED:
                self.since[proc.tgid] = describe(full) if full is not None else \
                    f"point {coefficient.hex()[:16]}…"
            reason = self.reasons.get(coefficient)
            if reason is None:
                reason = self.explainer.explain(full)
                if len(self.reasons) < MAX_TRACKED:
                    self.reasons[coefficient] = reason
        if not self.feed.active:
            return

        def item() -> dict[str, Any]:
            out: dict[str, Any] = {
                "kind": "trajectory" if v.trusted else "forensics",
                "point": coefficient.hex(), "pid": proc.tgid, "new_point": v.added,
                "denied": v.deny, "time": time.time(), "record": record_object(full),
            }
            if reason is not None:
                out.update(reason.as_json())
            return out

        self.feed.publish(item)

    def untrusted_call(self, domain: Domain, proc: Process, syscall: str) -> None:
        """A mediated call of an untrusted process (not modeled; denied when enforcing)."""
        tgid = proc.tgid
        n = self.untrusted_calls.get(tgid)
        if n is None:
            if len(self.untrusted_calls) >= MAX_TRACKED:
                return
            n = 0
            self.names[tgid] = proc.comm or "?"
            if tgid not in self.since:
                self.since[tgid] = self._inherited(domain, proc)
        self.untrusted_calls[tgid] = n + 1

        def item() -> dict[str, Any]:
            from semtrust.model.explain import UNTRUSTED

            return {"kind": "untrusted", "reason": UNTRUSTED, "pid": tgid, "syscall": syscall,
                    "denied": domain.enforcing, "since": self.since.get(tgid),
                    "time": time.time()}

        self.feed.publish(item)

    def fault(self, fault: dict[str, Any]) -> None:
        self.feed.publish(lambda: {"kind": "fault", **fault, "time": time.time()})

    def _inherited(self, domain: Domain, proc: Process) -> str:
        seen = set()
        p: Process | None = proc
        while p is not None and p.tgid not in seen:
            seen.add(p.tgid)
            why = self.since.get(p.tgid)
            if why is not None:
                return why if p is proc else f"{why} (in its ancestor pid {p.tgid})"
            p = domain.tasks.procs.get(p.parent)
        return "an ancestor's event (no longer known)"

    def end(self, domain: Domain, *, lost: str | None = None) -> None:
        """Close the live feed with a final summary (``lost``: why the external TMA,
        which holds the domain's state, can no longer be asked)."""
        summary: dict[str, object] = {"kind": "end", "faults": domain.fault_count,
                                      "untrusted_calls": sum(self.untrusted_calls.values()),
                                      "time": time.time()}
        if lost is None:
            summary["forensics"] = domain.tma.forensics_count
        else:
            summary["tma_lost"] = lost
        self.feed.end(summary)


def print_report(domain: Domain, out: TextIO | None = None, limit: int = REPORT_LINES) -> None:
    """Every event outside the model, each with its reason (first ``limit``, then a count),
    and the calls of untrusted processes. Silent when there is nothing to say."""
    out = out if out is not None else sys.stderr
    w = domain.watch
    with domain.lock:
        t = domain.tma
        points = t.forensic_points()
        items = [(p, t.event_of(p)) for p in points[:limit]]
        total = t.forensics_count
    denied = " (denied)" if domain.enforcing else ""
    if total:
        from semtrust.events.describe import describe

        print(f"semtrust: {total} event(s) outside the model{denied}:", file=out)
        for p, ev in items:
            what = describe(ev) if ev is not None else f"point {p.hex()[:16]}…"
            reason = w.reasons.get(p) or w.explainer.explain(ev)
            print(f"semtrust:   {what} — {reason.text()}", file=out)
        if total > len(items):
            print(f"semtrust:   … and {total - len(items)} more "
                  "(semtrust run --output FILE --trajectory keeps them all)", file=out)
    calls = w.untrusted_calls
    if calls:
        from semtrust.model.explain import UNTRUSTED

        verb = "denied" if domain.enforcing else "allowed, not modeled"
        print(f"semtrust: {sum(calls.values())} later call(s) of untrusted processes "
              f"({verb}):", file=out)
        shown = sorted(calls.items(), key=lambda kv: -kv[1])[:limit]
        for tgid, n in shown:
            print(f"semtrust:   pid {tgid} ({w.names.get(tgid, '?')}): {n} call(s); "
                  f"{UNTRUSTED} since: {w.since.get(tgid, '?')}", file=out)
        if len(calls) > len(shown):
            print(f"semtrust:   … and {len(calls) - len(shown)} more process(es)", file=out)
