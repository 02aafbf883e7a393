"""Container mode: an unmodified OCI container (runc) in a modeling domain.

Two processes share the work, so the one that touches the workload holds almost no
privilege and each can stop the container if the other dies (fail closed):

* the **keeper** (the ``semtrust run --bundle`` process, or the detached daemon of the
  OCI wrapper) keeps the capabilities runc needs: it copies the rootfs onto its own
  tmpfs, creates the fanotify group and marks that filesystem, starts runc, holds copies
  of the fanotify fd and of every seccomp listener fd, and kills the domain's cgroup if
  the mediator dies;
* the **mediator** (``python -m semtrust.orchestrator.container mediator PLAN``) holds
  the domain (TMA, trust table, management socket), answers fanotify permission events
  (file opens and execs, decided on the opened file itself) and serves every seccomp
  listener runc hands over through ``linux.seccomp.listenerPath`` with the process mode's
  mediator (everything else: exec identity, sockets, signals, set*id, ptrace, mmap).
  It drops every capability except CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH and CAP_KILL
  before it touches any workload event.

Each open is mediated once: the seccomp profile does not notify open/openat/openat2/creat
(fanotify owns them) and the process-mode exec handler leaves the executable's
``file_open`` to fanotify (``Domain.model_exec_file = False``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semtrust.errors import InputError, SemtrustError
from semtrust.orchestrator import bundle as bundlemod
from semtrust.sensors.fanotify import FanEvent, Fanotify, PermissionLoop

if TYPE_CHECKING:
    from semtrust.orchestrator.domain import Domain
    from semtrust.orchestrator.run import RunOptions

#: Syscalls the process mode mediates that fanotify owns in container mode.
FILE_OPEN_SYSCALLS = frozenset({"open", "openat", "openat2", "creat"})
#: Bound on one runc listener message (state JSON).
MAX_STATE_JSON = 1 << 20
#: Bound on the coefficient cache of the file mediator (cleared when full).
MAX_COEF_CACHE = 1 << 16
#: Capabilities the mediator keeps (README "privileges"): read task memory and fds
#: (CAP_SYS_PTRACE), read files and /proc entries whatever their mode
#: (CAP_DAC_READ_SEARCH), signal container processes of other uids (CAP_KILL).
CAP_DAC_READ_SEARCH = 2
CAP_KILL = 5
CAP_SYS_PTRACE = 19
MEDIATOR_CAPS = (CAP_DAC_READ_SEARCH, CAP_KILL, CAP_SYS_PTRACE)


def state_root() -> Path:
    """Where container domains keep their state (root only)."""
    return Path(os.environ.get("SEMTRUST_STATE_DIR") or "/run/semtrust/containers")


def find_runc() -> str:
    """The runc binary, or InputError (one line, exit 2)."""
    path = os.environ.get("SEMTRUST_RUNC") or shutil.which("runc") or (
        "/usr/sbin/runc" if os.access("/usr/sbin/runc", os.X_OK) else None)
    if path is None or not os.access(path, os.X_OK):
        raise InputError("runc not found (install the Debian package runc)", source="runc")
    return path


def cgroup2_root() -> Path:
    """Mount point of the cgroup v2 hierarchy (hybrid hosts: /sys/fs/cgroup/unified)."""
    for cand in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(cand, "cgroup.procs")) and os.path.exists(
                os.path.join(cand, "cgroup.subtree_control")):
            return Path(cand)
    return Path("/sys/fs/cgroup/unified")


def cgroup_of(pid: int) -> str | None:
    """The cgroup v2 path of ``pid`` ("0::" line of /proc/PID/cgroup), None if gone."""
    try:
        fd = os.open(f"/proc/{pid}/cgroup", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 8192)
    except OSError:
        return None
    finally:
        os.close(fd)
    for line in data.splitlines():
        if line.startswith(b"0::"):
            return line[3:].decode("utf-8", "replace")
    return None


def kill_cgroup(cgroup: str) -> None:
    """SIGKILL every process of a cgroup v2 (``cgroup.kill``, else one by one)."""
    d = cgroup2_root() / cgroup.lstrip("/")
    try:
        (d / "cgroup.kill").write_text("1")
        return
    except OSError:
        pass
    for _ in range(50):
        try:
            pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.01)


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)[:64] or "domain"


# ------------------------------------------------------------------------ plan

@dataclass
class Plan:
    """Everything the keeper and the mediator agree on (written as JSON in the state dir)."""

    name: str
    container_id: str
    state_dir: str
    bundle_dir: str
    rootfs: str
    own_mount: bool
    cgroup: str
    listener: str
    runc: str
    runc_root: str
    command: list[str] = field(default_factory=list)
    model: str | None = None
    enforce: bool = False
    output: str | None = None
    trajectory: bool = False
    model_key: str | None = None
    tpm: str | None = None
    pcr: int | None = None
    base: str | None = None
    tma_key: str | None = None
    runc_global: list[str] = field(default_factory=list)
    allow_empty: bool = False

    def save(self) -> Path:
        path = Path(self.state_dir) / "plan.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
        return path

    @classmethod
    def load(cls, path: str) -> Plan:
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))

    def run_options(self) -> RunOptions:
        from semtrust.orchestrator.run import RunOptions

        return RunOptions(command=self.command, name=self.name, output=self.output,
                          trajectory=self.trajectory, model=self.model, enforce=self.enforce,
                          tpm=self.tpm, pcr=self.pcr,
                          base=bytes.fromhex(self.base) if self.base else None,
                          tma_key=self.tma_key, model_key=self.model_key,
                          allow_empty=self.allow_empty)

    def runc_argv(self, *args: str) -> list[str]:
        return [self.runc, *self.runc_global, "--root", self.runc_root, *args]


def notify_syscalls() -> list[str]:
    """The process mode's mediated syscalls minus file opens (fanotify owns those)."""
    from semtrust.sensors.seccomp import default_syscalls

    return [s for s in default_syscalls() if s not in FILE_OPEN_SYSCALLS]


