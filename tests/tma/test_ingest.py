"""How the TMA reads export records (``ServedDomain.ingest``).

A known point is counted from the quick coefficient path alone; a new point is parsed
in full and its event kept; pseudonyms reach the quick path; a record that is not
UTF-8 is a bad record (a trust event), never modeled.
"""

from __future__ import annotations

from typing import Any

import pytest

import semtrust.tma.domains as domains
from semtrust.errors import InputError
from semtrust.events.jsonexport import format_event
from semtrust.events.record import Event, FileCell
from semtrust.model.coefficient import pseudonym
from semtrust.model.tma import TMA
from tests.tma.test_remote import records


def _file_events() -> list[Event]:
    return [r for r in records("events18.json")
            if isinstance(r, Event) and isinstance(r.cell, FileCell)]


def test_known_points_skip_the_full_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[int] = []
    full = domains.parse_record_bytes

    def counting(raw: bytes, **kw: Any) -> Any:
        parsed.append(kw.get("line", 0))
        return full(raw, **kw)

    monkeypatch.setattr(domains, "parse_record_bytes", counting)
    dom = domains.ServedDomain("quick", "uid:0")
    local = TMA()
    ev = _file_events()[0]
    line = format_event(ev).encode()
    for seq in range(1, 4):
        v = dom.ingest(seq, line)
        assert v == local.update(ev)
    assert parsed == [1], "only the record that added the point is parsed in full"
    assert [format_event(e) for e in dom.tma.trajectory] == [format_event(ev)]  # type: ignore[arg-type]
    assert dom.tma.state() == local.state() and dom.tma.counts() == local.counts()


def test_a_pseudonym_declared_later_reaches_the_quick_path() -> None:
    evs = _file_events()
    dom = domains.ServedDomain("pseud", "uid:0")
    local = TMA()
    for seq, ev in enumerate(evs, 1):
        assert dom.ingest(seq, format_event(ev).encode()) == local.update(ev)
    path = evs[0].cell.file.path.pathname  # type: ignore[union-attr]
    dom.tma.add_pseudonym(pseudonym(path))
    local.add_pseudonym(pseudonym(path))
    # Twice: the second time each is a known point, read by the quick path alone, and a
    # reader with the old pseudonyms would count the point from before.
    for seq, ev in enumerate(evs + evs, len(evs) + 1):
        assert dom.ingest(seq, format_event(ev).encode()) == local.update(ev)
    assert dom.tma.points() == local.points() and dom.tma.counts() == local.counts()


def test_a_record_that_is_not_utf8_is_a_bad_record() -> None:
    dom = domains.ServedDomain("bytes", "uid:0")
    line = format_event(_file_events()[0]).encode().replace(b'"cat"', b'"c\xffat"')
    with pytest.raises(InputError, match="not UTF-8"):
        dom.ingest(1, line)
    assert dom.tma.events == 0 and dom.unattestable
    assert [t["kind"] for t in dom.trust_events] == ["bad-record"]
