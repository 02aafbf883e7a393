"""seccomp user notification through ctypes (x86_64).

The PyPI wrappers cannot hand the listener to another process, so this module
builds the classic-BPF filter itself, installs it with
``SECCOMP_FILTER_FLAG_NEW_LISTENER`` and wraps the listener ioctls
(``NOTIF_RECV``, ``NOTIF_SEND``, ``NOTIF_ID_VALID``, ``NOTIF_ADDFD``,
``NOTIF_SET_FLAGS``) for the supervisor that receives the fd.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
PROT_EXEC = 0x4

NR_SECCOMP = 317
NR_USERFAULTFD = 323
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SETFD = 1
SECCOMP_ADDFD_FLAG_SEND = 2
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1

SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
SECCOMP_IOCTL_NOTIF_ADDFD = 0x40182103
SECCOMP_IOCTL_NOTIF_SET_FLAGS = 0x40082104

PR_SET_NO_NEW_PRIVS = 38

# x86_64 system call numbers of everything the sensor can mediate.
SYSCALLS: dict[str, int] = {
    "open": 2, "mmap": 9, "mprotect": 10, "socket": 41, "connect": 42, "accept": 43,
    "bind": 49, "listen": 50, "clone": 56, "fork": 57, "vfork": 58, "execve": 59,
    "kill": 62, "creat": 85, "ptrace": 101, "setuid": 105, "setgid": 106,
    "setreuid": 113, "setregid": 114, "setgroups": 116, "setresuid": 117, "setresgid": 119,
    "setfsuid": 122, "setfsgid": 123, "capset": 126, "rt_sigqueueinfo": 129, "uselib": 134,
    "tkill": 200, "tgkill": 234, "openat": 257, "rt_tgsigqueueinfo": 297,
    "open_by_handle_at": 304, "process_vm_readv": 310, "process_vm_writev": 311,
    "execveat": 322, "accept4": 288, "pidfd_send_signal": 424, "io_uring_setup": 425,
    "clone3": 435, "openat2": 437, "pidfd_getfd": 438, "unshare": 272, "setns": 308,
    "chroot": 161, "pivot_root": 155,
    "rename": 82, "mkdir": 83, "mkdirat": 258, "renameat": 264, "renameat2": 316,
}
NAMES: dict[int, str] = {nr: name for name, nr in SYSCALLS.items()}

# Syscalls that are only interesting with PROT_EXEC in the protection argument (arg 2).
PROT_EXEC_FILTERED = frozenset({"mmap", "mprotect"})


_clock = time.perf_counter_ns


class SeccompError(OSError):
    """A seccomp operation failed; carries errno."""


def _raise(what: str) -> None:
    e = ctypes.get_errno()
    raise SeccompError(e, f"{what}: {os.strerror(e)}")


# --- filter -----------------------------------------------------------------

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06


def build_filter(names: Iterable[str]) -> bytes:
    """Classic BPF program: notify on ``names`` (mmap/mprotect only with PROT_EXEC).

    Any other architecture and the x32 ABI are killed: a filter that only knows
    x86_64 numbers must not let another ABI through unmediated.
    """
    plain = sorted({SYSCALLS[n] for n in names if n not in PROT_EXEC_FILTERED})
    prot = sorted({SYSCALLS[n] for n in names if n in PROT_EXEC_FILTERED})
    # Instructions as (code, jt-label|int, jf-label|int, k); labels resolved below.
    prog: list[tuple[int, int | str, int | str, int]] = [
        (_LD_W_ABS, 0, 0, 4),
        (_JEQ_K, 0, "kill", AUDIT_ARCH_X86_64),
        (_LD_W_ABS, 0, 0, 0),
        (_JGE_K, "kill", 0, X32_SYSCALL_BIT),
    ]
    # No second supervisor inside the domain: Linux already refuses a second listener in a
    # filter chain (EBUSY); refusing it here too keeps that independent of the kernel version.
    prog.append((_JEQ_K, "seccomp", 0, NR_SECCOMP))
    # userfaultfd could stall the orchestrator's reads of task memory: refused outright.
    prog.append((_JEQ_K, "eperm", 0, NR_USERFAULTFD))
    for nr in plain:
        prog.append((_JEQ_K, "notify", 0, nr))
    for nr in prot:
        prog.append((_JEQ_K, "prot", 0, nr))
    labels: dict[str, int] = {}
    prog.append((_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    labels["seccomp"] = len(prog)
    prog.append((_LD_W_ABS, 0, 0, 16 + 8 * 1))  # low 32 bits of args[1] (flags)
    prog.append((_JSET_K, "eperm", 0, SECCOMP_FILTER_FLAG_NEW_LISTENER))
    prog.append((_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    labels["prot"] = len(prog)  # classic BPF only jumps forward: notify comes after
    prog.append((_LD_W_ABS, 0, 0, 16 + 8 * 2))  # low 32 bits of args[2]
    prog.append((_JSET_K, "notify", 0, PROT_EXEC))
    prog.append((_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    labels["notify"] = len(prog)
    prog.append((_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF))
    labels["kill"] = len(prog)
    prog.append((_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS))
    labels["eperm"] = len(prog)
    prog.append((_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM))
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        jt_n = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf_n = labels[jf] - i - 1 if isinstance(jf, str) else jf
        if not (0 <= jt_n < 256 and 0 <= jf_n < 256):
            raise ValueError("seccomp filter too long for 8-bit jumps")
        out += struct.pack("=HBBI", code, jt_n, jf_n, k)
    return bytes(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(names: Iterable[str]) -> int:
    """Set no_new_privs and install the notify filter on the calling thread; return listener.

    Must run in the process to be supervised (normally a freshly forked child).
    """
    code = build_filter(names)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.addressof(buf))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _raise("prctl(PR_SET_NO_NEW_PRIVS)")
    # WAIT_KILLABLE_RECV (5.19+): once we have received a notification only a fatal
    # signal interrupts the wait, so an emulated call is not restarted behind our back.
    for flags in (SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                  SECCOMP_FILTER_FLAG_NEW_LISTENER):
        fd = _libc.syscall(ctypes.c_long(NR_SECCOMP), ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
                           ctypes.c_ulong(flags), ctypes.c_void_p(ctypes.addressof(prog)))
        if fd >= 0 or ctypes.get_errno() != errno.EINVAL:
            break
    if fd < 0:
        _raise("seccomp(SET_MODE_FILTER, NEW_LISTENER)")
    return int(fd)


# --- listener ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    """One mediated system call; ``pid`` is the thread id in the listener's pid namespace."""

    id: int
    pid: int
    nr: int
    arch: int
    args: tuple[int, int, int, int, int, int]

    @property
    def name(self) -> str:
        return NAMES.get(self.nr, str(self.nr))


