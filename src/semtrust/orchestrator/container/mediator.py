"""The mediator process: the domain, the file mediator and the seccomp listeners."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from semtrust.errors import SemtrustError
from semtrust.orchestrator.container import opens
from semtrust.orchestrator.container.caps import MEDIATOR_CAPS, drop_capabilities
from semtrust.orchestrator.container.cgroups import cgroup2_root, kill_cgroup
from semtrust.orchestrator.container.files import FileMediator
from semtrust.orchestrator.container.listener import ListenerServer
from semtrust.orchestrator.container.mounts import MarkReport
from semtrust.orchestrator.container.state import Plan
from semtrust.sensors.fanotify import Fanotify, PermissionLoop

#: How long the mediator waits for the keeper to mark the container's mounts.
MARK_TIMEOUT_S = 30.0


def mediator_main(plan_path: str, ctrl_fd: int, fan_fd: int) -> int:
    """The mediator process (see module docstring). Returns its exit code."""
    from semtrust.attest.service import attach
    from semtrust.orchestrator.launch import set_nondumpable
    from semtrust.orchestrator.mgmt import MgmtServer, register_request, socket_path
    from semtrust.orchestrator.report import print_report
    from semtrust.orchestrator.run import new_domain, preload_serving
    from semtrust.sensors.seccomp import Listener
    from semtrust.tma.wiring import finish_tma, on_tma_lost

    ctrl = socket.socket(fileno=ctrl_fd)
    plan = Plan.load(plan_path)
    opts = plan.run_options()
    try:
        trust, dom = new_domain(plan.name, opts, plan.command)
        tma = dom.tma
        dom.model_exec_file = False  # fanotify models the executable's open
        dom.emulate_opens = True  # the object checked is the object opened (opens.py)
        dom.protected.update({os.getpid(), os.getppid()})  # mediator and keeper
        attach(dom, trust)
        on_tma_lost(tma, lambda: kill_cgroup(plan.cgroup))
        server = MgmtServer(dom, socket_path(plan.name))
        preload_serving(trust.key is not None)  # nothing is imported once it runs
    except SemtrustError as exc:
        print(f"semtrust: {exc}", file=sys.stderr)
        return 2
    fan = Fanotify.from_fd(fan_fd)
    routes = opens.OpenRoutes()
    files = FileMediator(dom, plan.cgroup, plan.rootfs, routes)
    serve_threads: list[threading.Thread] = []
    ctrl_lock = threading.Lock()
    mark_lock = threading.Lock()  # one marking request to the keeper at a time

    marks_ready = threading.Event()
    marks_reply: list[MarkReport] = []

    def on_listener(fd: int, state: dict[str, Any]) -> None:
        # The keeper holds a copy: mediated calls block (not ENOSYS) if we die.
        with ctrl_lock, contextlib.suppress(OSError):
            socket.send_fds(ctrl, [b"listener"], [fd])
        pid = state.get("pid")
        if isinstance(pid, int) and dom.workload_pid is None:
            dom.workload_pid = pid
        _container(dom, {})  # record the domain cgroup's id while it exists
        # Before serving: every mount of the container is marked (or known to need
        # seccomp) before its first mediated call returns.
        if not isinstance(pid, int) or not mark_mounts(pid):
            os.close(fd)  # the keeper's copy keeps the container's calls blocked
            kill_cgroup(plan.cgroup)
            return
        t = threading.Thread(target=dom.serve, args=(Listener(fd),),
                             kwargs={"mediator_cls": opens.mediator_class(routes)},
                             name="semtrust-seccomp", daemon=True)
        serve_threads.append(t)
        t.start()

    def ask_keeper(pid: int) -> MarkReport:
        with mark_lock:
            marks_ready.clear()
            marks_reply.clear()
            with ctrl_lock, contextlib.suppress(OSError):
                ctrl.sendall(b"mark %d" % pid)
            if not marks_ready.wait(MARK_TIMEOUT_S) or not marks_reply:
                return MarkReport(failed=[{"mount": "*", "fstype": "?",
                                           "reason": "the keeper did not answer"}])
            return marks_reply.pop()

    def remark(pid: int) -> None:
        """A task's mounts changed (opens.MOUNT_CHANGING): mark the new ones. Opens on an
        unmarked mount are still mediated (emulated by seccomp); what fanotify alone
        sees there are the interpreters an exec loads."""
        if not os.path.exists(f"/proc/{pid}"):
            return
        rep = ask_keeper(pid)
        routes.add(rep.marked)
        for f in rep.failed:
            dom.record_fault({"pid": pid, "syscall": "mount", "reason":
                              f"mount {f.get('mount')} ({f.get('fstype')}) made after start "
                              f"cannot be marked: {f.get('reason')}"})

    routes.remark = remark

    def mark_mounts(pid: int) -> bool:
        """Have the keeper mark ``pid``'s mounts; False if the container may not run."""
        rep = ask_keeper(pid)
        routes.add(rep.marked)
        if routes.handshake is None:
            with contextlib.suppress(OSError):
                st = os.stat(Path(plan.runc_root) / plan.container_id / "exec.fifo")
                routes.handshake = (st.st_dev, st.st_ino)
        for f in rep.failed:
            reason = (f"mount {f.get('mount')} ({f.get('fstype')}) cannot be mediated: "
                      f"{f.get('reason')}")
            dom.record_fault({"pid": pid, "syscall": "mount", "reason": reason})
            if dom.enforcing:
                print(f"semtrust: {reason}; refusing to start the container (enforcing)",
                      file=sys.stderr)
                return False
        return True

    container_info: dict[str, Any] = {"container_id": plan.container_id, "cgroup": plan.cgroup,
                      "cgroup_id": None, "rootfs": plan.rootfs, "runc_root": plan.runc_root}

    def _container(_d: Any, _req: dict[str, Any]) -> Any:
        if container_info["cgroup_id"] is None:  # runc creates the cgroup at create time
            with contextlib.suppress(OSError):
                container_info["cgroup_id"] = os.stat(
                    cgroup2_root() / plan.cgroup.lstrip("/")).st_ino
        return dict(container_info)

    register_request("container", _container)
    try:
        lsrv = ListenerServer(plan.listener, on_listener)
    except OSError as exc:
        print(f"semtrust: cannot listen on {plan.listener}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    set_nondumpable()
    try:
        drop_capabilities(MEDIATOR_CAPS)
    except OSError as exc:
        print(f"semtrust: {exc}", file=sys.stderr)
        return 2
    loop = PermissionLoop(fan, files.decide, on_overflow=files.overflow,
                          on_error=lambda e: dom.record_fault(
                              {"pid": 0, "syscall": "open", "reason": f"internal: {e!r}"}))
    loop.start()
    lsrv.start()
    server.start()
    ctrl.sendall(b"ready")
    died = False
    while True:
        try:
            msg = ctrl.recv(1 << 20)
        except InterruptedError:
            continue
        except OSError:
            msg = b""
        if msg.startswith(b"marks "):
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                marks_reply.append(MarkReport.from_json(json.loads(msg[6:])))
            marks_ready.set()
            continue
        if msg == b"done":
            break
        if not msg:
            died = True
            break
    if died:  # the keeper is gone: nobody would stop the container
        kill_cgroup(plan.cgroup)
    dom.stop.set()
    for t in serve_threads:
        t.join(timeout=5)
    lsrv.close()
    loop.stop()
    fan.close()
    lost = finish_tma(dom.tma)
    dom.watch.end(dom, lost=lost)
    server.close()
    code = 0
    try:
        if lost is None:
            trust.finish(dom.tma)
    except SemtrustError as exc:
        print(f"semtrust: {exc}", file=sys.stderr)
        code = 2
    finally:
        trust.close()
    if lost is not None:
        print(f"semtrust: {lost}; the model is incomplete and was not written",
              file=sys.stderr)
        code = 2
    elif plan.output is not None:
        try:
            dom.write_output(plan.output, plan.trajectory)
        except OSError as exc:
            print(f"semtrust: cannot write {plan.output}: {exc.strerror}", file=sys.stderr)
            code = 2
    if lost is None:
        print_report(dom)
    if dom.fault_count:
        print(f"semtrust: {dom.fault_count} event(s) could not be modeled"
              f"{' and were denied' if dom.enforcing else ''}, e.g.:", file=sys.stderr)
        for f in dom.faults[:3]:
            print(f"semtrust:   pid {f.get('pid')} {f.get('syscall')}: {f.get('reason')}",
                  file=sys.stderr)
    stats: dict[str, Any] = dom.stats() if lost is None else {"tma_lost": lost}
    lat = sorted(files.latencies)
    if lat:
        stats["file_latency_ns_median"] = lat[len(lat) // 2]
        stats["file_latency_ns_p99"] = lat[min(len(lat) - 1, len(lat) * 99 // 100)]
    stats["file_events_outside"] = files.outside
    stats["file_events_modeled"] = files.modeled
    stats["fanotify_overflows"] = files.overflows
    stats["file_events_emulated"] = files.own
    stats["fault_samples"] = [{k: v for k, v in f.items() if k != "ts"} for f in dom.faults[:20]]
    stats["cgroup"] = plan.cgroup
    stats["cgroup_id"] = container_info["cgroup_id"]
    stats_path = os.environ.get("SEMTRUST_STATS")
    if stats_path:
        with contextlib.suppress(OSError), open(stats_path, "w") as sf:
            json.dump(stats, sf)
    with contextlib.suppress(OSError):
        ctrl.sendall(json.dumps({"code": code, "forensics": dom.tma.forensics_count
                                 if lost is None else -1}).encode())
    ctrl.close()
    return code

