"""Live feed of a domain's events for ``semtrust console NAME follow``.

The domain publishes into one bounded queue per follower and never waits: a
follower that reads slowly loses the oldest items (and is told how many), so a
stalled console cannot slow the workload. With no follower, publishing costs
one list check.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semtrust.orchestrator.domain import Domain

MAX_QUEUE = 4096
SEND_TIMEOUT_S = 10.0


class Subscription:
    """One follower's bounded queue."""

    def __init__(self, maxlen: int = MAX_QUEUE) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False
        self.done = threading.Event()  # set when its stream has sent everything

    def put(self, item: dict[str, Any]) -> None:
        with self._cond:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify()

    def take(self, timeout: float) -> tuple[list[dict[str, Any]], int, bool]:
        """Queued items, items dropped since the last take, and whether the feed ended."""
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            items = list(self._items)
            self._items.clear()
            dropped, self.dropped = self.dropped, 0
            return items, dropped, self.closed


class Feed:
    """Fan-out of a domain's live items to its followers."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._ended = False

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def publish(self, make: Callable[[], dict[str, Any]]) -> None:
        """Queue ``make()`` for every follower (``make`` only runs if there is one)."""
        subs = self._subs
        if not subs:
            return
        item = make()
        for s in list(subs):
            s.put(item)

    def subscribe(self) -> Subscription:
        s = Subscription()
        with self._lock:
            if self._ended:
                s.close()
            else:
                self._subs.append(s)
        return s

    def unsubscribe(self, s: Subscription) -> None:
        with self._lock:
            if s in self._subs:
                self._subs.remove(s)

    def end(self, last: dict[str, Any], wait: float = 2.0) -> None:
        """Send ``last`` to every follower, close their streams and give them up to
        ``wait`` seconds to flush (a follower that does not read is not waited for longer)."""
        with self._lock:
            self._ended = True
            subs, self._subs = self._subs, []
        for s in subs:
            s.put(last)
            s.close()
        deadline = time.monotonic() + wait
        for s in subs:
            s.done.wait(max(0.0, deadline - time.monotonic()))


def follow_stream(domain: Domain, req: dict[str, Any], conn: socket.socket) -> None:
    """Serve a ``follow`` request: one framed JSON object per item until the domain ends
    or the follower goes away."""
    from semtrust.orchestrator.mgmt import MAX_RESPONSE, send_msg

    sub = domain.watch.feed.subscribe()
    conn.settimeout(SEND_TIMEOUT_S)
    try:
        send_msg(conn, {"kind": "hello", **domain.info()}, MAX_RESPONSE)
        while True:
            items, dropped, ended = sub.take(0.5)
            if dropped:
                send_msg(conn, {"kind": "dropped", "count": dropped}, MAX_RESPONSE)
            for item in items:
                send_msg(conn, item, MAX_RESPONSE)
            if ended and not items:
                return
    except OSError:
        return  # the follower went away or stopped reading for SEND_TIMEOUT_S
    finally:
        domain.watch.feed.unsubscribe(sub)
        sub.done.set()
