"""Executable memory: mmap_file events."""

from __future__ import annotations

import os

from semtrust.events import (
    FileDesc,
    MmapCell,
)
from semtrust.orchestrator.core import _NR, MAP_ANONYMOUS, O_CLOEXEC, Ctx, Unmodelable, _s32
from semtrust.orchestrator.objects import Describer


class MemoryHandlers(Describer):
    """Executable memory: mmap_file events."""

    # ------------------------------------------------------------------- mmap
    def _mmap(self, c: Ctx) -> None:
        a = c.n.args
        if c.n.nr == _NR["mmap"]:
            prot, mflags, fdn = a[2] & 0xFFFFFFFF, a[3] & 0xFFFFFFFF, _s32(a[4])
            file: FileDesc | None = None
            if not mflags & MAP_ANONYMOUS and fdn >= 0:
                file = self._fd_file(c, fdn)
        else:
            prot, mflags = a[2] & 0xFFFFFFFF, 0
            file = self._mapping_file(c, a[0])
        self.finish(c, [self.event(c, "mmap_file", MmapCell(prot, mflags, file))])

    def _fd_file(self, c: Ctx, fdn: int) -> FileDesc | None:
        try:
            fd = os.open(f"/proc/{c.tid}/fd/{fdn}", os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return None  # bad fd: the kernel fails the mmap with EBADF
        try:
            flags = os.O_RDONLY
            try:
                with open(f"/proc/{c.tid}/fdinfo/{fdn}", "rb") as fp:
                    for line in fp.read(4096).splitlines():
                        if line.startswith(b"flags:"):
                            flags = int(line.split()[1], 8)
            except (OSError, ValueError):
                pass
            try:
                return self._describe(c, fd, flags & ~O_CLOEXEC, readable=True)
            except PermissionError:
                raise Unmodelable("mapping of a file outside the domain") from None
        finally:
            os.close(fd)

    def _mapping_file(self, c: Ctx, addr: int) -> FileDesc | None:
        try:
            with open(f"/proc/{c.tid}/maps", "rb") as fp:
                data = fp.read(8 << 20)
        except OSError as exc:
            raise Unmodelable(f"/proc/{c.tid}/maps: {exc.strerror}") from None
        for line in data.splitlines():
            parts = line.split(None, 5)
            lo, _, hi = parts[0].partition(b"-")
            if int(lo, 16) <= addr < int(hi, 16):
                if len(parts) < 6 or not parts[5].startswith(b"/"):
                    return None
                try:
                    fd = os.open(f"/proc/{c.tid}/root" + os.fsdecode(parts[5]),
                                 os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    return None
                try:
                    return self._describe(c, fd, os.O_RDONLY, readable=True)
                finally:
                    os.close(fd)
        return None



#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "mmap": "_mmap", "mprotect": "_mmap",
}
