"""Describe the object behind a descriptor the orchestrator holds, as TSEM would."""

from __future__ import annotations

import errno
import os

from semtrust.events import (
    FileDesc,
)
from semtrust.orchestrator.core import MAX_DESC_CACHE, Ctx, Unmodelable, _kernel_flags
from semtrust.orchestrator.resolve import Resolver, _stable_path


class Describer(Resolver):
    """File descriptions (the FileDesc of a CELL) with a cache keyed by the file's state."""

    def _describe(self, c: Ctx, fd: int, flags: int, *, readable: bool,
                  st: os.stat_result | None = None) -> FileDesc:
        try:
            if st is None:
                st = os.fstat(fd)
            shown = self._display_path(c, fd)
            if shown.startswith("/proc/"):
                self._guard_proc(c, fd, st, shown)
            shown = _stable_path(c, shown)
            owner = self.created.get((st.st_dev, st.st_ino))
            kflags = _kernel_flags(flags)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                   st.st_mode, st.st_uid, st.st_gid, kflags, shown, owner)
            desc = self._desc.get(key)
            if desc is None:
                desc = self.fi.describe(fd, kflags, shown, st=st, owner=owner,
                                        hash_content=True)
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

