"""Export record lines for the wire, with the COE and CELL text formatted once.

The orchestrator sends every event to an external TMA as its export record. The
mediator reuses one COE object per task state and one CELL object per described
file, socket or mapping, so the text of the ``"COE"`` and CELL members is cached
per (event type, COE object, CELL object); a repeated event formats only its
header. Every line is exactly ``format_event(ev)``: the cached tail is cut from
that function's own output, and ``tests/tma/test_lines.py`` checks equality.
"""

from __future__ import annotations

from semtrust.events.jsonexport import _q, format_event, header_members
from semtrust.events.record import Cell, Coe, Event

#: Cached tails (and process names) before the cache is emptied.
MAX_CACHE = 1 << 14
# Where the header object ends and the COE member starts in format_event's output. A
# process name cannot hide this text: a quote inside a JSON string is escaped.
_COE_MARK = '}, "COE": {"uid": '


class LineFormatter:
    """``format_event`` for the wire, caching each COE/CELL pair's text by identity."""

    def __init__(self) -> None:
        # (type, id(coe), id(cell)) -> (coe, cell, tail); the entry keeps both objects
        # alive, so their ids cannot be reused while it is cached.
        self._tails: dict[tuple[str, int, int], tuple[Coe, Cell, str]] = {}
        self._names: dict[str, str] = {}

    def line(self, ev: Event) -> str:
        """One JSON export line (no newline), equal to ``format_event(ev)``."""
        key = (ev.type, id(ev.coe), id(ev.cell))
        hit = self._tails.get(key)
        if hit is None or hit[0] is not ev.coe or hit[1] is not ev.cell:
            full = format_event(ev)
            tail = full[full.index(_COE_MARK) + 1:]
            if len(self._tails) >= MAX_CACHE:
                self._tails.clear()
            self._tails[key] = (ev.coe, ev.cell, tail)
            return full
        return f'{{"export": {{"type": "{ev.export}"}}, "event": {{{self._header(ev)}}}{hit[2]}'

    def _header(self, ev: Event) -> str:
        """The header object's members, as format_event writes them (the process member
        from a cache)."""
        return header_members(ev, self._process)

    def _process(self, process: str) -> str:
        member = self._names.get(process)
        if member is None:
            if len(self._names) >= MAX_CACHE:
                self._names.clear()
            member = self._names[process] = f'"process": {_q(process)}'
        return member


__all__ = ["LineFormatter"]
