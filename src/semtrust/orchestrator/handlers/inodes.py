"""Inode operations: unlink, rmdir, link, symlink, mknod, setattr and xattr events.

TSEM gives these events generic CELLs; the body names the object as the file
events do (its path as the task sees it, or, for an object the domain created or
one under a directory it created, relative to that creation: anchor, depth and
creator) with the owner, mode and filesystem, plus the arguments that say what
changes. A new name is described by its directory and the name (no name inside a
created directory). Paths are resolved in the task (its root, cwd and dirfd); when the
object does not exist the kernel fails the call, and there is no event.
"""

from __future__ import annotations

import errno
import os
import posixpath

from semtrust.orchestrator.core import AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, Ctx, _s32
from semtrust.orchestrator.created import CREATED_NAME
from semtrust.orchestrator.emulate import AT_FDCWD
from semtrust.orchestrator.objects import Describer
from semtrust.orchestrator.resolve import _stable_path

AT_REMOVEDIR = 0x200
AT_SYMLINK_FOLLOW = 0x400
XATTR_NAME_MAX = 255

#: name -> (event, dirfd arg or None, path arg or None (fd arg if no dirfd: the fd's
#: object), follows symlinks, integer args recorded, flags arg or None)
_SPEC: dict[str, tuple[str, int | None, int | None, bool, tuple[tuple[str, int], ...],
                       int | None]] = {
    "unlink": ("inode_unlink", None, 0, False, (), None),
    "rmdir": ("inode_rmdir", None, 0, False, (), None),
    "unlinkat": ("inode_unlink", 0, 1, False, (), None),
    "chmod": ("inode_setattr", None, 0, True, (("mode", 1),), None),
    "fchmod": ("inode_setattr", 0, None, True, (("mode", 1),), None),
    "fchmodat": ("inode_setattr", 0, 1, True, (("mode", 2),), None),
    "fchmodat2": ("inode_setattr", 0, 1, True, (("mode", 2),), 3),
    "chown": ("inode_setattr", None, 0, True, (("uid", 1), ("gid", 2)), None),
    "lchown": ("inode_setattr", None, 0, False, (("uid", 1), ("gid", 2)), None),
    "fchown": ("inode_setattr", 0, None, True, (("uid", 1), ("gid", 2)), None),
    "fchownat": ("inode_setattr", 0, 1, True, (("uid", 2), ("gid", 3)), 4),
    "truncate": ("inode_setattr", None, 0, True, (), None),
    "utime": ("inode_setattr", None, 0, True, (), None),
    "utimes": ("inode_setattr", None, 0, True, (), None),
    "futimesat": ("inode_setattr", 0, 1, True, (), None),
    "utimensat": ("inode_setattr", 0, 1, True, (), 3),
    "file_setattr": ("inode_setattr", 0, 1, True, (), 4),
    "setxattr": ("inode_setxattr", None, 0, True, (("flags", 4),), None),
    "lsetxattr": ("inode_setxattr", None, 0, False, (("flags", 4),), None),
    "fsetxattr": ("inode_setxattr", 0, None, True, (("flags", 4),), None),
    "setxattrat": ("inode_setxattr", 0, 1, True, (), 2),
    "removexattr": ("inode_removexattr", None, 0, True, (), None),
    "lremovexattr": ("inode_removexattr", None, 0, False, (), None),
    "fremovexattr": ("inode_removexattr", 0, None, True, (), None),
    "removexattrat": ("inode_removexattr", 0, 1, True, (), 2),
}
#: the xattr name argument of the xattr calls
_XATTR_NAME = {"setxattr": 1, "lsetxattr": 1, "fsetxattr": 1, "setxattrat": 3,
               "removexattr": 1, "lremovexattr": 1, "fremovexattr": 1, "removexattrat": 3}


