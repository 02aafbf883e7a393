"""Known-point decisions answered natively: the bridge to ``_decide``.

The compiled ``semtrust.orchestrator._decide`` receives the listener's
notifications itself and answers an open whose event is a valid point Python
already decided for the same task identity, COE and object state (see its
docstring). Everything else comes back here and is decided by the mediator as
before. This module keeps the two in step:

- *what may be answered natively*: after Python allowed an open whose object is a
  plain (not created, not procfs) file or directory and whose coefficient is a valid
  point, it records (token, kernel flags, object identity, kernel name) -> point;
  the token stands for (task identity, COE, task root);
- *first-seen opens* (enforcing only): the native path computes the ``file_open``
  coefficient of a read-only open of a plain pre-existing file or directory itself
  and answers it when it is one of the sealed model's valid points. Python pushes
  what enters it that the object does not show: per token the task identity, COE
  digest and task root; per device its part of the inode description (once Python
  described a file there); the valid points (with their slots, for the counts);
  the loaded pseudonyms (a pseudonym path is Python's); the objects the domain
  created and the names of the directories it created (objects that are, or are
  under, one are described relative to the creation: Python's);
- *which threads*: a thread is answered natively only after Python registered it
  (trusted, credentials cached, no exec or mapping check pending, no credential
  switch needed) at an open it allowed; every call Python handles for a thread
  unregisters it first, and whatever changes tasks, creations or pseudonyms drops
  registrations or entries;
- *what happened natively*: point counts and latencies are drained into the TMA and
  the domain's statistics.

Without the compiled module (or with ``SEMTRUST_NATIVE=0``) nothing changes: every
decision takes the Python path, with the same answers.
"""

from __future__ import annotations

import array
import os
from typing import TYPE_CHECKING

from semtrust.events import Coe, Inode
from semtrust.model.coefficient import coe_digest, inode_preimage
from semtrust.model.tma import TMA
from semtrust.sensors.fileinfo import PSEUDO_MAGICS

if TYPE_CHECKING:
    from semtrust.orchestrator._decide import FastPath
    from semtrust.orchestrator.core import Ctx, MediatorCore

_FastPath: type[FastPath] | None
try:
    from semtrust.orchestrator._decide import FastPath as _FastPath
except ImportError:  # not built: the Python path decides everything
    _FastPath = None

MAX_TOKENS = 4096
MAX_LATENCIES = 1 << 20
#: Largest file a first-seen open is hashed for natively (larger ones: Python, which
#: hashes them on worker threads without holding up other decisions).
FIRST_SEEN_MAX_HASH = 4 << 20
_INODE_HEAD = 14  # uid, gid, mode, magic: the object's own part of inode_preimage


def available() -> bool:
    """Is the native path built and not switched off (``SEMTRUST_NATIVE=0``)?"""
    return _FastPath is not None and os.environ.get("SEMTRUST_NATIVE", "1") != "0"


