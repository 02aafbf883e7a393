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
- *which threads*: a thread is answered natively only after Python registered it
  (trusted, credentials cached, no exec or mapping check pending, no credential
  switch needed); every call Python handles for a thread unregisters it first, and
  whatever changes tasks, creations or pseudonyms drops registrations or entries;
- *what happened natively*: point counts and latencies are drained into the TMA and
  the domain's statistics.

Without the compiled module (or with ``SEMTRUST_NATIVE=0``) nothing changes: every
decision takes the Python path, with the same answers.
"""

from __future__ import annotations

import array
import os
from typing import TYPE_CHECKING

from semtrust.events import Coe

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
        state = (med.d.tma.pseudonym_epoch, med.created.dir_generation)
        if state != self._state:
            # Another pseudonym set, or a new created directory (objects under it are
            # described relative to it): every recorded description may be stale.
            self.fp.clear()
            self._objects.clear()
            self._state = state
        gen = med.d.tasks.generation
        if gen != self._tasks_gen:
            self.fp.forget_threads()
            self._tasks_gen = gen
        self.fp.roots_ok = med.keep_roots()

    def _created(self, key: tuple[int, int]) -> None:
        if key in self._objects:
            # A new object under a recorded inode number (same state by chance within
            # one timestamp tick): it is described relative to its creation now.
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
        """Python just allowed an open: record it if it is a plain object's valid point.

        The object's state and name are the ones its description was made from (taken
        before the answer: afterwards the task may rename or change it).
        """
        med = self.med
        proc = c.proc
        st, link, co = med.last_st, med.last_link, med.last_co
        if (proc.untrusted or proc.exec_check is not None or proc.map_check is not None
                or med.creds.needed(c.st) or med.d.tma.is_valid(co) is not True):
            return
        # The thread may be answered natively from now on (calls that need no entry,
        # such as mkdir of an existing name); the object is recorded only if it is a
        # plain one opened a second time.
        record = (self.repeated and med.last_plain and st is not None and bool(link)
                  and not link.startswith(b"/proc/"))
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
        if not record:
            self.fp.register(c.tid, token)
            return
        assert st is not None
        slot = self._slot_of.get(co)
        if slot is None:
            slot = len(self.slots)
            self.slots.append(co)
            self._slot_of[co] = slot
        from semtrust.orchestrator.core import _kernel_flags

        self._objects.add((st.st_dev, st.st_ino))
        self.fp.learn(token, _kernel_flags(flags) & 0xFFFFFFFF, st.st_dev, st.st_ino,
                      st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid,
                      st.st_gid, link, slot)
        self.fp.register(c.tid, token)

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
