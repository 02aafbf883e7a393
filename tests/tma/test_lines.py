"""The wire's export lines (``semtrust.tma.lines``) are exactly ``format_event``'s.

The formatter caches the COE and CELL text per object; a cached tail must never
leak into a line whose header, export type, COE or CELL differs.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semtrust.events.jsonexport import format_event
from semtrust.events.reader import read_records
from semtrust.events.record import Event
from semtrust.tma.lines import LineFormatter
from tests.unit.test_properties import events
from tests.vectors import VECTORS

# Long-lived: its cache persists across examples, as it does in a live domain.
SHARED = LineFormatter()


def test_vector_events_are_formatted_alike_cached_or_not() -> None:
    evs = [e for _n, e in read_records(VECTORS / "test-trajectory.json") if isinstance(e, Event)]
    f = LineFormatter()
    for _ in range(2):  # the second pass takes the cached tails
        for e in evs:
            assert f.line(e) == format_event(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), events(), st.data())
def test_a_cached_tail_only_serves_the_same_coe_and_cell(a: Event, b: Event,
                                                          data: st.DataObject) -> None:
    assert SHARED.line(a) == format_event(a)
    # Same COE and CELL objects under another header and export type: the cache hits.
    again = b._replace(type=a.type, coe=a.coe, cell=a.cell,
                       export=data.draw(st.sampled_from(["event", "async_event", "log"])))
    assert SHARED.line(again) == format_event(again)
    # Equal but distinct objects, and another type over the same objects: no stale text.
    assert SHARED.line(b) == format_event(b)
    other = a._replace(type=b.type)
    assert SHARED.line(other) == format_event(other)
