"""Event descriptions stay on one printable line whatever the event carries."""

from __future__ import annotations

from hypothesis import given

from semtrust.events.describe import describe
from semtrust.events.jsonexport import parse_record
from semtrust.events.record import Event
from tests import vectors
from tests.unit.test_properties import events


def _first_file_open() -> Event:
    line = vectors.path("events18.json").read_text().splitlines()[0]
    ev = parse_record(line)
    assert isinstance(ev, Event)
    return ev


def test_plain_event() -> None:
    assert describe(_first_file_open()).startswith("file_open cat /")


def test_unprintable_characters_become_question_marks() -> None:
    ev = _first_file_open()
    path = ev.cell.file.path._replace(pathname="/tmp/a\nb\tc\x1bd\u200be")  # type: ignore[union-attr]
    cell = ev.cell._replace(file=ev.cell.file._replace(path=path))  # type: ignore[union-attr]
    assert describe(ev._replace(cell=cell, process="ca\rt")) == "file_open ca?t /tmp/a?b?c?d?e"


@given(events())
def test_always_one_bounded_printable_line(ev: Event) -> None:
    text = describe(ev)
    assert text.isprintable()
    assert 0 < len(text) <= 300
    assert text.startswith(ev.type)
