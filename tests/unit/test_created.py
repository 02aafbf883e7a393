"""Creation-relative descriptions: the created-objects table and the 9b file description."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from semtrust.events import FileDesc
from semtrust.model.coefficient import file_digest
from semtrust.orchestrator.created import (
    CREATED_NAME,
    CreatedTable,
    Creation,
    Relative,
    split_parent,
)
from semtrust.sensors.fileinfo import EMPTY_DIGEST, FileInfo

OWNER = bytes(range(32))


def _dir(where: str, anchor: str, depth: int, owner: bytes = OWNER) -> Creation:
    return Creation(owner, anchor, depth, True, where, "/")


def test_split_parent() -> None:
    assert split_parent("/tmp/x") == ("/tmp", "x")
    assert split_parent("/x") == ("/", "x")
    assert split_parent("/a/b/c") == ("/a/b", "c")


def test_relative_pathname_keeps_only_the_anchor() -> None:
    assert Relative("/tmp", 2, OWNER, True).pathname == "/tmp/" + CREATED_NAME
    assert Relative("/", 1, OWNER, True).pathname == "/" + CREATED_NAME


def test_children_of_a_created_directory_share_its_anchor() -> None:
    t = CreatedTable()
    t.add((1, 10), _dir("/tmp/tmpk2x", "/tmp", 1))
    assert t.anchor_for_child((1, 10), "/tmp/tmpk2x") == ("/tmp", 2)
    assert t.anchor_for_child(None, "/srv/data") == ("/srv/data", 1)
    t.add((1, 11), _dir("/tmp/tmpk2x/tmpq7", "/tmp", 2))
    found = [p for p, _k, _r in t.dirs_above("/tmp/tmpk2x/tmpq7/f")]
    assert found == ["/tmp/tmpk2x/tmpq7", "/tmp/tmpk2x"], "deepest first"
    assert t.dir_at("/tmp/tmpk2x") == (1, 10)
    assert t.dir_at("/tmp") is None


def test_rename_of_a_file_keeps_its_record_coherent() -> None:
    """The atomic-write pattern: a created file renamed over a stable name stays created."""
    t = CreatedTable()
    t.add((1, 5), Creation(OWNER, "/home/u", 1, False, "/home/u/.cfg.tmp1", "/"))
    t.moved("/home/u/.cfg.tmp1", "/home/u/cfg", (1, 5), False, "/home/u", 1)
    rec = t.get((1, 5))
    assert rec is not None and (rec.anchor, rec.depth, rec.where) == ("/home/u", 1,
                                                                        "/home/u/cfg")


def test_rename_of_a_directory_carries_its_subtree() -> None:
    t = CreatedTable()
    t.add((1, 10), _dir("/tmp/tmpA", "/tmp", 1))
    t.add((1, 11), _dir("/tmp/tmpA/sub", "/tmp", 2))
    t.add((1, 12), Creation(OWNER, "/tmp", 3, False, "/tmp/tmpA/sub/f", "/"))
    t.moved("/tmp/tmpA", "/srv/out/tmpA", (1, 10), True, "/srv/out", 1)
    f = t.get((1, 12))
    sub = t.get((1, 11))
    assert f is not None and (f.anchor, f.depth, f.where) == ("/srv/out", 3,
                                                              "/srv/out/tmpA/sub/f")
    assert sub is not None and (sub.anchor, sub.depth) == ("/srv/out", 2)
    assert t.dir_at("/srv/out/tmpA/sub") == (1, 11)
    assert t.dir_at("/tmp/tmpA/sub") is None


def test_rename_of_a_pre_existing_directory_rebases_anchors_under_it() -> None:
    t = CreatedTable()
    t.add((1, 20), Creation(OWNER, "/data/p", 1, False, "/data/p/f", "/"))
    t.moved("/data/p", "/data/q", (1, 99), True, "/data", 1)
    rec = t.get((1, 20))
    assert rec is not None and (rec.anchor, rec.where) == ("/data/q", "/data/q/f")


def test_pending_record_is_placed_on_first_description() -> None:
    t = CreatedTable()
    t[(1, 7)] = OWNER
    rec = t.get((1, 7))
    assert rec is not None and rec.anchor is None
    t.place((1, 7), rec, "/tmp", 1, "/tmp/x", "/")
    assert (rec.anchor, rec.where) == ("/tmp", "/tmp/x")


def _file(p: Path) -> tuple[int, int]:
    p.write_text("x")
    st = p.stat()
    return st.st_dev, st.st_ino


def test_the_table_is_bounded_and_evicts_vanished_objects_first(tmp_path: Path) -> None:
    t = CreatedTable(limit=8)
    live: list[tuple[int, int]] = []
    gone: list[Path] = []
    new = _file(tmp_path / "new")  # made first, so it cannot reuse a vanished inode number
    for i in range(8):
        p = tmp_path / f"f{i}"
        key = _file(p)
        t.add(key, Creation(OWNER, str(tmp_path), 1, False, str(p), "/"))
        (gone if i % 2 else live).append(p if i % 2 else key)  # type: ignore[arg-type]
    for p in gone:
        p.unlink()
    t.add(new, Creation(OWNER, str(tmp_path), 1, False, str(tmp_path / "new"), "/"))
    # The four vanished entries went first; the table had room again without dropping
    # a single live entry.
    assert set(t) == {*live, new}
    assert t.evicted == 4


def test_the_table_evicts_oldest_live_entries_when_all_are_live(tmp_path: Path) -> None:
    t = CreatedTable(limit=8)
    keys = []
    for i in range(9):
        p = tmp_path / f"f{i}"
        keys.append(_file(p))
        t.add(keys[-1], Creation(OWNER, str(tmp_path), 1, False, str(p), "/"))
    assert len(t) <= 8
    assert list(t) == keys[2:], "the two oldest went (down to 3/4 of 8), then the new came"


def test_create_and_unlink_many_stays_within_the_bound(tmp_path: Path) -> None:
    t = CreatedTable(limit=1024)
    p = tmp_path / "churn"
    for i in range(20_000):
        # The object vanished long ago: only its record would remain.
        t.add((1, 1_000_000 + i), Creation(OWNER, str(tmp_path), 1, False, str(p), "/"))
        assert len(t) <= 1024
    assert t.evicted >= 20_000 - 1024


# ------------------------------------------------------------ file descriptions

def _describe(path: Path, **kw: object) -> FileDesc:
    fd = os.open(path, os.O_RDONLY)
    try:
        return FileInfo().describe(fd, os.O_RDONLY, **kw)  # type: ignore[arg-type]
    finally:
        os.close(fd)


def test_creation_relative_description_drops_names_and_content(tmp_path: Path) -> None:
    a, b = tmp_path / "tmpk2x", tmp_path / "tmpq7z"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    os.chmod(b, a.stat().st_mode)
    rel = Relative("/tmp", 2, OWNER, True)
    ca = _describe(a, pathname=rel.pathname, owner=OWNER, instance=2)
    cb = _describe(b, pathname=rel.pathname, owner=OWNER, instance=2)
    assert ca.digest == EMPTY_DIGEST
    assert ca.path.instance == 2 and ca.path.owner == OWNER
    # Other inode numbers, names and content: the same CELL.
    assert file_digest(ca) == file_digest(cb)
    # Depth and creator are part of it.
    other_depth = _describe(a, pathname=rel.pathname, owner=OWNER, instance=1)
    other_owner = _describe(a, pathname=rel.pathname, owner=bytes(32), instance=2)
    assert file_digest(other_depth) != file_digest(ca)
    assert file_digest(other_owner) != file_digest(ca)


def test_created_code_is_measured(tmp_path: Path) -> None:
    a = tmp_path / "tool"
    a.write_bytes(b"#!/bin/sh\necho one\n")
    measured = _describe(a, pathname="/tmp/" + CREATED_NAME, owner=OWNER,
                         measure_created=True)
    assert measured.digest == hashlib.sha256(a.read_bytes()).digest()
    assert measured.path.instance == 1


def test_a_created_file_directly_in_a_pre_existing_directory_is_described_as_before(
        tmp_path: Path) -> None:
    """Depth 1 is instance 1 under the real directory: what earlier models learned."""
    a = tmp_path / "x"
    a.write_text("data")
    old = _describe(a, pathname=str(a), owner=OWNER)
    new = _describe(a, pathname=str(tmp_path) + "/" + CREATED_NAME, owner=OWNER, instance=1)
    assert file_digest(old) == file_digest(new)
