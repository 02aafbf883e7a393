"""Models made from other models: the union of several learned models, and the writer
that ``model merge`` and ``model refresh`` share.

A point whose event is recorded (``# export`` comment) is recomputed under the
merged pseudonym set, so a model learned with ``--pseudonym P`` and one learned
without it agree on P once merged. Points without a record are copied as they are.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from semtrust.errors import InputError
from semtrust.events import Event
from semtrust.events.describe import describe
from semtrust.model.coefficient import ZERO, event_coefficient
from semtrust.model.modelfile import (
    EVENT_COMMENT,
    RECORD_COMMENT,
    Model,
    point_descriptions,
    point_records,
    record_line,
)


@dataclass
class Entry:
    """One point of a model being written, with what is known about its event."""

    point: bytes
    description: str | None = None
    record: Event | None = None


@dataclass
class Composed:
    """A model to write: header values and points in order."""

    aggregate: bytes | None
    base: bytes | None
    pseudonyms: set[bytes] = field(default_factory=set)
    entries: dict[bytes, Entry] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, entry: Entry) -> None:
        old = self.entries.get(entry.point)
        if old is None:
            self.entries[entry.point] = entry
        elif old.record is None and entry.record is not None:
            old.record = entry.record
            old.description = old.description or entry.description

    def render(self) -> str:
        out = io.StringIO()
        out.write(f"aggregate {(self.aggregate or ZERO).hex()}\n")
        if self.base is not None:
            out.write(f"base {self.base.hex()}\n")
        out.writelines(f"pseudonym {p.hex()}\n" for p in sorted(self.pseudonyms))
        for e in self.entries.values():
            hexp = e.point.hex()
            text = e.description or (describe(e.record) if e.record is not None else None)
            if text is not None:
                out.write(f"{EVENT_COMMENT}{hexp} {text}\n")
            line = record_line(e.record)
            if line is not None:
                out.write(f"{RECORD_COMMENT}{hexp} {line}\n")
            out.write(f"state {hexp}\n")
        out.write("seal\nend\n")
        return out.getvalue()


def entries_of(model: Model) -> list[Entry]:
    """The model's points with their descriptions and recorded events."""
    desc = point_descriptions(model)
    recs = point_records(model)
    return [Entry(p, desc.get(p), recs.get(p)) for p in dict.fromkeys(model.points)]


def merge_models(models: Sequence[Model], *, allow_mismatch: bool = False) -> Composed:
    """The union of ``models`` (points, descriptions, pseudonyms)."""
    if not models:
        raise InputError("nothing to merge")
    first = models[0]
    for m in models[1:]:
        for what, a, b in (("aggregate", first.aggregate, m.aggregate),
                           ("base", first.base, m.base)):
            if (a or ZERO) != (b or ZERO) and not allow_mismatch:
                raise InputError(f"{what} differs from {first.source}'s (learned on another "
                                 f"platform state or with another base; --allow-mismatch "
                                 f"keeps the first model's)", source=m.source, field=what)
    out = Composed(first.aggregate, first.base)
    for m in models:
        out.pseudonyms.update(m.pseudonyms)
    for m in models:
        recompute = set(m.pseudonyms) != out.pseudonyms
        unrecorded = 0
        for e in entries_of(m):
            if recompute and e.record is not None:
                e = Entry(event_coefficient(e.record, out.pseudonyms), e.description, e.record)
            elif recompute:
                unrecorded += 1
            out.add(e)
        if unrecorded:
            out.notes.append(f"{m.source}: {unrecorded} point(s) without a recorded event "
                             "were copied as learned under its own pseudonyms")
    return out


def program_of(ev: Event | None, description: str | None) -> str:
    """The program an event belongs to, for grouping (process name)."""
    if ev is not None and ev.process:
        return ev.process
    if description:
        parts = description.split(" ")
        if len(parts) > 1:
            return parts[1]
    return "?"


def type_of(ev: Event | None, description: str | None) -> str:
    if ev is not None:
        return ev.type
    return description.split(" ", 1)[0] if description else "?"


def group(entries: Iterable[Entry]) -> dict[str, dict[str, list[Entry]]]:
    """Entries grouped by program, then by event type (first-seen order)."""
    out: dict[str, dict[str, list[Entry]]] = {}
    for e in entries:
        prog = program_of(e.record, e.description)
        out.setdefault(prog, {}).setdefault(type_of(e.record, e.description), []).append(e)
    return out
