"""Making and moving names: inode_mkdir and inode_rename events.

Both calls are emulated: the orchestrator makes the directory (or renames) as
the task -- its root, cwd or dirfd, credentials and umask -- after the event is
modeled, and answers with the result. Emulating makes the object recorded in
the created-objects table exactly the object the call made, and lets a rename
carry its record along (see :mod:`semtrust.orchestrator.created`).

Event bodies name no random component: a new directory is described by its
nearest pre-existing ancestor and its depth below it; a renamed object by its
description before and after the move. (Both are generic TSEM events; their
body is kept for people and never hashed, spec §2.4.7.)
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from semtrust.events import GenericCell
from semtrust.events.generic import generic_body
from semtrust.orchestrator.core import _NOOP, O_CLOEXEC, O_DIRECTORY, Ctx, Unmodelable, _s32
from semtrust.orchestrator.created import CREATED_NAME, Creation, Relative
from semtrust.orchestrator.emulate import AT_FDCWD, RESOLVE_NO_MAGICLINKS
from semtrust.orchestrator.objects import Describer
from semtrust.orchestrator.resolve import _stable_path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

NR_RENAMEAT2 = 316
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4
ACL_DEFAULT = "system.posix_acl_default"


def _renameat2(ofd: int, old: bytes, nfd: int, new: bytes, flags: int) -> None:
    rc = _libc.syscall(ctypes.c_long(NR_RENAMEAT2), ctypes.c_int(ofd), ctypes.c_char_p(old),
                       ctypes.c_int(nfd), ctypes.c_char_p(new), ctypes.c_uint(flags))
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _join(parent: str, name: bytes) -> str:
    return parent.rstrip("/") + "/" + os.fsdecode(name.rstrip(b"/"))


def _umask_now(c: Ctx) -> int:
    """The task's umask as it is now (the cached status may predate a umask() call)."""
    try:
        with open(f"/proc/{c.tid}/status", "rb") as fp:
            for line in fp.read(4096).splitlines():
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return c.st.umask


class _Parent:
    """The directory a path's last component lives in, opened O_PATH in the task's view."""

    __slots__ = ("fd", "key", "name", "shown")

    def __init__(self, fd: int, name: bytes) -> None:
        self.fd, self.name = fd, name
        self.shown: str | None = None  # filled in when needed (see CreateHandlers._place)
        self.key = (0, 0)

    def child(self) -> os.stat_result | None:
        try:
            return os.stat(self.name.rstrip(b"/") or b".", dir_fd=self.fd,
                           follow_symlinks=False)
        except OSError:
            return None


