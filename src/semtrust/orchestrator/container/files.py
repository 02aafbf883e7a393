"""The file mediator: decides fanotify permission events of the container."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

from semtrust.orchestrator.container.cgroups import cgroup_of, kill_cgroup
from semtrust.orchestrator.container.opener import opener_flags
from semtrust.sensors.fanotify import FanEvent

if TYPE_CHECKING:
    from semtrust.orchestrator.container.opens import OpenRoutes
    from semtrust.orchestrator.domain import Domain

#: Bound on the coefficient cache of the file mediator (cleared when full).
MAX_COEF_CACHE = 1 << 16


class FileMediator:
    """Decides fanotify events: outside the domain allow at once, inside model and answer."""

    def __init__(self, domain: Domain, cgroup: str, rootfs: str,
                 routes: OpenRoutes | None = None) -> None:
        from semtrust.sensors.fileinfo import FileInfo

        self.d = domain
        self.routes = routes
        #: The mediator's own opens (emulating the container's) are modeled by seccomp.
        self.own_pid = os.getpid()
        self.own = 0
        self.cgroup = cgroup
        self.rootfs = rootfs.rstrip("/")
        self.fi = FileInfo()
        self.outside = 0
        self.modeled = 0
        self.overflows = 0
        self.latencies: list[int] = []
        self.seq = 0
        # (task id, COE, file description) -> coefficient: repeated opens skip the hashing.
        self._coef: dict[tuple[bytes, Any, Any], bytes] = {}
        self._pseudonym_epoch = -1

    def in_domain(self, pid: int) -> bool:
        cg = cgroup_of(pid)
        return cg is not None and (cg == self.cgroup or cg.startswith(self.cgroup + "/"))

    def container_path(self, fd: int) -> str:
        p = os.readlink(f"/proc/self/fd/{fd}")
        if p == self.rootfs or p.startswith(self.rootfs + "/"):
            p = p[len(self.rootfs):] or "/"
        return p

    def decide(self, ev: FanEvent) -> bool:
        t0 = time.perf_counter_ns()
        if ev.pid == self.own_pid:
            self.own += 1
            return True  # an emulated open: modeled (and checked) on the seccomp side
        if not self.in_domain(ev.pid):
            self.outside += 1
            return True  # never modeled
        allow = self._decide_inside(ev)
        if len(self.latencies) < (1 << 20):
            self.latencies.append(time.perf_counter_ns() - t0)
        return allow

    def _decide_inside(self, ev: FanEvent) -> bool:
        from semtrust.events import Event, FileCell

        d = self.d
        try:
            proc, st = d.tasks.thread(ev.pid)
        except (OSError, KeyError) as exc:
            d.record_fault({"pid": ev.pid, "syscall": "open", "reason": f"task gone: {exc}"})
            return not d.enforcing
        if proc.untrusted:
            d.log_untrusted(proc, "open")
            return not d.enforcing
        if not ev.is_exec and self.routes is not None:
            try:
                fst = os.fstat(ev.fd)
            except OSError:
                fst = None
            if fst is not None and self.routes.consume(ev.pid, fst.st_dev, fst.st_ino):
                return True  # the object the seccomp side described and checked
        try:
            flags = opener_flags(ev.pid, ev.is_exec)
            if flags is None:
                return True  # second notice of an exec open already decided
            path = self.container_path(ev.fd)
            desc = self.fi.describe(ev.fd, flags, path)
        except OSError as exc:
            d.record_fault({"pid": ev.pid, "syscall": "open",
                            "reason": f"cannot describe file: {exc.strerror or exc}"})
            return not d.enforcing
        if ev.pidfd is not None:  # the opener must still be the process we read about
            try:
                signal.pidfd_send_signal(ev.pidfd, 0)
            except ProcessLookupError:
                return False
            except OSError:
                pass
        self.modeled += 1
        if d.tma.pseudonym_epoch != self._pseudonym_epoch:  # cached under other pseudonyms
            self._coef.clear()
            self._pseudonym_epoch = d.tma.pseudonym_epoch
        key = (proc.task_id, st.coe, desc)
        coef = self._coef.get(key)
        if coef is not None and d.tma.is_valid(coef) is not None:
            return not d.model_event(proc, None, coef)  # a known point: no new description
        self.seq += 1
        event = Event(type="file_open", task_id=proc.task_id, coe=st.coe,
                      cell=FileCell(desc), pid=ev.pid, process=st.name, number=self.seq,
                      p_task_id=proc.parent_task_id, ts=time.monotonic_ns())
        if coef is None:
            coef = d.tma.coefficient(event)
            if len(self._coef) >= MAX_COEF_CACHE:
                self._coef.clear()
            self._coef[key] = coef
        return not d.model_event(proc, event, coef)

    def overflow(self) -> None:
        """Lost events were allowed by the kernel: a trust event for the whole domain."""
        self.overflows += 1
        d = self.d
        d.record_fault({"pid": 0, "syscall": "open",
                        "reason": "fanotify queue overflow: opens were not mediated"})
        with d.lock:
            for tgid in list(d.tasks.procs):
                d.tasks.mark_untrusted(tgid)
        if d.enforcing:
            kill_cgroup(self.cgroup)

