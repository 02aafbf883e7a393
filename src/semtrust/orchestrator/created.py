"""Objects the domain created, so they can be described without their names.

Temporary names (``mkdtemp``, ``mktemp -d``, pytest's ``tmp_path``) are random:
if they entered a coefficient, no workload that makes temporary files would
learn the same model twice. TSEM describes a file created inside the modeling
domain by its directory, an instance number and the creator's task identity
(spec §2.4.1 row 9b), never by its own name. This module extends that to every
object *under* a directory the domain created:

* Each created object (file, directory) is recorded with its creator's task
  identity, its *anchor* -- the nearest ancestor directory that existed before
  the domain made anything there, as the task names it -- and its *depth* below
  that anchor (1 = directly in it). The anchor is the hashed directory, the
  depth the instance number, so ``/tmp/tmpk2x/tmpq7/f`` is described as
  "created by T, two levels under ``/tmp/``", whatever the names were.
* An object the domain did not create (as far as the table knows: a FIFO from
  ``mknod``, a file moved in, a mount) but reached under a created directory is
  described the same way, relative to its deepest created ancestor, with the
  creator of that directory as owner; its content is still measured.
* A rename moves the record with the object: a created file renamed over a
  stable name (write a temporary file, rename it into place) stays a created
  object, described by its new directory's anchor -- the same in every run.

The table is bounded (:data:`MAX_CREATED`). When it is full, entries whose
object is gone from its recorded place are dropped first, then the oldest, down
to three quarters of the bound; an object whose entry was dropped is described
as a pre-existing file from then on (its real name and content digest).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

#: Entries kept at most; see the module docstring for what eviction means.
MAX_CREATED = 1 << 16

#: The name shown for a creation-relative object (its real name is random);
#: the hashed part of such a path ends at the last ``/`` (spec §2.4.1 row 9b).
CREATED_NAME = "<created>"

Key = tuple[int, int]  # (st_dev, st_ino)


@dataclass(slots=True)
class Creation:
    """One created object. ``anchor`` is None until the object is first described."""

    owner: bytes
    anchor: str | None = None
    depth: int = 1
    is_dir: bool = False
    where: str = ""  # the path it has (task view), for renames and the directory index
    root: str = "/"  # the creating task's root (supervisor view), to probe ``where``


class Relative(NamedTuple):
    """How an object is described relative to a creation (a hashable cache-key part)."""

    anchor: str
    depth: int
    owner: bytes
    own: bool  # the object itself was created (not merely found under a created dir)

    @property
    def pathname(self) -> str:
        return self.anchor.rstrip("/") + "/" + CREATED_NAME


def split_parent(path: str) -> tuple[str, str]:
    """(directory, name) of a task-view absolute path; the root's directory is "/"."""
    i = path.rfind("/")
    if i <= 0:
        return "/", path[i + 1:]
    return path[:i], path[i + 1:]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _rebase(path: str, old: str, new: str) -> str:
    return new if path == old else new.rstrip("/") + path[len(old.rstrip("/")):]


