"""The keeper: the privileged side that starts runc and the mediator and holds the fds."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semtrust.errors import InputError, SemtrustError
from semtrust.orchestrator import bundle as bundlemod
from semtrust.orchestrator.container.cgroups import kill_cgroup
from semtrust.orchestrator.container.mediator import mediator_main
from semtrust.orchestrator.container.mounts import MarkReport, mark_container_mounts
from semtrust.orchestrator.container.prepare import find_runc, prepare
from semtrust.orchestrator.container.state import Plan, cleanup_state, safe_name
from semtrust.sensors.fanotify import Fanotify

if TYPE_CHECKING:
    from semtrust.orchestrator.run import RunOptions


class _Forked:
    """A forked mediator child (the subset of Popen the keeper uses)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(["mediator"], timeout or 0)
            time.sleep(0.01)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _fork_mediator(plan: Plan, ctrl_fd: int, fan_fd: int, detach_stdio: bool) -> _Forked:
    """Fork the mediator from a single-threaded keeper (its modules are already loaded)."""
    import semtrust.attest.domain
    import semtrust.attest.service
    import semtrust.events.describe
    import semtrust.orchestrator.domain
    import semtrust.orchestrator.mediator
    import semtrust.orchestrator.mgmt
    import semtrust.orchestrator.run  # noqa: F401

    plan_path = str(Path(plan.state_dir) / "plan.json")
    log = str(Path(plan.state_dir) / "mediator.log")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return _Forked(pid)
    code = 70
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        if detach_stdio:
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.close(out)
        keep = {0, 1, 2, ctrl_fd, fan_fd}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        code = mediator_main(plan_path, ctrl_fd, fan_fd)
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            print(f"semtrust: mediator failed: {exc!r}", file=sys.stderr)
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class Keeper:
    """The privileged side: starts the mediator, holds fds, kills the container on faults."""

    def __init__(self, plan: Plan, fan: Fanotify, *, detach_stdio: bool = False) -> None:
        self.plan = plan
        self.fan = fan
        self.held: list[int] = []
        self.ctrl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc: subprocess.Popen[bytes] | _Forked
        self.mediator_alive = True
        self.result: dict[str, Any] = {}
        if threading.active_count() == 1:  # fork without exec: no second interpreter start-up
            self.proc = _fork_mediator(plan, theirs.fileno(), fan.fileno(), detach_stdio)
            theirs.close()
            return
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                   else "")
        out: Any = None
        if detach_stdio:
            out = open(Path(plan.state_dir) / "mediator.log", "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "semtrust.orchestrator.container", "mediator",
                 str(Path(plan.state_dir) / "plan.json"), str(theirs.fileno()),
                 str(fan.fileno())],
                pass_fds=(theirs.fileno(), fan.fileno()), env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        finally:
            theirs.close()
            if out is not None:
                out.close()

    def wait_ready(self) -> bool:
        """True once the mediator listens; False if it failed (it printed why)."""
        while True:
            msg = self._recv(timeout=60)
            if msg is None:
                self.mediator_alive = False
                return False
            if msg == b"ready":
                return True

    def _recv(self, timeout: float | None = None) -> bytes | None:
        """One control message (fds are kept); None on EOF."""
        self.ctrl.settimeout(timeout)
        try:
            msg, fds, _f, _a = socket.recv_fds(self.ctrl, 65536, 8)
        except (TimeoutError, OSError):
            return None
        finally:
            self.ctrl.settimeout(None)
        self.held.extend(fds)
        if not msg and not fds:
            return None
        return msg

    def watch(self, target_fd: int) -> bool:
        """Serve until ``target_fd`` (a pidfd) is readable; False if the mediator died first.

        When the mediator dies the container is killed at once (fail closed); the copies
        of the fanotify and seccomp fds held here keep the workload's pending calls
        blocked until then.
        """
        poller = select.poll()
        poller.register(self.ctrl.fileno(), select.POLLIN)
        poller.register(target_fd, select.POLLIN)
        while True:
            try:
                ready = dict(poller.poll())
            except InterruptedError:
                continue
            if self.ctrl.fileno() in ready:
                msg = self._recv(timeout=1)
                if msg is None:
                    self.mediator_alive = False
                    kill_cgroup(self.plan.cgroup)
                    return False
                if msg.startswith(b"{"):
                    with contextlib.suppress(ValueError):
                        self.result = json.loads(msg)
                elif msg.startswith(b"mark "):
                    self._mark(msg)
            if target_fd in ready:
                return True

    def _mark(self, msg: bytes) -> None:
        """Mark the mounts of the container process the mediator names (mounts.py)."""
        try:
            pid = int(msg[5:])
            rep = mark_container_mounts(self.fan, pid)
        except ValueError:
            rep = MarkReport(failed=[{"mount": "*", "fstype": "?", "reason": "bad request"}])
        with contextlib.suppress(OSError):
            self.ctrl.sendall(b"marks " + json.dumps(rep.to_json()).encode())

    def finish(self, timeout: float = 30) -> int | None:
        """Tell the mediator the workload ended; wait for its report; return its code."""
        if self.mediator_alive:
            with contextlib.suppress(OSError):
                self.ctrl.sendall(b"done")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = self._recv(timeout=max(0.1, deadline - time.monotonic()))
                if msg is None:
                    break
                if msg.startswith(b"{"):
                    with contextlib.suppress(ValueError):
                        self.result = json.loads(msg)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.close()
        return code

    def close(self) -> None:
        self.mediator_alive = False
        for fd in self.held:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.held.clear()
        self.ctrl.close()