class CreateHandlers(Describer):
    """mkdir, mkdirat (inode_mkdir) and rename, renameat, renameat2 (inode_rename)."""

    # ---------------------------------------------------------------- helpers
    def _parent(self, c: Ctx, dirfd: int, path: bytes, empty: int) -> _Parent | None:
        """Open the parent of ``path``; None after failing the call as the kernel would
        (``empty`` is the errno for a path that names the root itself)."""
        if not path:
            self.lst.deny(c.n.id, errno.ENOENT)
            return None
        stripped = path.rstrip(b"/")
        if not stripped:
            self.lst.deny(c.n.id, empty)
            return None
        i = stripped.rfind(b"/")
        parent = stripped[:i + 1] if i >= 0 else b"."
        name = path[i + 1:]
        try:
            fd = self._open_in_task(c, dirfd, parent, os.O_PATH | O_CLOEXEC | O_DIRECTORY,
                                    0, RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Unmodelable(f"{c.n.name}: path through a magic link or loop") from None
            self.lst.deny(c.n.id, exc.errno or errno.ENOENT)
            return None
        return _Parent(fd, name)

    def _place(self, c: Ctx, parent: _Parent) -> str:
        """The parent's path as the task names it (stable form); sets its key too."""
        if parent.shown is None:
            st = os.fstat(parent.fd)
            parent.key = (st.st_dev, st.st_ino)
            parent.shown = _stable_path(c, self._display_path(c, parent.fd))
        return parent.shown

    def _inside(self, c: Ctx, parent: _Parent) -> tuple[str, int]:
        """(anchor, depth) of a new name directly in ``parent``."""
        shown = self._place(c, parent)
        rel = self._relative(c, parent.key, shown)
        if rel is None:
            return shown, 1
        return rel.anchor, rel.depth + 1

    def _object_text(self, c: Ctx, parent: _Parent, st: os.stat_result) -> dict[str, object]:
        """An existing object in ``parent``, named as its file description would name it."""
        where = _join(self._place(c, parent), parent.name)
        rel: Relative | None = self._relative(c, (st.st_dev, st.st_ino), where)
        if rel is None:
            return {"pathname": where, "mode": f"0{st.st_mode:o}"}
        return {"pathname": rel.pathname, "instance": rel.depth, "mode": f"0{st.st_mode:o}",
                "owner": rel.owner.hex()}

    # ------------------------------------------------------------------ mkdir
    def _mkdir(self, c: Ctx) -> None:
        a = c.n.args
        if c.n.name == "mkdir":
            dirfd, paddr, mode = AT_FDCWD, a[0], a[1] & 0o7777
        else:
            dirfd, paddr, mode = _s32(a[0]), a[1], a[2] & 0o7777
        path = self.read_path(c, paddr)
        if path is None:
            return
        self.check_valid(c)
        par = self._parent(c, dirfd, path, errno.EEXIST)
        if par is None:
            return
        try:
            if par.child() is not None:
                self.lst.deny(c.n.id, errno.EEXIST)  # no event: the kernel stops before it
                return
            anchor, depth = self._inside(c, par)
            body: dict[str, object] = {"dir": {"pathname": anchor.rstrip("/") + "/" + CREATED_NAME,
                            "instance": depth}, "mode": f"0{mode:o}"}
            if self._decide_generic(c, "inode_mkdir", body):
                self.lst.deny(c.n.id, errno.EPERM)
                return
            if not self._has_default_acl(par.fd):
                mode &= ~_umask_now(c)
            try:
                with self.creds.as_task(c.st) if self.creds.needed(c.st) else _NOOP:
                    os.mkdir(par.name, mode, dir_fd=par.fd)
            except OSError as exc:
                self.lst.deny(c.n.id, exc.errno or errno.EACCES)
                return
            st = par.child()
            if st is not None and stat.S_ISDIR(st.st_mode):
                self.created.add((st.st_dev, st.st_ino), Creation(
                    c.proc.task_id, anchor, depth, True, _join(self._place(c, par), par.name),
                    c.proc.root))
            self.lst.reply(c.n.id, 0)
        finally:
            os.close(par.fd)

    @staticmethod
    def _has_default_acl(fd: int) -> bool:
        """With a default ACL the kernel ignores the umask for new entries."""
        try:
            os.getxattr(f"/proc/self/fd/{fd}", ACL_DEFAULT)
        except OSError:
            return False
        return True

    # ----------------------------------------------------------------- rename
    def _rename(self, c: Ctx) -> None:
        a = c.n.args
        name = c.n.name
        if name == "rename":
            odir, oaddr, ndir, naddr, flags = AT_FDCWD, a[0], AT_FDCWD, a[1], 0
        else:
            odir, oaddr, ndir, naddr = _s32(a[0]), a[1], _s32(a[2]), a[3]
            flags = a[4] & 0xFFFFFFFF if name == "renameat2" else 0
        old = self.read_path(c, oaddr)
        if old is None:
            return
        new = self.read_path(c, naddr)
        if new is None:
            return
        self.check_valid(c)
        op = self._parent(c, odir, old, errno.EBUSY)
        if op is None:
            return
        try:
            np = self._parent(c, ndir, new, errno.EBUSY)
            if np is None:
                return
            try:
                self._rename_in(c, op, np, flags)
            finally:
                os.close(np.fd)
        finally:
            os.close(op.fd)

    def _rename_in(self, c: Ctx, op: _Parent, np: _Parent, flags: int) -> None:
        ost = op.child()
        if ost is None:
            self.lst.deny(c.n.id, errno.ENOENT)  # no event: the kernel stops before it
            return
        nst = np.child()
        okey = (ost.st_dev, ost.st_ino)
        own = okey in self.created
        anchor, depth = self._inside(c, np)
        if own:
            target: dict[str, object] = {"pathname": anchor.rstrip("/") + "/" + CREATED_NAME,
                                         "instance": depth}
        else:
            target = {"pathname": _join(self._place(c, np), np.name)}
        body: dict[str, object] = {"old": self._object_text(c, op, ost), "new": target}
        if nst is not None:
            body["replaced"] = self._object_text(c, np, nst)
        if flags:
            body["flags"] = flags
        if self._decide_generic(c, "inode_rename", body):
            self.lst.deny(c.n.id, errno.EPERM)
            return
        try:
            with self.creds.as_task(c.st) if self.creds.needed(c.st) else _NOOP:
                _renameat2(op.fd, op.name, np.fd, np.name, flags)
        except OSError as exc:
            self.lst.deny(c.n.id, exc.errno or errno.EACCES)
            return
        owhere, nwhere = _join(self._place(c, op), op.name), _join(self._place(c, np), np.name)
        tab = self.created
        if flags & RENAME_EXCHANGE and nst is not None:
            # Both objects moved: park one subtree under a name no path can have.
            nkey = (nst.st_dev, nst.st_ino)
            oanchor, odepth = self._inside(c, op)
            park = "\0exchange"
            tab.moved(owhere, park, okey, stat.S_ISDIR(ost.st_mode), anchor, depth)
            tab.moved(nwhere, owhere, nkey, stat.S_ISDIR(nst.st_mode), oanchor, odepth)
            tab.moved(park, nwhere, okey, stat.S_ISDIR(ost.st_mode), anchor, depth)
        else:
            tab.moved(owhere, nwhere, okey, stat.S_ISDIR(ost.st_mode), anchor, depth)
        self.lst.reply(c.n.id, 0)

    def _decide_generic(self, c: Ctx, etype: str, body: dict[str, object]) -> bool:
        """Model one generic event; True if it must be denied."""
        ev = self.event(c, etype, GenericCell(generic_body(dict(sorted(body.items())))))
        return self.decide(c, [ev])


#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "mkdir": "_mkdir", "mkdirat": "_mkdir",
    "rename": "_rename", "renameat": "_rename", "renameat2": "_rename",
}
