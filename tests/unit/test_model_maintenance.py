"""Explanations, pairing, model records, merge, the follow feed and socket names (no kernel)."""

from __future__ import annotations

import threading

from semtrust.events.describe import describe, family_name, type_name
from semtrust.events.jsonexport import parse_record
from semtrust.events.record import Event, FileCell, SocketCreateCell
from semtrust.model.coefficient import event_coefficient, pseudonym
from semtrust.model.explain import (
    ATTRIBUTES_CHANGED,
    CONTENT_CHANGED,
    NEW_OBJECT,
    NEW_PROGRAM,
    NOT_IN_MODEL,
    Explainer,
    pair_points,
)
from semtrust.model.merge import merge_models
from semtrust.model.modelfile import parse_model, point_records, render_model
from semtrust.model.tma import TMA
from semtrust.orchestrator.feed import Feed
from tests import vectors


def _file_open() -> Event:
    line = vectors.path("events18.json").read_text().splitlines()[0]
    ev = parse_record(line)
    assert isinstance(ev, Event) and isinstance(ev.cell, FileCell)
    return ev


def _with(ev: Event, *, digest: bytes | None = None, path: str | None = None,
          mode: int | None = None) -> Event:
    assert isinstance(ev.cell, FileCell)
    f = ev.cell.file
    if digest is not None:
        f = f._replace(digest=digest)
    if path is not None:
        f = f._replace(path=f.path._replace(pathname=path))
    if mode is not None:
        f = f._replace(inode=f.inode._replace(mode=mode))
    return ev._replace(cell=FileCell(f))


def _learned(*events: Event, pseudonyms: tuple[str, ...] = ()) -> str:
    tma = TMA()
    for p in pseudonyms:
        tma.add_pseudonym(pseudonym(p))
    for ev in events:
        tma.update(ev)
    return render_model(tma)


def test_explainer_reasons() -> None:
    ev = _file_open()
    ex = Explainer({event_coefficient(ev): ev})
    changed = ex.explain(_with(ev, digest=b"\1" * 32))
    assert changed.kind == CONTENT_CHANGED
    assert changed.path == ev.cell.file.path.pathname  # type: ignore[union-attr]
    assert f"--pseudonym {changed.path}" in changed.detail
    assert ex.explain(_with(ev, mode=0o100600)).kind == ATTRIBUTES_CHANGED
    assert ex.explain(_with(ev, path="/etc/shadow")).kind == NEW_OBJECT
    assert ex.explain(ev._replace(task_id=b"\7" * 32)).kind == NEW_PROGRAM
    assert Explainer({}).explain(ev).kind == NOT_IN_MODEL


def test_model_records_round_trip_and_edited_records_are_ignored() -> None:
    ev = _file_open()
    text = _learned(ev, _with(ev, path="/etc/other"))
    assert "# export " in text and '"pid": "0"' in text
    m = parse_model(text.encode())
    recs = point_records(m)
    assert set(recs) == set(m.points)
    path = ev.cell.file.path.pathname  # type: ignore[union-attr]
    forged = "".join(line.replace(path, "/etc/forged") if line.startswith("# export") else line
                     for line in text.splitlines(keepends=True))
    assert forged != text
    kept = point_records(parse_model(forged.encode()))
    assert set(kept) == {event_coefficient(_with(ev, path="/etc/other"))}


def test_learning_twice_writes_the_same_model_text() -> None:
    ev = _file_open()
    assert _learned(ev._replace(pid=1, ts=5)) == _learned(ev._replace(pid=2, ts=9))


def test_pair_points_pairs_same_object_of_same_program_once() -> None:
    ev = _file_open()
    a = _with(ev, digest=b"\1" * 32)
    b = _with(ev, digest=b"\2" * 32)
    other = _with(ev, path="/etc/x")
    pa, pb, po = (event_coefficient(x) for x in (a, b, other))
    pairs = pair_points([pa], [pb, po], {pa: a}, {pb: b, po: other})
    assert [(p.a, p.b) for p in pairs] == [(pa, pb)]
    assert pairs[0].explanation.kind == CONTENT_CHANGED


def test_merge_unions_and_recomputes_under_pseudonyms() -> None:
    ev = _file_open()
    path = ev.cell.file.path.pathname  # type: ignore[union-attr]
    other = _with(ev, path="/etc/other")
    ma = parse_model(_learned(ev, pseudonyms=(path,)).encode(), source="a")
    mb = parse_model(_learned(_with(ev, digest=b"\3" * 32), other).encode(), source="b")
    out = merge_models([ma, mb])
    merged = parse_model(out.render().encode())
    # b's point for the file is recomputed under a's pseudonym: it is a's point now.
    assert set(merged.points) == set(ma.points) | {event_coefficient(other, merged.pseudonyms)}
    assert set(merged.pseudonyms) == {pseudonym(path)}


def test_feed_never_blocks_and_counts_what_a_slow_follower_lost() -> None:
    feed = Feed()
    sub = feed.subscribe()
    done = threading.Event()

    def publish() -> None:
        for i in range(10000):
            feed.publish(lambda i=i: {"n": i})
        done.set()

    t = threading.Thread(target=publish)
    t.start()
    t.join(timeout=60)
    assert done.is_set()  # nobody read, the publisher finished anyway
    items, dropped, ended = sub.take(0)
    assert len(items) + dropped == 10000 and dropped > 0
    assert items[-1] == {"n": 9999} and not ended
    feed.end({"kind": "end"}, wait=0)
    items, _, ended = sub.take(0)
    assert items == [{"kind": "end"}] and ended


def test_feed_without_followers_builds_nothing() -> None:
    feed = Feed()

    def boom() -> dict[str, object]:
        raise AssertionError("built without a follower")

    feed.publish(boom)


def test_socket_descriptions_name_families_and_types() -> None:
    ev = _file_open()._replace(type="socket_create",
                               cell=SocketCreateCell(2, 1 | 0o2000000, 6, 0))
    assert describe(ev).endswith("AF_INET SOCK_STREAM|SOCK_CLOEXEC protocol=6")
    assert family_name(10) == "AF_INET6" and family_name(999) == "family 999"
    assert type_name(2) == "SOCK_DGRAM"