class NativeDecisions:
    """One mediator's native path (see the module docstring)."""

    def __init__(self, med: MediatorCore, listener_fd: int, wake_fd: int) -> None:
        assert _FastPath is not None
        self.med = med
        self.fp: FastPath = _FastPath(listener_fd, wake_fd)
        self.fp.emulate = med.d.enforcing
        if med.d.enforcing:
            bound = min(FIRST_SEEN_MAX_HASH, med.fi.max_bytes)
            if med.fi.async_over is not None:
                bound = min(bound, med.fi.async_over)
            self.fp.max_hash = bound
        self._points_pushed = False
        self._devs: set[int] = set()
        self._numbered = 0
        self.slots: list[bytes] = []
        self._slot_of: dict[bytes, int] = {}
        self._tokens: dict[tuple[bytes, Coe, str], int] = {}
        self._state = (-1, -1)
        self._tasks_gen = -1
        self._answered = 0
        self.repeated = False  # the open being decided names a path decided before
        self._objects: set[tuple[int, int]] = set()
        med.created.on_add = self._created

    # ------------------------------------------------------------ keeping step
    def sync(self) -> None:
        """Before the native loop runs again: drop what Python's last decisions changed."""
        med = self.med
        tma = med.d.tma
        state = (tma.pseudonym_epoch, med.created.dir_generation)
        if state != self._state:
            # Another pseudonym set, or a new created directory (objects under it are
            # described relative to it): every recorded description may be stale.
            self.fp.clear()
            self._objects.clear()
            self._state = state
            self.fp.set_pseudonyms(b"".join(sorted(tma.pseudonyms)))
            self.fp.set_created_dirs([os.fsencode(p) for p in med.created.dir_paths()])
        if med.d.enforcing and not self._points_pushed and isinstance(tma, TMA):
            # The model's valid points: sealed, no point becomes valid or stops being
            # so (unsealed, new ones are valid but unknown here: Python's). Only an
            # in-process TMA: an external or exporting one answers no point as known
            # (every event goes to it in full), so no thread is registered anyway.
            self._points_pushed = True
            for co in tma.valid_points():
                self.fp.add_point(co, self._slot(co))
        gen = med.d.tasks.generation
        if gen != self._tasks_gen:
            self.fp.forget_threads()
            self._tasks_gen = gen
        self.fp.roots_ok = med.keep_roots()

    def _slot(self, co: bytes) -> int:
        slot = self._slot_of.get(co)
        if slot is None:
            slot = len(self.slots)
            self.slots.append(co)
            self._slot_of[co] = slot
        return slot

    def _created(self, key: tuple[int, int]) -> None:
        # Never described as a pre-existing object natively again (a superset is kept).
        self.fp.add_created(key[0], key[1])
        if key in self._objects:
            # A new object under a recorded inode number (same state by chance within
            # one timestamp tick): it is described relative to its creation now.
            self.fp.clear()
            self._objects.clear()

    def forget_object(self, dev: int, ino: int) -> None:
        """``(dev, ino)`` may change without a new state (see FileInfo.note_writable): no
        recorded decision may answer for it again. (First-seen opens hash every time.)"""
        if (dev, ino) in self._objects:
            self.fp.clear()
            self._objects.clear()

    def unregister(self, tid: int) -> None:
        """Python handles a call of ``tid``: it may change what the thread is."""
        self.fp.forget_thread(tid)

    def forget_process(self, tgid: int) -> None:
        """No thread of process ``tgid`` is answered natively until registered again."""
        fp = self.fp
        fp.forget_thread(tgid)
        for tid, ent in list(self.med.d.tasks.threads.items()):
            if ent[0] == tgid:
                fp.forget_thread(tid)

    def note_path(self, path: bytes) -> None:
        """Python decides an open of ``path``: the native path may try it next time.

        A path opened for the first time is not recorded (most are opened once: a
        tree being archived or compiled); from the second time on it is.
        """
        self.repeated = self.fp.note_path(path)

    def learn(self, c: Ctx, flags: int) -> None:
        """Python just allowed an open: register the thread, and record the decision if
        it is a plain object's valid point on a path decided before.

        The object's state and name are the ones its description was made from (taken
        before the answer: afterwards the task may rename or change it).
        """
        med = self.med
        proc = c.proc
        st, link, co = med.last_st, med.last_link, med.last_co
        if (st is None or proc.untrusted or proc.exec_check is not None
                or proc.map_check is not None or med.creds.needed(c.st)
                or med.d.tma.is_valid(co) is not True):
            return
        # The root only matters for the name: a task root named through procfs
        # ("/proc/TGID/root", every task in the workload's own mount namespace) strips
        # nothing from a name that does not start with "/proc/", so processes of one
        # identity share their decisions.
        root = "/proc/PID/root" if proc.root.startswith("/proc/") else proc.root
        tkey = (proc.task_id, c.st.coe, root)
        token = self._tokens.get(tkey)
        if token is None:
            if len(self._tokens) >= MAX_TOKENS:
                self._tokens.clear()
                self._objects.clear()
                self.fp.clear()
            token = len(self._tokens) + 1
            self._tokens[tkey] = token
            # Names under a root other than ours are shown without it (the procfs-named
            # one strips nothing from a name the native path computes: not /proc/...).
            rbytes = b"" if root in ("/", "/proc/PID/root") else os.fsencode(root)
            self.fp.token_info(token, proc.task_id, coe_digest(c.st.coe), rbytes)
        self._device(st.st_dev)
        if med.last_plain and link and not link.startswith(b"/proc/"):
            from semtrust.orchestrator.core import _kernel_flags

            kflags = _kernel_flags(flags) & 0xFFFFFFFF
            ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                     st.st_mode, st.st_uid, st.st_gid)
            if self.med.d.enforcing:
                self.fp.described(c.tid, token, kflags, *ident, link)
            if self.repeated and not med.fi.is_volatile(st.st_dev, st.st_ino):
                # Only a path opened before is replayed by entry (the perf filter: most
                # paths are opened once; those are computed, enforcing); never a file the
                # domain may be changing through a mapping.
                self._objects.add((st.st_dev, st.st_ino))
                self.fp.learn(token, kflags, *ident, link, self._slot(co))
        self.fp.register(c.tid, token)

    def _device(self, dev: int) -> None:
        """Push a device's part of inode descriptions once Python described a file there
        (a pseudo filesystem's files have no content digest: they stay Python's)."""
        if dev in self._devs:
            return
        fs = self.med.fi.cached_fs(dev)
        if fs is None or fs.magic in PSEUDO_MAGICS:
            return
        self._devs.add(dev)
        tail = inode_preimage(Inode(0, 0, 0, fs.magic, fs.s_id, fs.uuid))[_INODE_HEAD:]
        self.fp.add_device(dev, fs.magic, tail)

    # ----------------------------------------------------------------- results
    def drain(self) -> int:
        """Count natively answered points in the TMA, keep their latencies; returns how
        many decisions were answered natively since the last drain."""
        answered = self.fp.answered
        new = answered - self._answered
        if not new:
            return 0
        self._answered = answered
        lat_bytes, hits = self.fp.drain()
        numbered = self.fp.numbered
        # Python numbers an event when it first describes an object's state for a
        # thread (MediatorCore._full, behind its caches): so do the native ones.
        self.med.seq += numbered - self._numbered
        self._numbered = numbered
        d = self.med.d
        lat = array.array("q")
        lat.frombytes(lat_bytes)
        room = MAX_LATENCIES - len(d.latencies)
        if room > 0:
            d.latencies.extend(lat[:room])
        with d.lock:
            observe = d.tma.observe
            for slot, n in hits:
                co = self.slots[slot]
                for _ in range(n):
                    observe(co)  # a known point: counted, as update_coefficient would
            d.decisions += new
            d.native_decisions += new
        return int(new)
