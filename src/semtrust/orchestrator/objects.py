"""Describe the object behind a descriptor the orchestrator holds, as TSEM would.

Objects the domain created, and everything under a directory it created, are
described relative to that creation (see :mod:`semtrust.orchestrator.created`):
their random names never reach a coefficient, and their content is left out
(the zero-length digest), so reading and writing them learns the same points in
every run. Code is the exception: when a created file is executed or mapped
executable, its content is measured, so a different program at the same place
is a different point.
"""

from __future__ import annotations

import errno
import os

from semtrust.events import (
    FileDesc,
)
from semtrust.orchestrator.core import MAX_DESC_CACHE, Ctx, Unmodelable, _kernel_flags
from semtrust.orchestrator.created import Key, Relative, split_parent
from semtrust.orchestrator.resolve import Resolver, _stable_path

PROT_EXEC = 0x4
#: Calls that run a file's content as code (always measured, created or not).
EXEC_CALLS = frozenset({"execve", "execveat", "uselib"})
#: Calls that make a file's content executable memory when PROT_EXEC (argument 2) is set.
MAP_CALLS = frozenset({"mmap", "mprotect", "pkey_mprotect"})
#: What the kernel appends to the name of an unlinked file.
DELETED = " (deleted)"


def makes_code(c: Ctx) -> bool:
    """Is the call being decided one that turns a file into running code?"""
    name = c.n.name
    return name in EXEC_CALLS or (name in MAP_CALLS and bool(c.n.args[2] & PROT_EXEC))


class Describer(Resolver):
    """File descriptions (the FileDesc of a CELL) with a cache keyed by the file's state."""

    def _describe(self, c: Ctx, fd: int, flags: int, *, readable: bool,
                  st: os.stat_result | None = None) -> FileDesc:
        self.last_plain = False
        try:
            if st is None:
                st = os.fstat(fd)
            shown = self._display_path(c, fd, st)
            if shown.startswith("/proc/"):
                self._guard_proc(c, fd, st, shown)
            shown = _stable_path(c, shown)
            rel = self._relative(c, (st.st_dev, st.st_ino), shown)
            # Content of created objects is left out, except when it becomes code; an
            # object merely found under a created directory keeps its content digest.
            measure = rel is not None and (not rel.own or makes_code(c))
            self.last_plain = rel is None and not shown.startswith("/proc/")
            self.last_st = st
            kflags = _kernel_flags(flags)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                   st.st_mode, st.st_uid, st.st_gid, kflags, shown, rel, measure)
            # A file the domain may be changing through a mapping is described afresh.
            volatile = self.fi.is_volatile(st.st_dev, st.st_ino)
            desc = None if volatile else self._desc.get(key)
            if desc is None:
                if rel is None:
                    desc = self.fi.describe(fd, kflags, shown, st=st, hash_content=True)
                else:
                    desc = self.fi.describe(fd, kflags, rel.pathname, st=st, owner=rel.owner,
                                            instance=rel.depth, measure_created=measure)
                if volatile:
                    return desc
                if len(self._desc) >= MAX_DESC_CACHE:
                    self._desc.clear()
                self._desc[key] = desc
            return desc
        except PermissionError:
            raise
        except OSError as exc:
            if not readable and exc.errno in (errno.EACCES, errno.EPERM):
                raise Unmodelable(f"cannot hash file: {exc.strerror}") from None
            raise Unmodelable(f"cannot describe file: {exc.strerror}") from None

    # -------------------------------------------------------------- creations
    def _relative(self, c: Ctx, key: Key, shown: str) -> Relative | None:
        """The creation an object is described against, or None (a pre-existing object)."""
        tab = self.created
        rec = tab.get(key)
        if rec is not None and rec.where and shown != rec.where \
                and not shown.endswith(DELETED):
            # Reached under another name: a link, or the recorded object is gone and its
            # inode number was reused by a new one. Only the former keeps the record.
            if rec.where.endswith(DELETED) and not rec.is_dir:
                rec.anchor, rec.where = None, ""  # placed below, where it now has a name
            elif not self._names(c, rec.where, key):
                tab.forget(key)
                rec = None
        if rec is not None:
            if rec.anchor is None:
                # Created by an open: its place is learned from its first description.
                parent, _ = split_parent(shown)
                anchor, depth = tab.anchor_for_child(self._created_dir(c, parent), parent)
                tab.place(key, rec, anchor, depth, shown, c.proc.root)
            assert rec.anchor is not None
            return Relative(rec.anchor, rec.depth, rec.owner, True)
        if not tab.has_dirs():
            return None
        for pre, dkey, drec in tab.dirs_above(shown):
            if drec.anchor is not None and self._names(c, pre, dkey):
                depth = drec.depth + shown.count("/", len(pre))
                return Relative(drec.anchor, depth, drec.owner, False)
        return None

    def _created_dir(self, c: Ctx, path: str) -> Key | None:
        """The table key of the created directory at task path ``path``, if it is one."""
        dkey = self.created.dir_at(path)
        return dkey if dkey is not None and self._names(c, path, dkey) else None

    def _names(self, c: Ctx, path: str, key: Key) -> bool:
        """Does ``path`` (task view) still name the object ``key``?"""
        base = "" if c.proc.root == "/" else f"/proc/{c.tid}/root"
        try:
            st = os.lstat(base + path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == key