class CreatedTable:
    """(dev, ino) -> :class:`Creation`, plus an index of created directories by path."""

    def __init__(self, limit: int = MAX_CREATED) -> None:
        self.limit = limit
        self._recs: dict[Key, Creation] = {}  # insertion order = creation order
        self._dirs: dict[str, Key] = {}
        self.evicted = 0
        # Bumped whenever a directory is indexed: objects below it are now described
        # relative to it (the native decision path drops what it recorded).
        self.dir_generation = 0
        # Told of every recorded creation (the native decision path forgets what it
        # recorded about an object whose inode number is now a new object's).
        self.on_add: Callable[[Key], None] | None = None

    def __len__(self) -> int:
        return len(self._recs)

    def __contains__(self, key: object) -> bool:
        return key in self._recs

    def __iter__(self) -> Iterator[Key]:
        return iter(self._recs)

    def get(self, key: Key) -> Creation | None:
        return self._recs.get(key)

    def __setitem__(self, key: Key, owner: bytes) -> None:
        """A created object whose place is learned when it is first described."""
        self.add(key, Creation(owner))

    def add(self, key: Key, rec: Creation) -> None:
        """Record a creation; a reused inode number replaces the old entry (and moves it
        to the young end, so eviction order is creation order)."""
        if self.on_add is not None:
            self.on_add(key)
        old = self._recs.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        if len(self._recs) >= self.limit:
            self._evict()
        self._recs[key] = rec
        self._index(key, rec)

    def place(self, key: Key, rec: Creation, anchor: str, depth: int, where: str,
              root: str) -> None:
        """Set (or change) where a recorded object lives."""
        self._unindex(key, rec)
        rec.anchor, rec.depth, rec.where, rec.root = anchor, depth, where, root
        self._index(key, rec)

    def forget(self, key: Key) -> None:
        rec = self._recs.pop(key, None)
        if rec is not None:
            self._unindex(key, rec)

    # ------------------------------------------------------------ directories
    def _index(self, key: Key, rec: Creation) -> None:
        if rec.is_dir and rec.where:
            self._dirs[rec.where] = key
            self.dir_generation += 1

    def _unindex(self, key: Key, rec: Creation) -> None:
        if rec.is_dir and self._dirs.get(rec.where) == key:
            del self._dirs[rec.where]

    def has_dirs(self) -> bool:
        return bool(self._dirs)

    def dir_paths(self) -> list[str]:
        """The names (task view) of the created directories indexed now."""
        return list(self._dirs)

    def dir_at(self, path: str) -> Key | None:
        """The key indexed for the created directory at ``path`` (unchecked)."""
        key = self._dirs.get(path)
        return key if key is not None and key in self._recs else None

    def dirs_above(self, path: str) -> Iterator[tuple[str, Key, Creation]]:
        """Created directories that are ancestors of ``path``, deepest first (unchecked:
        the caller confirms the path still names that directory)."""
        i = path.rfind("/")
        while i > 0:
            pre = path[:i]
            key = self._dirs.get(pre)
            if key is not None:
                rec = self._recs.get(key)
                if rec is not None:
                    yield pre, key, rec
            i = path.rfind("/", 0, i)

    def anchor_for_child(self, parent_key: Key | None, parent_path: str) -> tuple[str, int]:
        """(anchor, depth) of a new object directly in ``parent_path``."""
        rec = self._recs.get(parent_key) if parent_key is not None else None
        if rec is not None and rec.anchor is not None:
            return rec.anchor, rec.depth + 1
        return parent_path, 1

    def moved(self, old: str, new: str, key: Key, is_dir: bool, anchor: str,
              depth: int) -> None:
        """A rename moved the object ``key`` from task path ``old`` to ``new``, where its
        anchor and depth are ``anchor``/``depth``. Everything recorded under ``old``
        follows it (a directory carries its subtree)."""
        rec = self._recs.get(key)
        if not is_dir:
            # Not a directory: only its own entry (the common case, kept O(1)).
            if rec is not None:
                self.place(key, rec, anchor, depth, new, rec.root)
            return
        # Whatever was at ``new`` before was replaced: entries indexed there are dead.
        for p in [p for p in self._dirs if _under(p, new)]:
            del self._dirs[p]
        old_anchor, old_depth = (rec.anchor, rec.depth) if rec is not None else (None, 0)
        for k, r in self._recs.items():
            if not r.where or not _under(r.where, old):
                continue
            self._unindex(k, r)
            r.where = _rebase(r.where, old, new)
            if rec is not None and r.anchor == old_anchor:
                r.anchor, r.depth = anchor, r.depth - old_depth + depth
            elif r.anchor is not None and _under(r.anchor, old):
                r.anchor = _rebase(r.anchor, old, new)
            self._index(k, r)

    # --------------------------------------------------------------- eviction
    def _evict(self) -> None:
        """Make room: drop entries whose object is gone, then the oldest, to 3/4 full."""
        target = self.limit * 3 // 4
        for k in [k for k, r in self._recs.items() if not _alive(k, r)]:
            self.forget(k)
            self.evicted += 1
        while len(self._recs) > target:
            k = next(iter(self._recs))
            self.forget(k)
            self.evicted += 1


def _alive(key: Key, rec: Creation) -> bool:
    """Is the object still at its recorded place? (Not yet described: assume so.)"""
    if not rec.where:
        return True
    base = "" if rec.root == "/" else rec.root
    try:
        st = os.lstat(base + rec.where)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == key
