"""Properties of the formats and of the model (hypothesis)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from semtrust.events.generic import generic_body
from semtrust.events.jsonexport import format_event, parse_record
from semtrust.events.names import EVENT_NAMES, EXPLICIT_CELLS
from semtrust.events.record import (
    Cell,
    Coe,
    Event,
    FileCell,
    FileDesc,
    GenericCell,
    Inet6Addr,
    InetAddr,
    Inode,
    MmapCell,
    OtherAddr,
    PathName,
    SockDesc,
    SocketAddrCell,
    SocketCreateCell,
    TaskKillCell,
    UnixAddr,
)
from semtrust.model.coefficient import event_coefficient
from semtrust.model.tma import TMA

u32s = st.integers(0, 0xFFFFFFFF)
u64s = st.integers(0, (1 << 64) - 1)  # as u64() reads them: masked, so any 64-bit value
d32 = st.binary(min_size=32, max_size=32)
# Control characters have no representation the reference's escape rule reads back.
text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)


def _limited(max_bytes: int) -> st.SearchStrategy[str]:
    return text.filter(lambda s: len(s.encode()) <= max_bytes)


coes = st.builds(Coe, u32s, u32s, u32s, u32s, u32s, u32s, u32s, u32s, st.integers(0, (1 << 64) - 1))
inodes = st.builds(Inode, u32s, u32s, st.integers(0, 0xFFFF), u32s, _limited(31),
                   st.binary(min_size=16, max_size=16))


@st.composite
def pathnames(draw: st.DrawFn) -> PathName:
    instance = draw(st.one_of(st.just(0), st.integers(1, (1 << 64) - 1)))
    name = draw(text)
    if instance:
        name = "/" + name
    dev = draw(st.one_of(st.none(), st.tuples(u32s, u32s)))
    return PathName(name, draw(st.sampled_from(["root", "namespace", "chroot"])), instance,
                    draw(d32) if instance else None,
                    dev[0] if dev else None, dev[1] if dev else None)


files = st.builds(FileDesc, u32s, inodes, pathnames(), d32)


@st.composite
def sock_cells(draw: st.DrawFn) -> SocketAddrCell:
    family = draw(st.sampled_from([1, 2, 10, 16, 38]))
    sock = SockDesc(family, draw(u32s), draw(u32s), draw(d32))
    if family == 2:
        addr: InetAddr | Inet6Addr | UnixAddr | OtherAddr = InetAddr(draw(u32s), draw(u32s))
    elif family == 10:
        addr = Inet6Addr(draw(u32s), draw(u32s), draw(u32s),
                         draw(st.binary(min_size=16, max_size=16)))
    elif family == 1:
        addr = UnixAddr(draw(_limited(108)))
    else:
        addr = OtherAddr(draw(d32))
    return SocketAddrCell(sock, addr)


@st.composite
def events(draw: st.DrawFn) -> Event:
    name = draw(st.sampled_from(EVENT_NAMES))
    cell: Cell
    if name == "file_open":
        cell = FileCell(draw(files))
    elif name == "mmap_file":
        cell = MmapCell(draw(u32s), draw(u32s), draw(st.one_of(st.none(), files)))
    elif name == "socket_create":
        cell = SocketCreateCell(draw(u32s), draw(u32s), draw(u32s), draw(u32s))
    elif name in ("socket_connect", "socket_bind", "socket_accept"):
        cell = draw(sock_cells())
    elif name == "task_kill":
        cell = TaskKillCell(draw(d32), draw(u32s), draw(u32s))
    else:
        assert name not in EXPLICIT_CELLS
        cell = GenericCell(generic_body(draw(st.dictionaries(text, text, max_size=3))))
    opt = st.one_of(st.none(), u64s)
    return Event(
        name, draw(d32), draw(coes), cell, draw(st.sampled_from(["event", "async_event", "log"])),
        pid=draw(st.one_of(st.none(), u32s)), tnum=draw(opt), context=draw(opt),
        number=draw(opt), process=draw(st.one_of(st.none(), text)), ttd=draw(opt),
        p_ttd=draw(opt), p_task_id=draw(st.one_of(st.none(), d32)), ts=draw(opt),
    )


@settings(max_examples=400, deadline=None)
@given(events())
def test_format_parse_round_trip(ev: Event) -> None:
    line = format_event(ev)
    assert "\n" not in line
    json.loads(line)  # well-formed JSON
    assert parse_record(line) == ev
    # Without the wrapper the record is read as a plain event.
    assert parse_record(format_event(ev, export=False)) == ev._replace(export="event")


coeff_lists = st.lists(d32, min_size=0, max_size=40)


@given(coeff_lists, st.randoms(use_true_random=False))
def test_state_is_order_independent(points: list[bytes], rnd) -> None:  # type: ignore[no-untyped-def]
    a, b = TMA(), TMA()
    shuffled = points[:]
    rnd.shuffle(shuffled)
    for c in points:
        a.update_coefficient(c)
    for c in shuffled:
        b.update_coefficient(c)
    assert a.state() == b.state()
    if list(dict.fromkeys(points)) != list(dict.fromkeys(shuffled)):
        assert a.measurement != b.measurement


@given(coeff_lists.filter(bool), st.data())
def test_duplicates_never_change_state_or_measurement(points: list[bytes], data) -> None:  # type: ignore[no-untyped-def]
    tma = TMA()
    for c in points:
        tma.update_coefficient(c)
    state, measurement, n = tma.state(), tma.measurement, len(tma.points())
    again = data.draw(st.sampled_from(points))
    verdict = tma.update_coefficient(again)
    assert not verdict.added and verdict.trusted
    assert (tma.state(), tma.measurement, len(tma.points())) == (state, measurement, n)


@given(coeff_lists, coeff_lists)
def test_sealed_forensics_are_exactly_the_new_points(
    learned: list[bytes], later: list[bytes]
) -> None:
    tma = TMA()
    for c in learned:
        tma.update_coefficient(c)
    tma.seal()
    verdicts = [tma.update_coefficient(c) for c in later]
    new = [c for c in dict.fromkeys(later) if c not in set(learned)]
    assert tma.forensic_points() == new
    assert tma.forensics_count == len(new)
    for c, v in zip(later, verdicts, strict=True):
        assert v.trusted == (c in set(learned))


@settings(max_examples=100, deadline=None)
@given(st.lists(events(), min_size=1, max_size=8))
def test_real_events_state_matches_sorted_recompute(evs: list[Event]) -> None:
    from semtrust.model.coefficient import ZERO, state_value

    tma = TMA()
    for ev in evs:
        tma.update(ev)
    assert tma.state() == state_value(ZERO, ZERO, (event_coefficient(e) for e in evs))
