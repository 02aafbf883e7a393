"""The host agent: attest every running domain and push to the verifier.

Every ``interval`` seconds — and at once when a domain's forensics count grows —
the agent asks the verifier for a nonce, collects a signed attestation from each
running domain over its management socket, and pushes them in one request with
the forensic event lines it has not delivered yet. When the verifier is
unreachable or answers 5xx it retries with exponential backoff; nothing is
marked delivered before the verifier accepted it, so nothing is lost (each
attestation carries the domain's cumulative state and forensics count).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from semtrust.attest.service import request_attestation
from semtrust.fleet.client import HostClient, VerifierError, VerifierUnavailable
from semtrust.orchestrator.mgmt import MgmtError, list_domains, request

__all__ = ["Agent", "PushResult", "push_once"]

log = logging.getLogger("semtrust.agent")
MAX_EVENTS_PER_PUSH = 200


@dataclass
class PushResult:
    pushed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def push_once(client: HostClient, names: list[str] | None = None,
              sent_events: dict[str, int] | None = None) -> PushResult:
    """One round: nonce, attest ``names`` (default: every running domain), push.

    ``sent_events`` maps domain -> forensic events already delivered; it is
    advanced only after the verifier accepted the push.
    """
    if names is None:
        names = sorted(str(d["name"]) for d in list_domains() if d.get("name"))
    result = PushResult()
    excluded: set[str] = set()
    for _attempt in range(3):
        nonce = client.nonce()
        docs: list[dict[str, Any]] = []
        events: dict[str, dict[str, Any]] = {}
        for name in names:
            if name in excluded:
                continue
            try:
                doc = request_attestation(name, bytes.fromhex(nonce))
            except MgmtError as exc:
                result.skipped[name] = str(exc)
                continue
            docs.append(doc)
            have = int(doc.get("forensics") or 0)
            done = (sent_events or {}).get(name, 0)
            if have > done:
                try:
                    lines = request(name, {"op": "show", "what": "forensics"})
                except MgmtError:
                    lines = []
                if isinstance(lines, list):
                    chunk = [str(x) for x in lines[done:done + MAX_EVENTS_PER_PUSH]]
                    events[name] = {"from": done, "events": chunk}
        if not docs:
            return result
        try:
            client.push(nonce, docs, events)
        except VerifierError as exc:
            # One bad domain (e.g. signing with a key the verifier does not know) must
            # not silence the others: drop it and push the rest with a fresh nonce.
            index = exc.body.get("index")
            if not isinstance(index, int) or not 0 <= index < len(docs):
                raise
            bad = str(docs[index].get("domain"))
            result.skipped[bad] = str(exc)
            excluded.add(bad)
            continue
        result.pushed = [str(d["domain"]) for d in docs]
        if sent_events is not None:
            for name, ev in events.items():
                sent_events[name] = int(ev["from"]) + len(ev["events"])
        return result
    return result


class Agent:
    def __init__(self, client: HostClient, *, interval: float = 60.0, tick: float = 0.5,
                 max_backoff: float = 60.0) -> None:
        self.client = client
        self.interval = interval
        self.tick = tick
        self.max_backoff = max_backoff
        self.sent_events: dict[str, int] = {}
        self._forensics: dict[str, int] = {}
        self.stop = threading.Event()

    def _forensics_grew(self) -> bool:
        grew = False
        for d in list_domains():
            name = str(d.get("name"))
            try:
                stats = request(name, {"op": "show", "what": "stats"}, timeout=5.0)
            except MgmtError:
                continue
            n = int(stats.get("forensics", 0)) if isinstance(stats, dict) else 0
            if n > self._forensics.get(name, 0):
                grew = True
            self._forensics[name] = n
        return grew

    def run(self) -> None:
        next_push = 0.0
        backoff = 1.0
        while not self.stop.is_set():
            now = time.monotonic()
            urgent = self._forensics_grew()
            if urgent or now >= next_push:
                try:
                    r = push_once(self.client, sent_events=self.sent_events)
                except VerifierUnavailable as exc:
                    log.warning("%s; retrying in %.0f s", exc, backoff)
                    next_push = now + backoff
                    backoff = min(backoff * 2, self.max_backoff)
                    self.stop.wait(self.tick)
                    continue
                except VerifierError as exc:
                    log.error("%s", exc)
                    next_push = now + self.interval
                    self.stop.wait(self.tick)
                    continue
                backoff = 1.0
                for name, why in r.skipped.items():
                    log.warning("domain %s not attested: %s", name, why)
                log.info("pushed %d attestation(s)", len(r.pushed))
                next_push = now + self.interval
            self.stop.wait(self.tick)
