"""Namespaces and mounts: sb_mount, sb_umount, sb_remount, sb_pivotroot, move_mount.

Mounting (a second procfs, a bind mount over a checked file, a detached tree
from the new mount API) changes what every later path names, so each call is an
event; ``open_tree`` without ``OPEN_TREE_CLONE`` only opens an ``O_PATH``
descriptor and is modeled as the ``file_open`` an ``openat(O_PATH)`` would be.
chroot, unshare and setns are the capability checks TSEM sees for them.
"""

from __future__ import annotations

import errno
import os

from semtrust.orchestrator.core import AT_SYMLINK_NOFOLLOW, O_PATH, Ctx, _s32
from semtrust.orchestrator.emulate import AT_FDCWD
from semtrust.orchestrator.handlers.files import FileHandlers
from semtrust.orchestrator.resolve import _stable_path

MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
OPEN_TREE_CLONE = 1
CAP_SYS_CHROOT = 18
CAP_SYS_ADMIN = 21
FSTYPE_MAX = 256


class MountHandlers(FileHandlers):
    """Mount-family calls as generic-CELL events."""

    def _opt_str(self, c: Ctx, addr: int, limit: int = FSTYPE_MAX) -> str:
        if addr == 0:
            return ""
        return os.fsdecode(self.read_str(c, addr)[:limit])

    def _where(self, c: Ctx, dirfd: int, path: bytes) -> str:
        """The path as the task sees it, resolved in the task; else the text given."""
        try:
            fd = self._open_in_task(c, dirfd, path, os.O_PATH | os.O_CLOEXEC, 0, 0)
        except OSError:
            return os.fsdecode(path)
        try:
            return _stable_path(c, self._display_path(c, fd))
        except PermissionError:
            return os.fsdecode(path)
        finally:
            os.close(fd)

    def _ns_changed(self, c: Ctx) -> None:
        # Mounts, root or credentials may change for the whole process: re-read them at
        # its next call.
        self.d.tasks.invalidate_threads(c.proc.tgid)

    def _mount(self, c: Ctx) -> None:
        a = c.n.args
        try:
            source = self._opt_str(c, a[0], 4096)
            target = self.read_str(c, a[1])
            fstype = self._opt_str(c, a[2])
        except OSError as exc:
            self.lst.deny(c.n.id, exc.errno or errno.EFAULT)
            return
        flags = a[3] & 0xFFFFFFFF
        etype = "sb_remount" if flags & MS_REMOUNT else \
            "move_mount" if flags & MS_MOVE else "sb_mount"
        if flags & (MS_BIND | MS_MOVE) and source:
            source = self._where(c, AT_FDCWD, os.fsencode(source))
        body: dict[str, object] = {"syscall": "mount", "source": source, "fstype": fstype,
                                   "flags": flags, "target": self._where(c, AT_FDCWD, target)}
        self.check_valid(c)
        self._ns_changed(c)
        self._generic(c, etype, body)

    def _umount(self, c: Ctx) -> None:
        path = self.read_path(c, c.n.args[0])
        if path is None:
            return
        body: dict[str, object] = {"syscall": "umount2", "flags": c.n.args[1] & 0xFFFFFFFF,
                "target": self._where(c, AT_FDCWD, path)}
        self._ns_changed(c)
        self._generic(c, "sb_umount", body)

    def _pivot_root(self, c: Ctx) -> None:
        new = self.read_path(c, c.n.args[0])
        old = None if new is None else self.read_path(c, c.n.args[1])
        if new is None or old is None:
            return
        body: dict[str, object] = {"syscall": "pivot_root",
                                   "new_root": self._where(c, AT_FDCWD, new),
                                   "put_old": self._where(c, AT_FDCWD, old)}
        self._ns_changed(c)
        self._generic(c, "sb_pivotroot", body)

    def _open_tree(self, c: Ctx) -> None:
        a = c.n.args
        dirfd, flags = _s32(a[0]), a[2] & 0xFFFFFFFF
        path = self.read_path(c, a[1])
        if path is None:
            return
        if c.n.name == "open_tree" and not flags & OPEN_TREE_CLONE:
            # An O_PATH descriptor of the object, exactly what openat(O_PATH) gives.
            oflags = O_PATH | (os.O_NOFOLLOW if flags & AT_SYMLINK_NOFOLLOW else 0)
            path = self._target_path(c, path)
            if (path.startswith(b"/proc") or not path.startswith(b"/")) and \
                    not self._guard_request(c, dirfd, path):
                self.lst.deny(c.n.id, errno.EACCES)
                return
            self.check_valid(c)
            self._open_observed(c, dirfd, path, oflags, 0)
            return
        body: dict[str, object] = {"syscall": c.n.name, "flags": flags,
                                   "path": self._where(c, dirfd, path)}
        self._ns_changed(c)
        self._generic(c, "sb_mount", body)

    def _new_mount_api(self, c: Ctx) -> None:
        """fsopen/fsconfig/fsmount/fspick/move_mount/mount_setattr."""
        a = c.n.args
        name = c.n.name
        body: dict[str, object] = {"syscall": name}
        try:
            if name == "fsopen":
                etype = "sb_mount"
                body["fstype"] = self._opt_str(c, a[0])
            elif name == "fsconfig":
                etype = "sb_mount"
                body["cmd"] = a[1] & 0xFFFFFFFF
                body["key"] = self._opt_str(c, a[2])
            elif name == "fsmount":
                etype = "sb_mount"
                body["flags"] = a[1] & 0xFFFFFFFF
                body["attr"] = a[2] & 0xFFFFFFFF
            elif name == "move_mount":
                etype = "move_mount"
                body["flags"] = a[4] & 0xFFFFFFFF
                body["to"] = self._where(c, _s32(a[2]), self.read_str(c, a[3])) \
                    if a[3] else ""
            else:  # fspick, mount_setattr
                etype = "sb_remount"
                body["flags"] = a[2] & 0xFFFFFFFF
                body["path"] = self._where(c, _s32(a[0]), self.read_str(c, a[1])) \
                    if a[1] else ""
        except OSError as exc:
            self.lst.deny(c.n.id, exc.errno or errno.EFAULT)
            return
        self._ns_changed(c)
        self._generic(c, etype, body)

    def _chroot(self, c: Ctx) -> None:
        path = self.read_path(c, c.n.args[0])
        if path is None:
            return
        body: dict[str, object] = {"syscall": "chroot", "cap": CAP_SYS_CHROOT,
                "path": self._where(c, AT_FDCWD, path)}
        self._ns_changed(c)
        self._generic(c, "capable", body)

    def _nsop(self, c: Ctx) -> None:
        """unshare/setns: namespaces (CLONE_* flags or the nstype)."""
        self._ns_changed(c)
        self._generic(c, "capable", {"syscall": c.n.name, "cap": CAP_SYS_ADMIN,
                                     "flags": c.n.args[0 if c.n.name == "unshare" else 1]
                                     & 0xFFFFFFFF})


#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "mount": "_mount", "umount2": "_umount", "pivot_root": "_pivot_root",
    "open_tree": "_open_tree", "open_tree_attr": "_open_tree", "fsopen": "_new_mount_api",
    "fsconfig": "_new_mount_api", "fsmount": "_new_mount_api", "fspick": "_new_mount_api",
    "move_mount": "_new_mount_api", "mount_setattr": "_new_mount_api", "chroot": "_chroot",
    "unshare": "_nsop", "setns": "_nsop",
}