def open_fanotify(rootfs: str) -> Fanotify:
    """A permission-event group marking the filesystem of ``rootfs`` (SemtrustError if not)."""
    try:
        fan = Fanotify()
    except OSError as exc:
        raise SemtrustError(f"fanotify permission events unavailable: {exc}") from None
    try:
        fan.mark_filesystem(rootfs)
    except OSError as exc:
        fan.close()
        raise SemtrustError(f"cannot mark {rootfs} with fanotify: {exc}") from None
    return fan


def _runc_quiet(plan: Plan, *args: str) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(plan.runc_argv(*args), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


def run_container(opts: RunOptions, bundle_dir: str, args: Sequence[str] | None = None, *,
                  container_id: str | None = None, runc_root: str | None = None,
                  runc_options: Sequence[str] = (), in_place: bool = False,
                  terminal: bool | None = False, runc_global: Sequence[str] = ()) -> int:
    """``semtrust run --bundle DIR [-- CMD...]``: run the bundle under runc; its exit code.

    The OCI wrapper's ``run`` passes the engine's id, runc root and options.
    """
    if opts.enforce and opts.model is None:
        raise InputError("--enforce needs --model", field="--enforce")
    find_runc()
    if os.geteuid() != 0:
        raise InputError("container mode needs root (runc, fanotify, cgroups)")
    bundle = bundlemod.load_bundle(bundle_dir, need_args=not args)
    cid = container_id or safe_name(opts.name or f"semtrust-{os.getpid()}")
    plan = prepare(bundle, opts, container_id=cid, args=list(args) if args else None,
                   runc_root=runc_root, in_place=in_place, terminal=terminal,
                   runc_global=runc_global)
    from semtrust.orchestrator.launch import set_nondumpable

    set_nondumpable()  # the keeper's memory and /proc files stay root-with-ptrace only

    def _term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    prev_term = signal.signal(signal.SIGTERM, _term)
    code = 1
    keeper: Keeper | None = None
    fan: Fanotify | None = None
    sdir = Path(plan.state_dir)
    try:
        fan = open_fanotify(plan.rootfs)
        keeper = Keeper(plan, fan)
        if not keeper.wait_ready():
            code = keeper.finish() or 2
            return code
        prev = signal.signal(signal.SIGINT, signal.SIG_IGN)  # runc forwards to the container
        try:
            runc = subprocess.Popen(plan.runc_argv("run", *runc_options, "--bundle",
                                                   plan.bundle_dir, cid))
        finally:
            signal.signal(signal.SIGINT, prev)
        pidfd = os.pidfd_open(runc.pid)
        try:
            alive = keeper.watch(pidfd)
        finally:
            os.close(pidfd)
        code = runc.wait()
        if not alive:
            print("semtrust: the mediator died; the container was killed (fail closed)",
                  file=sys.stderr)
            code = code or 137
        mcode = keeper.finish()
        if mcode and alive and not code:
            code = mcode
        return code
    finally:
        if keeper is not None and keeper.mediator_alive:
            keeper.finish(timeout=5)
        _runc_quiet(plan, "delete", "--force", cid)
        if fan is not None:
            fan.close()
        cleanup_state(sdir, plan.own_mount)
        signal.signal(signal.SIGTERM, prev_term)