_NOTIF = struct.Struct("=QII" + "iIQ" + "6Q")  # seccomp_notif, 80 bytes
_RESP = struct.Struct("=QqiI")  # seccomp_notif_resp, 24 bytes
_ADDFD = struct.Struct("=QIIII")  # seccomp_notif_addfd, 24 bytes


class Listener:
    """The supervisor's side of a seccomp notify filter (owns the fd)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._rbuf = ctypes.create_string_buffer(_NOTIF.size)
        self._rptr = ctypes.c_void_p(ctypes.addressof(self._rbuf))
        self._sbuf = ctypes.create_string_buffer(_RESP.size)
        self._sptr = ctypes.c_void_p(ctypes.addressof(self._sbuf))
        self._abuf = ctypes.create_string_buffer(_ADDFD.size)
        self._aptr = ctypes.c_void_p(ctypes.addressof(self._abuf))
        self._idbuf = ctypes.c_uint64(0)
        self._idptr = ctypes.c_void_p(ctypes.addressof(self._idbuf))
        # When the last answer was handed to the kernel: with SYNC_WAKE_UP the answer
        # ioctl itself runs the target, so decision latency is measured up to here.
        self.answered_ns = 0

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def set_sync_wakeup(self) -> bool:
        """Ask the kernel to wake the target on our CPU (cuts ~200 µs cross-core wake-ups)."""
        flags = ctypes.c_uint64(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
        rc = _libc.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                         ctypes.c_void_p(ctypes.addressof(flags)))
        return bool(rc == 0)

    def recv(self) -> Notification | None:
        """Receive one notification; None if it vanished (target died) or we were interrupted."""
        ctypes.memset(self._rbuf, 0, _NOTIF.size)
        if _libc.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_RECV, self._rptr) != 0:
            e = ctypes.get_errno()
            if e in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                return None
            raise SeccompError(e, f"NOTIF_RECV: {os.strerror(e)}")
        v = _NOTIF.unpack(self._rbuf.raw)
        return Notification(v[0], v[1], v[3], v[4], (v[6], v[7], v[8], v[9], v[10], v[11]))

    def id_valid(self, nid: int) -> bool:
        """True while the notifying task still waits (guards against pid reuse after reads)."""
        self._idbuf.value = nid
        return bool(_libc.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_ID_VALID, self._idptr) == 0)

    def _send(self, nid: int, val: int, error: int, flags: int) -> bool:
        self.answered_ns = _clock()
        _RESP.pack_into(self._sbuf, 0, nid, val, error, flags)
        if _libc.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SEND, self._sptr) != 0:
            e = ctypes.get_errno()
            if e == errno.ENOENT:  # the target was killed meanwhile
                return False
            raise SeccompError(e, f"NOTIF_SEND: {os.strerror(e)}")
        return True

    def allow(self, nid: int) -> bool:
        """Let the system call run as issued (CONTINUE)."""
        return self._send(nid, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)

    def deny(self, nid: int, err: int = errno.EPERM) -> bool:
        """Fail the system call with ``-err``."""
        return self._send(nid, 0, -err, 0)

    def reply(self, nid: int, val: int) -> bool:
        """Complete the system call with return value ``val`` (emulation)."""
        return self._send(nid, val, 0, 0)

    def addfd_send(self, nid: int, srcfd: int, *, cloexec: bool) -> int:
        """Install ``srcfd`` in the target and make it the syscall's result, atomically."""
        self.answered_ns = _clock()
        _ADDFD.pack_into(self._abuf, 0, nid, SECCOMP_ADDFD_FLAG_SEND, srcfd, 0,
                         os.O_CLOEXEC if cloexec else 0)
        rc = _libc.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_ADDFD, self._aptr)
        if rc < 0:
            e = ctypes.get_errno()
            raise SeccompError(e, f"NOTIF_ADDFD: {os.strerror(e)}")
        return int(rc)


def default_syscalls() -> Sequence[str]:
    """Everything the orchestrator mediates: every equivalent twin of each modeled call."""
    return tuple(SYSCALLS)
