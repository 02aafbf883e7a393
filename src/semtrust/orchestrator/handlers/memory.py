"""Executable memory: mmap_file events, and the ways around PROT_EXEC closed.

Every mapping an ``mprotect`` range covers is described (one event each). An
executable file mapping is checked on the descriptor the task passed; another
thread can swap that descriptor before the kernel maps it, so the next mediated
call of the process first checks ``/proc/PID/maps``: every executable file mapping
must be of a file that was checked (or was mapped by the kernel at exec).
"""

from __future__ import annotations

import contextlib
import errno
import os

from semtrust.events import (
    FileDesc,
    MmapCell,
)
from semtrust.orchestrator.core import (
    _NR,
    MAP_ANONYMOUS,
    O_CLOEXEC,
    Ctx,
    Pending,
    Unmodelable,
    _s32,
)
from semtrust.orchestrator.objects import Describer
from semtrust.orchestrator.syscalls import READ_IMPLIES_EXEC

PAGE = 4096
MAX_MAPS_BYTES = 8 << 20
MAX_KNOWN_FILES = 4096
PERSONALITY_QUERY = 0xFFFFFFFF

#: (start, end, perms, dev, ino, path) of one line of /proc/PID/maps.
Mapping = tuple[int, int, bytes, tuple[int, int], bytes]


def read_maps(tid: int) -> list[Mapping]:
    """The task's mappings; Unmodelable if they cannot be read."""
    try:
        with open(f"/proc/{tid}/maps", "rb") as fp:
            data = fp.read(MAX_MAPS_BYTES)
    except OSError as exc:
        raise Unmodelable(f"/proc/{tid}/maps: {exc.strerror}") from None
    out: list[Mapping] = []
    for line in data.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, _, hi = parts[0].partition(b"-")
        maj, _, mnr = parts[3].partition(b":")
        dev = (os.makedev(int(maj, 16), int(mnr, 16)), int(parts[4]))
        out.append((int(lo, 16), int(hi, 16), parts[1], dev,
                    parts[5] if len(parts) > 5 else b""))
    return out


def _exec_files(maps: list[Mapping]) -> set[tuple[int, int]]:
    # System V segments cannot be reached through a descriptor (shmat is mediated).
    return {m[3] for m in maps if b"x" in m[2] and m[3][1] != 0
            and not m[4].startswith(b"/SYSV")}


