"""A modeling domain: one TMA, one trust table, one listener, one management socket.

The domain does not care where the seccomp listener comes from (our own
launcher, or runc's ``linux.seccomp.listenerPath``) nor how the workload was
started: ``serve(listener)`` mediates until every task using the filter is gone
(or ``stop`` is set). Everything the console shows is read under ``lock``.
"""

from __future__ import annotations

import array
import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semtrust.events import Event
from semtrust.model.tma import TMA, Mode
from semtrust.orchestrator.native import NativeDecisions
from semtrust.orchestrator.native import available as native_available
from semtrust.orchestrator.report import Watch
from semtrust.orchestrator.tasks import Process, TaskTable, read_status
from semtrust.sensors.fileinfo import DigestPending
from semtrust.sensors.seccomp import Listener, Notification

if TYPE_CHECKING:
    from semtrust.orchestrator.mediator import Mediator

MAX_FAULTS = 10000
MAX_LATENCIES = 1 << 20
ASYNC_HASH_OVER = 8 << 20  # bytes: larger files are hashed on a worker thread


class Domain:
    """State of one modeling domain (see module docstring)."""

    def __init__(self, name: str, tma: TMA | None = None, *, command: list[str] | None = None
                 ) -> None:
        self.name = name
        self.tma = tma if tma is not None else TMA()
        self.command = list(command or [])
        self.tasks = TaskTable()
        self.lock = threading.Lock()
        self.faults: list[dict[str, Any]] = []
        self.fault_count = 0
        self.untrusted_events = 0
        self.started = time.time()
        self.workload_pid: int | None = None
        self.pidns_ino: int | None = None
        # Host pids the workload must never reach although they live in its pid
        # namespace (our listener holder).
        self.protected: set[int] = set()
        # The same by pid inside the domain's namespace (our launcher: holder 1, keeper 2).
        self.protected_nspids: set[int] = set()
        self._own_pidns = _pidns(os.getpid())
        self.latencies = array.array("q")
        self.decisions = 0
        self.native_decisions = 0  # answered by the native path (native.py)
        self.stop = threading.Event()
        self.listeners: list[Listener] = []
        # Called with (process, event) when a process becomes untrusted (e.g. by the
        # container runtime to kill the container in enforcing mode).
        self.on_untrusted: list[Callable[[Process, Event | None], None]] = []
        # False when another sensor (fanotify, container mode) models the
        # executable's file_open: exec then only yields bprm_committed_creds here.
        self.model_exec_file = True
        # Reasons, untrusted-since and the live feed (console follow).
        self.watch = Watch()
        # True when every open is emulated, learning too (container mode: the object a
        # path names is checked and injected, never re-resolved by the kernel).
        self.emulate_opens = False

    # ------------------------------------------------------------ properties
    @property
    def mode(self) -> Mode:
        return self.tma.mode

    @property
    def enforcing(self) -> bool:
        return self.tma.mode is Mode.ENFORCING

    # --------------------------------------------------------------- modeling
    def model_event(self, proc: Process, ev: Event | None, coefficient: bytes | None = None
                    ) -> bool:
        """Model one event of ``proc``; True iff the call must be denied.

        ``coefficient`` may be given precomputed; ``ev`` may then be None for a point
        the TMA already knows (its description is only kept for new points).
        """
        with self.lock:
            if coefficient is None:
                if ev is None:
                    raise ValueError("need an event or a coefficient")
                coefficient = self.tma.coefficient(ev)
            v = self.tma.update_coefficient(coefficient, ev)
            if not v.trusted:
                self.tasks.mark_untrusted(proc.tgid)
            if v.added or not v.trusted:
                self.watch.event(self, proc, ev, coefficient, v)
        if not v.trusted:
            for cb in self.on_untrusted:
                cb(proc, ev)
        return v.deny

    def record_fault(self, fault: dict[str, Any]) -> None:
        """An event that could not be modeled (kept for the console and the report)."""
        with self.lock:
            self.fault_count += 1
            if len(self.faults) < MAX_FAULTS:
                fault["ts"] = time.monotonic_ns()
                self.faults.append(fault)
        self.watch.fault(fault)

    def log_untrusted(self, proc: Process, syscall: str) -> None:
        self.untrusted_events += 1
        self.watch.untrusted_call(self, proc, syscall)

    def in_domain(self, pid: int) -> bool:
        """Is ``pid`` (host view) one of this domain's (unprotected) processes?"""
        if pid in self.protected:
            return False
        if pid in self.tasks.procs:
            return True
        if self.pidns_ino is None or self.pidns_ino == self._own_pidns:
            return pid != os.getpid()
        if _pidns(pid) != self.pidns_ino:
            return False
        if self.protected_nspids:
            try:
                st = read_status(pid)
            except OSError:
                return False
            if st.nspid in self.protected_nspids:
                self.protected.add(pid)
                return False
        return True

    def host_pid(self, nspid: int) -> int | None:
        """Host tgid of a pid as the workload names it (its own pid namespace)."""
        host = self.tasks.by_nspid.get(nspid)
        if host is not None:
            return host
        # Not seen yet: look through the children of the processes we know.
        for tgid in list(self.tasks.procs):
            try:
                kids = Path(f"/proc/{tgid}/task/{tgid}/children").read_text().split()
            except OSError:
                continue
            for k in kids:
                kid = int(k)
                if kid in self.tasks.procs:
                    continue
                try:
                    st = read_status(kid)
                except OSError:
                    continue
                if st.nspid == nspid:
                    return kid
        return None

    # ------------------------------------------------------------------ serve
    def serve(self, listener: Listener, *, sync_wakeup: bool = True,
              mediator_cls: type[Mediator] | None = None) -> None:
        """Mediate every notification on ``listener`` until no task uses the filter
        (with ``mediator_cls``, e.g. container mode's, instead of the process mode's)."""
        from semtrust.orchestrator.mediator import Mediator

        if sync_wakeup:
            listener.set_sync_wakeup()
        self.listeners.append(listener)
        med = (mediator_cls or Mediator)(self, listener)
        # Large files are hashed on worker threads: their decisions wait aside (seccomp
        # notifications may be answered in any order) while the others go on.
        med.fi.cancel = self.stop
        med.fi.async_over = ASYNC_HASH_OVER
        waiting: list[tuple[Notification, int]] = []
        poller = select.poll()
        poller.register(listener.fd, select.POLLIN)
        poller.register(med.fi.wakeup, select.POLLIN)
        lat = self.latencies
        clock = time.perf_counter_ns
        # Known points of the process mode are answered natively when it is built.
        native: NativeDecisions | None = None
        med.roots_allowed = mediator_cls is None
        if mediator_cls is None and native_available() and type(self.tma) is TMA:
            # (An external TMA sees every event itself: the native path would hide some.)
            native = NativeDecisions(med, listener.fd, med.fi.wakeup)
            med.native = native

        def decide(n: Notification, t0: int) -> None:
            listener.answered_ns = 0
            try:
                med.handle(n)
            except DigestPending:
                waiting.append((n, t0))
                return
            if len(lat) < MAX_LATENCIES:
                lat.append((listener.answered_ns or clock()) - t0)
            self.decisions += 1

        def woken() -> None:
            med.fi.drain()
            retry = waiting[:]
            waiting.clear()
            med.fi.waiting = 0
            for again, t0 in retry:
                decide(again, t0)

        def received(n: Notification, t0: int) -> None:
            if self.pidns_ino is None:
                self.pidns_ino = _pidns(n.pid)
            decide(n, t0)

        try:
            while not self.stop.is_set():
                if native is not None:
                    native.sync()
                    got = native.fp.run(250)
                    native.drain()
                    if isinstance(got, tuple):
                        nid, pid, nr, arch, args, t0, path = got
                        if path is not None:
                            med.path_read = (nid, path)
                        received(Notification(nid, pid, nr, arch, args), t0)
                    elif got == 1:
                        woken()
                    elif got == 2:
                        return
                    continue
                ready = poller.poll(250)
                for fd, mask in ready:
                    if fd == med.fi.wakeup:
                        woken()
                    elif mask & select.POLLIN:
                        n = listener.recv()
                        if n is None:
                            continue
                        received(n, clock())
                    elif mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        return
        finally:
            if native is not None:
                native.drain()
            med.drop_roots()
            med.native = None
            med.fi.close()
            # With several listeners (runc exec hands over one per exec'd process),
            # only the last loop to end may close the task table's fds: others still read
            # task memory through them.
            with self.lock:
                self.listeners.remove(listener)
                last = not self.listeners
            if last:
                self.tasks.close()

    # ---------------------------------------------------------------- reports
    def show(self, what: str) -> Any:
        """The console's ``show`` views (JSON-able)."""
        # Formatting is loaded when someone asks: most domains are never shown.
        from semtrust.events.jsonexport import format_event
        from semtrust.model.views import TMA_VIEWS, tma_view

        with self.lock:
            t = self.tma
            if what == "trajectory":
                return [format_event(e) for e in t.trajectory if isinstance(e, Event)]
            if what == "forensics":
                return [format_event(e) for e in t.forensics if isinstance(e, Event)]
            if what in TMA_VIEWS:
                return tma_view(t, what)
            if what == "faults":
                return list(self.faults)
            if what == "stats":
                return self.stats()
        raise KeyError(what)

    def stats(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        out: dict[str, Any] = {"decisions": self.decisions, "points": len(self.tma.points()),
                               "forensics": self.tma.forensics_count,
                               "faults": self.fault_count,
                               "untrusted_processes": len(self.tasks.untrusted()),
                               "untrusted_events": self.untrusted_events,
                               "native_decisions": self.native_decisions}
        if lat:
            out["latency_ns_median"] = lat[len(lat) // 2]
            out["latency_ns_p99"] = lat[min(len(lat) - 1, (len(lat) * 99) // 100)]
        return out

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "pid": os.getpid(), "mode": self.mode.value,
                "command": self.command, "workload_pid": self.workload_pid,
                "started": int(self.started)}

    def render_output(self, trajectory: bool) -> str:
        """The ``--output`` file: the model, or every point's event as export lines."""
        from semtrust.events.jsonexport import format_event
        from semtrust.model.modelfile import render_model

        with self.lock:
            if not trajectory:
                return render_model(self.tma)
            lines = []
            for p in self.tma.points():
                ev = self.tma.event_of(p)
                if isinstance(ev, Event):
                    lines.append(format_event(ev))
            return "".join(line + "\n" for line in lines)

    def write_output(self, path: str, trajectory: bool) -> None:
        """Write ``--output`` atomically; an OSError's ``strerror`` names the fallback copy."""
        from semtrust.orchestrator.output import write_output

        write_output(path, self.render_output(trajectory),
                     what="trajectory" if trajectory else "model")


def _pidns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None
