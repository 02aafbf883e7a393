"""Start a command in a new modeling domain and hand its seccomp listener to us.

Process layout (why: a dead supervisor must take the whole workload with it)::

    supervisor (semtrust run)                      host pid namespace
      └─ intermediate   PDEATHSIG=KILL, unshare(NEWPID|NEWNS [+NEWUSER when unprivileged])
           └─ holder    pid 1 of the new pid namespace, installs the notify filter,
                        sends the listener up, keeps a copy of it, reaps orphans
                ├─ keeper   pid 2, holds another copy of the listener, sleeps
                └─ workload (CMD)  exec'ed under the filter, no listener fd

If the supervisor dies, the intermediate is killed (PDEATHSIG), which kills the
holder (PDEATHSIG), and the death of a pid namespace's init kills every
process in it. While that happens the keeper's copy of the listener keeps
mediated calls blocked instead of failing them with ENOSYS (the keeper is killed
with the others, after the kill was sent to all of them).

The workload also gets its own mount namespace: the same view of the host (mounts
are slaves of ours, so later host mounts still appear and learned paths do not
change) except that the directory of the management sockets is covered by an
empty read-only tmpfs, so a workload cannot connect to, replace or rename over a
domain's socket. (A root workload may unmount the cover in its namespace; the
console then still refuses a peer that is not the orchestrator, see mgmt.py.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from semtrust.errors import SemtrustError
from semtrust.sensors.seccomp import Listener, install_filter

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_SLAVE = 0x80000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
_JOB_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM, signal.SIGTSTP,
                signal.SIGTTIN, signal.SIGTTOU, signal.SIGPIPE)


class LaunchError(SemtrustError):
    """The workload could not be started."""


def set_nondumpable() -> None:
    """Keep same-uid workloads from ptracing or reading the supervisor's /proc files."""
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def exit_code(status: int) -> int:
    """Shell-style exit code from a wait status (128+N for a signal)."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


@dataclass
class Workload:
    """A launched, not yet released workload (see module docstring)."""

    pid: int
    listener: Listener
    sock: socket.socket
    holder: int = 0  # host pid of the listener holder (pid 1 of the namespace)
    _status: int | None = None

    def release(self) -> None:
        """Let the holder fork and exec the command (call once the listener is served)."""
        self.sock.sendall(b"G")

    def kill(self) -> None:
        """Kill the whole workload (intermediate -> holder -> pid namespace)."""
        if self._status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        """Wait for the workload and return its exit code."""
        if self._status is None:
            while True:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    break
                except InterruptedError:
                    continue
            self._status = status
        self.sock.close()
        return exit_code(self._status)


def launch(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
           userns: bool | None = None, timeout: float = 10.0,
           hide: Sequence[str] | None = None,
           meanwhile: Callable[[], None] | None = None) -> Workload:
    """Fork the process layout above; return once the listener fd has arrived.

    ``hide``: directories covered in the workload's mount namespace (default: the
    management sockets' directory). ``meanwhile`` runs in the supervisor while the
    children set up the namespaces and the filter (nothing of the command runs before
    ``Workload.release``); if it raises, the children are killed.
    """
    if not argv:
        raise LaunchError("no command")
    if userns is None:
        userns = os.geteuid() != 0
    if hide is None:
        from semtrust.orchestrator.mgmt import runtime_dir

        hide = [str(runtime_dir())]
    envd = dict(os.environ if env is None else env)
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    me = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # intermediate
        try:
            parent_sock.close()
            _intermediate(list(argv), envd, child_sock, me, userns, list(hide))
        except BaseException as exc:  # never return into the supervisor's code
            _err(f"semtrust: cannot start workload: {exc}")
        os._exit(127)
    child_sock.close()
    try:
        if meanwhile is not None:
            meanwhile()
    except BaseException:
        _reap(pid, parent_sock)
        raise
    parent_sock.settimeout(timeout)
    try:
        _msg, fds, _f, _a = socket.recv_fds(parent_sock, 16, 1)
    except OSError as exc:
        fds = []
        why = str(exc)
    else:
        why = "the workload exited before installing its filter"
    if not fds:
        _reap(pid, parent_sock)
        raise LaunchError(why)
    parent_sock.settimeout(None)
    holder = 0
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fp:
            holder = int(fp.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return Workload(pid, Listener(fds[0]), parent_sock, holder)


def _reap(pid: int, sock: socket.socket) -> None:
    """Kill and reap a launch that will not be released."""
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    sock.close()


def _err(msg: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, (msg + "\n").encode())


def _intermediate(argv: list[str], env: dict[str, str], sock: socket.socket, parent: int,
                  userns: bool, hide: list[str]) -> None:
    for s in _JOB_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # inherited 0 would lock us out of our uid_map
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWPID | CLONE_NEWNS | (CLONE_NEWUSER if userns else 0)
    if _libc.unshare(flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"unshare: {os.strerror(e)}")
    if userns:
        with open("/proc/self/setgroups", "w") as fp:
            fp.write("deny")
        with open("/proc/self/uid_map", "w") as fp:
            fp.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as fp:
            fp.write(f"{gid} {gid} 1")
    _hide_dirs(hide)
    me = os.getpid()
    holder = os.fork()
    if holder == 0:
        try:
            _holder(argv, env, sock, me)
        except BaseException as exc:
            _err(f"semtrust: cannot start workload: {exc}")
        os._exit(127)
    sock.close()
    while True:
        try:
            _, status = os.waitpid(holder, 0)
            break
        except InterruptedError:
            continue
    os._exit(exit_code(status))


def _mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int,
           data: bytes | None) -> None:
    if _libc.mount(source, target, fstype, flags, data) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {target.decode(errors='replace')}: {os.strerror(e)}")


def _hide_dirs(hide: list[str]) -> None:
    """In our new mount namespace: receive the host's mounts, cover ``hide``."""
    _mount(None, b"/", None, MS_REC | MS_SLAVE, None)
    for d in hide:
        if os.path.isdir(d):
            _mount(b"semtrust-hidden", os.fsencode(d), b"tmpfs",
                   MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"mode=0,size=4k")


def _holder(argv: list[str], env: dict[str, str], sock: socket.socket, parent: int) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Not dumpable: a same-uid workload must not ptrace us or open /proc/1/fd/<listener>.
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, max(65536, os.sysconf("SC_OPEN_MAX")))
    listener = install_filter()  # the whole syscall table
    socket.send_fds(sock, [b"L"], [listener])
    if sock.recv(1) != b"G":
        os._exit(1)
    # The keeper (pid 2) only holds a copy of the listener. When the holder dies, the
    # kernel SIGKILLs the namespace before the keeper's copy closes, so no mediated
    # call of a still running task can fail open with ENOSYS.
    keeper = os.fork()
    if keeper == 0:
        sock.close()
        while True:
            signal.pause()
    child = os.fork()
    if child == 0:
        try:
            os.close(listener)
            sock.close()
            _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # the supervisor must read our /proc
            for s in _JOB_SIGNALS:
                signal.signal(s, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            _err(f"semtrust: {argv[0]}: {exc.strerror}")
            os._exit(126 if exc.errno in (1, 13) else 127)
        except BaseException:
            os._exit(127)
    # pid 1 of the namespace: reap everything; leave with the workload's status.
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            os._exit(exit_code(status))