class MemoryHandlers(Describer):
    """Executable memory: mmap_file events."""

    # ------------------------------------------------------------------- mmap
    def _mmap(self, c: Ctx) -> None:
        a = c.n.args
        if c.n.nr != _NR["mmap"]:
            self._mprotect(c)
            return
        prot, mflags, fdn = a[2] & 0xFFFFFFFF, a[3] & 0xFFFFFFFF, _s32(a[4])
        file: FileDesc | None = None
        ident: tuple[int, int] | None = None
        if not mflags & MAP_ANONYMOUS and fdn >= 0:
            got = self._fd_file(c, fdn)
            if got is not None:
                file, ident = got
        ev = self.event(c, "mmap_file", MmapCell(prot, mflags, file))
        if ident is not None:
            self._expect_mapping(c, [ident])
        self.finish(c, [ev])

    def _mprotect(self, c: Ctx) -> None:
        """mprotect/pkey_mprotect: one event per mapping of the range."""
        a = c.n.args
        prot = a[2] & 0xFFFFFFFF
        start = a[0]
        end = start + ((a[1] + PAGE - 1) & ~(PAGE - 1))
        events: list[Pending] = []
        idents: list[tuple[int, int]] = []
        for lo, hi, _perms, ident, path in read_maps(c.tid):
            if hi <= start or lo >= end:
                continue
            file: FileDesc | None = None
            if ident[1] != 0 and not path.startswith(b"/SYSV"):
                file = self._map_file(c, lo, hi)
                idents.append(ident)
            events.append(self.event(c, "mmap_file", MmapCell(prot, 0, file)))
        if not events:
            self.lst.allow(c.n.id)  # nothing mapped there: the kernel fails it (ENOMEM)
            return
        if idents:
            self._expect_mapping(c, idents)
        self.finish(c, events)

    def _personality(self, c: Ctx) -> None:
        persona = c.n.args[0] & 0xFFFFFFFF
        if persona == PERSONALITY_QUERY or not persona & READ_IMPLIES_EXEC:
            self.lst.allow(c.n.id)
            return
        # Every later PROT_READ mapping would be executable without the PROT_EXEC the
        # filter looks for: no model can describe that, so it is refused.
        raise Unmodelable("personality READ_IMPLIES_EXEC: mappings would turn executable "
                          "without PROT_EXEC")

    def _shmat(self, c: Ctx) -> None:
        self._generic(c, "shm_shmat", {"syscall": "shmat",
                                       "shmflg": c.n.args[2] & 0xFFFFFFFF})

    # --------------------------------------------------------- descriptor swap
    def _expect_mapping(self, c: Ctx, idents: list[tuple[int, int]]) -> None:
        """Remember the checked files; the next call of the process verifies the maps."""
        proc = c.proc
        if proc.map_known_id != proc.task_id:
            # First executable mapping of this program image: what the kernel mapped at
            # exec (the executable, its interpreter) is the baseline.
            proc.map_known = _exec_files(read_maps(c.tid))
            proc.map_known_id = proc.task_id
        if len(proc.map_known) + len(idents) > MAX_KNOWN_FILES:
            raise Unmodelable("too many executable files mapped")
        proc.map_known.update(idents)
        proc.map_check = proc.task_id

    def verify_maps(self, c: Ctx) -> bool:
        """Next call after an executable file mapping: only checked files are mapped.

        False means the process was disciplined (and, enforcing, killed).
        """
        proc = c.proc
        proc.map_check = None
        if proc.map_known_id != proc.task_id:
            return True  # a new program image since: its mappings are the kernel's
        try:
            now = _exec_files(read_maps(proc.tgid))
        except Unmodelable:
            return True  # the process is gone
        stray = now - proc.map_known
        if not stray:
            return True
        self.fault(c.n, "executable mapping of a file that was not checked "
                        f"(descriptor swapped?): {sorted(stray)}")
        with self.d.lock:
            self.d.tasks.mark_untrusted(proc.tgid)
        if self.d.enforcing:
            with contextlib.suppress(OSError):
                os.kill(proc.tgid, 9)
            self.lst.deny(c.n.id, errno.EPERM)
            return False
        return True

    # ------------------------------------------------------------ descriptions
    def _fd_file(self, c: Ctx, fdn: int) -> tuple[FileDesc, tuple[int, int]] | None:
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
            st = os.fstat(fd)
            try:
                desc = self._describe(c, fd, flags & ~O_CLOEXEC, readable=True, st=st)
            except PermissionError:
                raise Unmodelable("mapping of a file outside the domain") from None
            return desc, (st.st_dev, st.st_ino)
        finally:
            os.close(fd)

    def _map_file(self, c: Ctx, lo: int, hi: int) -> FileDesc:
        """The file of the mapping [lo, hi): through map_files, the very object mapped."""
        try:
            fd = os.open(f"/proc/{c.tid}/map_files/{lo:x}-{hi:x}", os.O_PATH | os.O_CLOEXEC)
        except OSError as exc:
            raise Unmodelable(f"mapped file: {exc.strerror}") from None
        try:
            return self._describe(c, fd, os.O_RDONLY, readable=True)
        except PermissionError:
            raise Unmodelable("mapping of a file outside the domain") from None
        finally:
            os.close(fd)


#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "mmap": "_mmap", "mprotect": "_mmap", "pkey_mprotect": "_mmap",
    "personality": "_personality", "shmat": "_shmat",
}