def _notify_profile_rules(profile: dict[str, Any]) -> dict[str, Any]:
    """mmap/mprotect are only interesting with PROT_EXEC: narrow their notify rule."""
    from semtrust.sensors.seccomp import PROT_EXEC, PROT_EXEC_FILTERED

    rules = []
    for rule in profile.get("syscalls", []):
        names = rule.get("names") or []
        prot = [n for n in names if n in PROT_EXEC_FILTERED]
        if rule.get("action") != "SCMP_ACT_NOTIFY" or not prot or rule.get("args"):
            rules.append(rule)
            continue
        rest = [n for n in names if n not in PROT_EXEC_FILTERED]
        if rest:
            rules.append({**rule, "names": rest})
        rules.append({**rule, "names": prot, "args": [
            {"index": 2, "value": PROT_EXEC, "valueTwo": PROT_EXEC,
             "op": "SCMP_CMP_MASKED_EQ"}]})
        if profile.get("defaultAction") != "SCMP_ACT_ALLOW":  # keep the non-exec case allowed
            rules.append({"names": prot, "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 2, "value": PROT_EXEC, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]})
    out = dict(profile)
    out["syscalls"] = rules
    return out


_ALLOW = "SCMP_ACT_ALLOW"
#: seccomp(2)'s flags argument with SECCOMP_FILTER_FLAG_NEW_LISTENER set or clear.
_NEW_LISTENER = 8
_LISTENER_SET = [{"index": 1, "value": _NEW_LISTENER, "valueTwo": _NEW_LISTENER,
                  "op": "SCMP_CMP_MASKED_EQ"}]
_LISTENER_CLEAR = [{"index": 1, "value": _NEW_LISTENER, "valueTwo": 0,
                    "op": "SCMP_CMP_MASKED_EQ"}]
#: What the process mode's own filter refuses in the kernel, for the same reasons: no second
#: supervisor inside the domain (Linux already answers EBUSY to a second listener in a chain;
#: this does not depend on it); io_uring connects and sends without system calls; userfaultfd
#: can stall the mediator's reads of task memory. Refused in the kernel, they cost no
#: round trip to the mediator and hold even while it is busy or gone.
_REFUSED = (("seccomp", errno.EPERM, _LISTENER_SET),
            ("io_uring_setup", errno.ENOSYS, None),
            ("userfaultfd", errno.EPERM, None))


def _refuse_escapes(profile: dict[str, Any]) -> dict[str, Any]:
    """Add the rules in ``_REFUSED`` to a runc seccomp profile.

    A name allowed unconditionally by the bundle's profile is taken out of that rule
    (``seccomp`` stays allowed without the listener flag); a name the profile already
    refuses unconditionally is left as it is.
    """
    rules: list[dict[str, Any]] = []
    blocked: set[str] = set()
    for rule in profile.get("syscalls", []):
        names = list(rule.get("names") or [])
        if rule.get("action") != _ALLOW and not rule.get("args"):
            blocked.update(names)
        ours = [n for n, _e, _a in _REFUSED if n in names]
        if rule.get("action") != _ALLOW or rule.get("args") or not ours:
            rules.append(rule)
            continue
        rest = [n for n in names if n not in ours]
        if rest:
            rules.append({**rule, "names": rest})
        if "seccomp" in ours:
            rules.append({**rule, "names": ["seccomp"], "args": _LISTENER_CLEAR})
    for name, err, args in _REFUSED:
        if name in blocked:
            continue
        rule = {"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": err}
        if args:
            rule["args"] = args
        rules.append(rule)
    return {**profile, "syscalls": rules}


def prepare(bundle: bundlemod.Bundle, opts: RunOptions, *, container_id: str,
            args: Sequence[str] | None = None, runc_root: str | None = None,
            terminal: bool | None = False, in_place: bool = False,
            runc_global: Sequence[str] = ()) -> Plan:
    """Create the state dir, the rootfs mount and the runtime config.json (keeper side)."""
    runc = find_runc()
    base = state_root()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    sweep_stale_state(base)
    sdir = base / f"{_safe_name(container_id)[:24]}-{os.getpid()}"  # sun_path <= 107
    if sdir.exists():
        shutil.rmtree(sdir)
    sdir.mkdir(mode=0o700)
    _hold_state_lock(sdir)
    own_mount = False
    try:
        if in_place and bundlemod.is_own_filesystem(bundle.rootfs):
            rootfs = str(bundle.rootfs)
        else:
            rootfs = str(sdir / "rootfs")
            try:
                bundlemod.copy_rootfs(bundle.rootfs, Path(rootfs))
            except OSError as exc:
                raise SemtrustError(f"cannot set up the rootfs copy: {exc}") from None
            own_mount = True
        linux = bundle.config.get("linux") or {}
        cg = linux.get("cgroupsPath")
        if isinstance(cg, str) and cg:
            if ":" in cg:
                raise InputError("systemd cgroup paths are not supported; use the cgroupfs "
                                 "cgroup manager", source=str(bundle.path / "config.json"),
                                 field="linux.cgroupsPath")
            cgroup = cg if cg.startswith("/") else "/" + cg
        else:
            cgroup = f"/semtrust/{_safe_name(container_id)[:24]}-{os.getpid()}"
        listener = str(sdir / "seccomp.sock")
        cfg = bundlemod.runtime_config(
            bundle, rootfs=rootfs, listener_path=listener, notify_syscalls=notify_syscalls(),
            cgroups_path=cgroup, args=args, terminal=terminal,
            annotations={"io.semtrust.domain": opts.name or container_id})
        cfg["linux"]["seccomp"] = _refuse_escapes(_notify_profile_rules(cfg["linux"]["seccomp"]))
        bdir = sdir / "bundle"
        bundlemod.write_config(cfg, bdir)
        plan = Plan(
            name=opts.name or container_id, container_id=container_id, state_dir=str(sdir),
            bundle_dir=str(bdir), rootfs=rootfs, own_mount=own_mount, cgroup=cgroup,
            listener=listener, runc=runc, runc_root=runc_root or str(sdir / "runc"),
            command=list(cfg["process"]["args"]), model=opts.model, enforce=opts.enforce,
            output=os.path.abspath(opts.output) if opts.output else None,
            trajectory=opts.trajectory, model_key=opts.model_key, tpm=opts.tpm, pcr=opts.pcr,
            base=opts.base.hex() if opts.base else None, tma_key=opts.tma_key,
            runc_global=list(runc_global), allow_empty=opts.allow_empty)
        plan.save()
        return plan
    except BaseException:
        cleanup_state(sdir, own_mount)
        raise


STATE_LOCK = "lock"
STALE_AFTER_S = 60.0
_held_locks: dict[str, int] = {}  # state dir -> lock fd, open for this process's life


def _hold_state_lock(sdir: Path) -> None:
    """Mark ``sdir`` live: an exclusive flock held as long as this process, a process
    forked from it, or a keeper it passes the fd to (``state_lock_fd``) lives. It is
    close-on-exec, so runc and an exec'd mediator do not keep it."""
    fd = os.open(sdir / STATE_LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held_locks[str(sdir)] = fd


def state_lock_fd(sdir: str | Path) -> int:
    """The lock fd of a state dir this process prepared (pass it to a detached keeper)."""
    return _held_locks[str(sdir)]


def sweep_stale_state(base: Path) -> list[Path]:
    """Remove what a killed keeper left: state dirs whose lock nobody holds.

    A keeper killed with SIGKILL takes its container with it (fail closed) but cannot
    unmount its rootfs copy. A dir counts as stale only if it has a lock file older than
    ``STALE_AFTER_S`` (so one being created right now is safe) that we can lock.
    """
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for sdir in entries:
        lock = sdir / STATE_LOCK
        try:
            if time.time() - lock.stat().st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live keeper holds it
        finally:
            os.close(fd)
        rootfs = sdir / "rootfs"
        if os.path.ismount(rootfs):
            bundlemod.umount(rootfs)
        shutil.rmtree(sdir, ignore_errors=True)
        removed.append(sdir)
    return removed


def cleanup_state(sdir: Path, own_mount: bool) -> None:
    """Unmount our rootfs copy and remove the state dir."""
    if own_mount:
        bundlemod.umount(sdir / "rootfs")
    shutil.rmtree(sdir, ignore_errors=True)


# ---------------------------------------------------------------- capabilities

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_CHILD_SUBREAPER = 36
_CAP_V3 = 0x20080522


def drop_capabilities(keep: Sequence[int]) -> None:
    """Shrink bounding, ambient, effective, permitted and inheritable sets to ``keep``.

    Capabilities are per thread: call before starting any thread.
    """
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        if cap not in keep:
            _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    hdr = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
    data = (ctypes.c_uint32 * 6)(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0,
                                 mask >> 32, mask >> 32, 0)
    if _libc.capset(ctypes.addressof(hdr), ctypes.addressof(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"capset: {os.strerror(e)}")


# ------------------------------------------------------------------- mediator

O_LARGEFILE = 0o100000
FMODE_EXEC = 0x20
_OPEN_NRS = {2: 1, 257: 2}  # open: flags in arg 1, openat: arg 2
_NR_CREAT = 85
_NR_OPENAT2 = 437  # flags in a struct in the caller's memory, which it could change
_EXEC_NRS = frozenset({59, 322, 134})  # execve, execveat, uselib
# How long to wait for an opener that has queued its event but not yet gone to sleep.
_SETTLE_S = 0.05


def opener_flags(pid: int, is_exec: bool) -> int | None:
    """``file.flags`` of an open fanotify holds: from the blocked call's own arguments.

    fanotify does not report the opener's flags; the opener is blocked inside the call,
    so ``/proc/PID/syscall`` shows them (value arguments, not memory: no race).
    None for the ``FAN_OPEN_PERM`` that follows ``FAN_OPEN_EXEC_PERM`` for the same exec
    open (the kernel sends both): it was modeled once already.

    The opener queues the event before it sleeps; read in between, its syscall file says
    "running". Taking that for "no open call" modeled a bogus read-only open of every
    binary whose exec notice arrived early (a flake seen in container runs). So a thread
    that is still running is read again, briefly, until it sleeps in its call.
    """
    if is_exec:
        return O_LARGEFILE | FMODE_EXEC
    deadline = 0.0
    pause = 20e-6
    while True:
        flags = _syscall_flags(pid, pid)  # the main thread first: no directory listing
        running = flags == _RUNNING
        if flags != _NOT_OPEN and not running:
            return flags
        for tid in _threads_first(pid)[1:]:
            flags = _syscall_flags(pid, tid)
            if flags == _RUNNING:
                running = True
            elif flags != _NOT_OPEN:
                return flags
        now = time.monotonic()
        if not running or (deadline and now >= deadline):
            return O_LARGEFILE  # openat2 or an in-kernel open: read-only
        if not deadline:
            deadline = now + _SETTLE_S
        time.sleep(pause)
        pause = min(2 * pause, 0.002)


_NOT_OPEN = -1
_RUNNING = -2


def _syscall_flags(pid: int, tid: int) -> int | None:
    """Flags of the open-family call ``tid`` is blocked in; None inside an exec;
    ``_RUNNING`` if it is not asleep; ``_NOT_OPEN`` if it is in no such call."""
    try:
        fd = os.open(f"/proc/{pid}/task/{tid}/syscall", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return _NOT_OPEN
    try:
        parts = os.read(fd, 512).split()
    except OSError:
        return _NOT_OPEN
    finally:
        os.close(fd)
    if parts[:1] == [b"running"]:
        return _RUNNING
    if not parts or not parts[0].lstrip(b"-").isdigit():
        return _NOT_OPEN
    nr = int(parts[0])
    if nr in _EXEC_NRS:
        return None
    if nr in _OPEN_NRS and len(parts) > _OPEN_NRS[nr] + 1:
        flags = int(parts[_OPEN_NRS[nr] + 1], 16) & 0xFFFFFFFF
    elif nr == _NR_CREAT:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    elif nr == _NR_OPENAT2:
        return O_LARGEFILE
    else:
        return _NOT_OPEN
    return (flags | O_LARGEFILE) & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_TRUNC
                                     | os.O_CLOEXEC)


def _threads_first(pid: int) -> list[int]:
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]
    tids.sort(key=lambda t: t != pid)
    return tids[:64]


class FileMediator:
    """Decides fanotify events: outside the domain allow at once, inside model and answer."""

    def __init__(self, domain: Domain, cgroup: str, rootfs: str) -> None:
        from semtrust.sensors.fileinfo import FileInfo

        self.d = domain
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


class _ListenerServer:
    """Accepts runc's ``listenerPath`` connections: state JSON + the seccomp listener fd."""

    def __init__(self, path: str, on_listener: Any) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.listen(16)
        self.on_listener = on_listener
        self.thread = threading.Thread(target=self._run, name="semtrust-listenerpath",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                fds, state = _read_listener_message(conn)
            for extra in fds[1:]:
                os.close(extra)
            if fds:
                self.on_listener(fds[0], state)


def _read_listener_message(conn: socket.socket) -> tuple[list[int], dict[str, Any]]:
    """runc's message: the state JSON with the listener fd attached (SCM_RIGHTS).

    runc keeps the connection open, so stop at the first complete JSON object.
    """
    conn.settimeout(10)
    fds: list[int] = []
    data = bytearray()
    try:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
        data += msg
        while len(data) < MAX_STATE_JSON:
            try:
                state = json.loads(bytes(data))
                return fds, state if isinstance(state, dict) else {}
            except ValueError:
                pass
            more = conn.recv(65536)
            if not more:
                break
            data += more
    except OSError:
        pass
    return fds, {}


def mediator_main(plan_path: str, ctrl_fd: int, fan_fd: int) -> int:
    """The mediator process (see module docstring). Returns its exit code."""
    from semtrust.attest.domain import DomainTrust
    from semtrust.attest.service import attach
    from semtrust.events.describe import describe
    from semtrust.orchestrator.domain import Domain
    from semtrust.orchestrator.launch import set_nondumpable
    from semtrust.orchestrator.mgmt import MgmtServer, register_request, socket_path
    from semtrust.orchestrator.run import build_tma
    from semtrust.sensors.seccomp import Listener

    ctrl = socket.socket(fileno=ctrl_fd)
    plan = Plan.load(plan_path)
    opts = plan.run_options()
    try:
        trust = DomainTrust(plan.name, opts.trust_options())
        try:
            tma = build_tma(opts, trust)
        except BaseException:
            trust.close()
            raise
        warning = trust.aggregate_mismatch()
        if warning is not None:
            print(f"semtrust: warning: {warning}", file=sys.stderr)
        dom = Domain(plan.name, tma, command=plan.command)
        dom.model_exec_file = False  # fanotify models the executable's open
        dom.protected.update({os.getpid(), os.getppid()})  # mediator and keeper
        attach(dom, trust)
        server = MgmtServer(dom, socket_path(plan.name))
    except SemtrustError as exc:
        print(f"semtrust: {exc}", file=sys.stderr)
        return 2
    fan = Fanotify.from_fd(fan_fd)
    files = FileMediator(dom, plan.cgroup, plan.rootfs)
    serve_threads: list[threading.Thread] = []
    ctrl_lock = threading.Lock()

    def on_listener(fd: int, state: dict[str, Any]) -> None:
        # The keeper holds a copy: mediated calls block (not ENOSYS) if we die.
        with ctrl_lock, contextlib.suppress(OSError):
            socket.send_fds(ctrl, [b"listener"], [fd])
        pid = state.get("pid")
        if isinstance(pid, int) and dom.workload_pid is None:
            dom.workload_pid = pid
        _container(dom, {})  # record the domain cgroup's id while it exists
        t = threading.Thread(target=dom.serve, args=(Listener(fd),),
                             name="semtrust-seccomp", daemon=True)
        serve_threads.append(t)
        t.start()

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
        lsrv = _ListenerServer(plan.listener, on_listener)
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
            msg = ctrl.recv(64)
        except InterruptedError:
            continue
        except OSError:
            msg = b""
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
    server.close()
    code = 0
    try:
        trust.finish(dom.tma)
    except SemtrustError as exc:
        print(f"semtrust: {exc}", file=sys.stderr)
        code = 2
    finally:
        trust.close()
    if plan.output is not None:
        try:
            dom.write_output(plan.output, plan.trajectory)
        except OSError as exc:
            print(f"semtrust: cannot write {plan.output}: {exc.strerror}", file=sys.stderr)
            code = 2
    if dom.tma.forensics_count:
        with dom.lock:
            shown = [describe(e) for e in dom.tma.forensics[:5]]
        print(f"semtrust: {dom.tma.forensics_count} event(s) outside the model"
              f"{' (denied)' if dom.enforcing else ''}:", file=sys.stderr)
        for line in shown:
            print(f"semtrust:   {line}", file=sys.stderr)
    if dom.fault_count:
        print(f"semtrust: {dom.fault_count} event(s) could not be modeled"
              f"{' and were denied' if dom.enforcing else ''}, e.g.:", file=sys.stderr)
        for f in dom.faults[:3]:
            print(f"semtrust:   pid {f.get('pid')} {f.get('syscall')}: {f.get('reason')}",
                  file=sys.stderr)
    stats = dom.stats()
    lat = sorted(files.latencies)
    if lat:
        stats["file_latency_ns_median"] = lat[len(lat) // 2]
        stats["file_latency_ns_p99"] = lat[min(len(lat) - 1, len(lat) * 99 // 100)]
    stats["file_events_outside"] = files.outside
    stats["file_events_modeled"] = files.modeled
    stats["fanotify_overflows"] = files.overflows
    stats["fault_samples"] = [{k: v for k, v in f.items() if k != "ts"} for f in dom.faults[:20]]
    stats["cgroup"] = plan.cgroup
    stats["cgroup_id"] = container_info["cgroup_id"]
    stats_path = os.environ.get("SEMTRUST_STATS")
    if stats_path:
        with contextlib.suppress(OSError), open(stats_path, "w") as sf:
            json.dump(stats, sf)
    with contextlib.suppress(OSError):
        ctrl.sendall(json.dumps({"code": code, "forensics": dom.tma.forensics_count}).encode())
    ctrl.close()
    return code


# --------------------------------------------------------------------- keeper

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
        src = str(Path(__file__).resolve().parents[2])
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
            if target_fd in ready:
                return True

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
    cid = container_id or _safe_name(opts.name or f"semtrust-{os.getpid()}")
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m semtrust.orchestrator.container mediator PLAN CTRLFD FANFD``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 4 and argv[0] == "mediator":
        return mediator_main(argv[1], int(argv[2]), int(argv[3]))
    print("usage: python -m semtrust.orchestrator.container mediator PLAN CTRLFD FANFD",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