class InodeHandlers(Describer):
    """Inode operations as generic-CELL events."""

    def _object_body(self, c: Ctx, fd: int) -> dict[str, object]:
        st = os.fstat(fd)
        shown = self._display_path(c, fd)
        if shown.startswith("/proc/"):
            self._guard_proc(c, fd, st, shown)
        shown = _stable_path(c, shown)
        body: dict[str, object] = {
            "uid": st.st_uid, "gid": st.st_gid, "mode": st.st_mode & 0xFFFF,
            "s_magic": self.fi.fs_info(fd, st.st_dev).magic,
        }
        rel = self._relative(c, (st.st_dev, st.st_ino), shown)
        if rel is not None:  # random temporary names stay out of the coefficient
            body["path"] = rel.pathname
            body["owner"] = rel.owner.hex()
            body["depth"] = rel.depth
        else:
            body["path"] = shown
        return body

    def _resolve(self, c: Ctx, dirfd: int, path: bytes, follow: bool) -> int | None:
        """An O_PATH fd of the object as the task names it; None after failing the call
        with the error resolution met (the kernel's own, or our refusal of a procfs entry
        outside the domain: never let through for the kernel to act on)."""
        flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        try:
            return self._open_in_task(c, dirfd, path, flags, 0, 0)
        except OSError as exc:
            self.lst.deny(c.n.id, exc.errno or errno.ENOENT)
            return None

    def _with_object(self, c: Ctx, etype: str, dirfd: int, path: bytes, follow: bool,
                     body: dict[str, object]) -> None:
        fd = self._resolve(c, dirfd, path, follow)
        if fd is None:
            return
        try:
            try:
                body.update(self._object_body(c, fd))
            except PermissionError as exc:
                self.lst.deny(c.n.id, exc.errno or errno.EACCES)
                return
        finally:
            os.close(fd)
        self.check_valid(c)
        self._generic(c, etype, body)

    def _new_name(self, c: Ctx, dirfd: int, path: bytes) -> dict[str, object] | None:
        """The directory a new name goes into, and the name; None: the call was failed."""
        head, base = posixpath.split(path.rstrip(b"/") or path)
        fd = self._resolve(c, dirfd, head or b".", True)
        if fd is None:
            return None
        try:
            body = self._object_body(c, fd)
        finally:
            os.close(fd)
        # In a directory the domain created, names are as random as the directory's.
        name = CREATED_NAME if "owner" in body else os.fsdecode(base)
        return {"dir": body, "name": name}

    def _link_target(self, c: Ctx, target: bytes) -> str:
        """A symbolic link's target; one into a directory the domain created is named
        relative to that creation, like every object there."""
        t = os.fsdecode(target)
        if t.startswith("/") and self.created.has_dirs():
            for pre, dkey, drec in self.created.dirs_above(t):
                if drec.anchor is not None and self._names(c, pre, dkey):
                    depth = drec.depth + t.count("/", len(pre))
                    return f"{drec.anchor.rstrip('/')}/{CREATED_NAME}@{depth}"
        return t

    # ---------------------------------------------------------------- handlers
    def _inode(self, c: Ctx) -> None:
        name = c.n.name
        a = c.n.args
        etype, dfd_i, path_i, follow, ints, flags_i = _SPEC[name]
        flags = _s32(a[flags_i]) if flags_i is not None else 0
        dirfd = _s32(a[dfd_i]) if dfd_i is not None else AT_FDCWD
        if name == "unlinkat" and _s32(a[2]) & AT_REMOVEDIR:
            etype = "inode_rmdir"
        if flags & AT_SYMLINK_NOFOLLOW:
            follow = False
        if path_i is None:
            path = b""
        else:
            got = b"" if (name == "utimensat" and a[1] == 0) else self.read_path(c, a[path_i])
            if got is None:
                return
            path = got
            if not path and not flags & AT_EMPTY_PATH and name != "utimensat":
                self.lst.deny(c.n.id, errno.ENOENT)
                return
        body: dict[str, object] = {"syscall": name}
        for key, i in ints:
            body[key] = a[i] & 0xFFFFFFFF
        xi = _XATTR_NAME.get(name)
        if xi is not None:
            try:
                body["xattr"] = os.fsdecode(self.read_str(c, a[xi])[:XATTR_NAME_MAX + 1])
            except OSError as exc:
                self.lst.deny(c.n.id, exc.errno or errno.EFAULT)
                return
        self._with_object(c, etype, dirfd, path, follow, body)

    def _link(self, c: Ctx) -> None:
        a = c.n.args
        if c.n.name == "link":
            odfd, opath, ndfd, npath, follow = AT_FDCWD, a[0], AT_FDCWD, a[1], False
        else:
            flags = _s32(a[4])
            odfd, opath, ndfd, npath = _s32(a[0]), a[1], _s32(a[2]), a[3]
            follow = bool(flags & AT_SYMLINK_FOLLOW)
        old = self.read_path(c, opath)
        new = None if old is None else self.read_path(c, npath)
        if old is None or new is None:
            return
        target = self._new_name(c, ndfd, new)
        if target is None:
            return
        fd = self._resolve(c, odfd, old, follow)
        if fd is None:
            return
        try:
            try:
                body: dict[str, object] = {"syscall": c.n.name,
                                           "old": self._object_body(c, fd), "new": target}
            except PermissionError as exc:
                self.lst.deny(c.n.id, exc.errno or errno.EACCES)
                return
        finally:
            os.close(fd)
        self.check_valid(c)
        self._generic(c, "inode_link", body)

    def _symlink(self, c: Ctx) -> None:
        a = c.n.args
        if c.n.name == "symlink":
            taddr, dfd, paddr = a[0], AT_FDCWD, a[1]
        else:
            taddr, dfd, paddr = a[0], _s32(a[1]), a[2]
        target = self.read_path(c, taddr)
        path = None if target is None else self.read_path(c, paddr)
        if target is None or path is None:
            return
        where = self._new_name(c, dfd, path)
        if where is None:
            return
        self.check_valid(c)
        body: dict[str, object] = {"syscall": c.n.name,
                                   "target": self._link_target(c, target), **where}
        self._generic(c, "inode_symlink", body)

    def _mknod(self, c: Ctx) -> None:
        a = c.n.args
        if c.n.name == "mknod":
            dfd, paddr, mode, dev = AT_FDCWD, a[0], a[1], a[2]
        else:
            dfd, paddr, mode, dev = _s32(a[0]), a[1], a[2], a[3]
        path = self.read_path(c, paddr)
        if path is None:
            return
        where = self._new_name(c, dfd, path)
        if where is None:
            return
        self.check_valid(c)
        self._generic(c, "inode_mknod", {"syscall": c.n.name, "mode": mode & 0xFFFFFFFF,
                                         "dev": dev & 0xFFFFFFFF, **where})


#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    **{name: "_inode" for name in _SPEC},
    "link": "_link", "linkat": "_link", "symlink": "_symlink", "symlinkat": "_symlink",
    "mknod": "_mknod", "mknodat": "_mknod",
}
