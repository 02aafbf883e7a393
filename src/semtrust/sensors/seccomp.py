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

from semtrust.orchestrator import syscalls as _table

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

# Every x86_64 syscall name the table knows, with its number (derived from the table).
SYSCALLS: dict[str, int] = {name: e.nr for name, e in _table.BY_NAME.items()}
NAMES: dict[int, str] = {nr: name for name, nr in SYSCALLS.items()}

# Syscalls that are only interesting with PROT_EXEC in the protection argument (arg 2).
PROT_EXEC_FILTERED = frozenset({"mmap", "mprotect"})

# What the container profile notifies (its mediator predates the table's full policy;
# see ``notify_profile_rules`` for the table-driven rules).
_CONTAINER_NOTIFY = (
    "open", "mmap", "mprotect", "socket", "connect", "accept", "bind", "listen", "clone",
    "fork", "vfork", "execve", "kill", "creat", "ptrace", "setuid", "setgid", "setreuid",
    "setregid", "setgroups", "setresuid", "setresgid", "setfsuid", "setfsgid", "capset",
    "rt_sigqueueinfo", "uselib", "tkill", "tgkill", "openat", "rt_tgsigqueueinfo",
    "open_by_handle_at", "process_vm_readv", "process_vm_writev", "execveat", "accept4",
    "pidfd_send_signal", "io_uring_setup", "clone3", "openat2", "pidfd_getfd", "unshare",
    "setns", "chroot", "pivot_root",
)


_clock = time.perf_counter_ns


class SeccompError(OSError):
    """A seccomp operation failed; carries errno."""


def _raise(what: str) -> None:
    e = ctypes.get_errno()
    raise SeccompError(e, f"{what}: {os.strerror(e)}")


# --- filter -----------------------------------------------------------------

_LD_W_ABS = 0x20
_JA = 0x05
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_ARG_LO = 16  # offsetof(struct seccomp_data, args): low 32 bits of args[i] at 16 + 8 i
MAX_INSNS = 4096

#: A leaf of the search tree: ("ret", value) or ("cond", syscall number).
Leaf = tuple[str, int]
#: (code, jt, jf, k) where jt/jf are a label or a relative offset, k a label for JA.
_Insn = tuple[int, int | str, int | str, int | str]


def _action(e: _table.Syscall) -> int:
    """What the filter does with a call of ``e`` whose conditions hold."""
    if e.cls == _table.INERT:
        return SECCOMP_RET_ALLOW
    if e.cls == _table.REFUSED and e.in_kernel:
        return SECCOMP_RET_ERRNO | e.errno
    return SECCOMP_RET_USER_NOTIF


def policy(names: Iterable[str] | None = None) -> dict[int, Leaf]:
    """Number -> leaf for every number the table names; others are notified (refused).

    ``names`` restricts mediation to those syscalls (everything else the table names is
    allowed, numbers it does not name too); the in-kernel refusals always hold. Only
    tests use a restricted policy; the domain runs the whole table.
    """
    wanted = None if names is None else set(names)
    out: dict[int, Leaf] = {}
    for e in _table.BY_NR.values():
        if wanted is not None and e.name not in wanted and not e.in_kernel:
            out[e.nr] = ("ret", SECCOMP_RET_ALLOW)
        elif e.when and _action(e) != SECCOMP_RET_ALLOW:
            out[e.nr] = ("cond", e.nr)
        else:
            out[e.nr] = ("ret", _action(e))
    return out


def _ranges(pol: dict[int, Leaf], default: Leaf) -> list[tuple[int, Leaf]]:
    """Contiguous ranges of equal leaves over [0, X32_SYSCALL_BIT): (start, leaf)."""
    out: list[tuple[int, Leaf]] = []
    top = max(pol) + 1 if pol else 0
    for nr in range(top):
        leaf = pol.get(nr, default)
        if leaf[0] == "cond" or not out or out[-1][1] != leaf:
            out.append((nr, leaf))
    if not out or out[-1][1] != default:
        out.append((top, default))
    return out


def _emit_leaf(prog: list[_Insn | str], leaf: Leaf, labels: list[int]) -> None:
    if leaf[0] == "ret":
        prog.append((_RET_K, 0, 0, leaf[1]))
        return
    e = _table.BY_NR[leaf[1]]
    labels[0] += 1
    hit = f"hit{labels[0]}"
    for cond in e.when:
        if cond.op == "nonzero64":
            prog.append((_LD_W_ABS, 0, 0, _ARG_LO + 8 * cond.arg))
            prog.append((_JEQ_K, 0, hit, 0))
            prog.append((_LD_W_ABS, 0, 0, _ARG_LO + 8 * cond.arg + 4))
            prog.append((_JEQ_K, 0, hit, 0))
            continue
        prog.append((_LD_W_ABS, 0, 0, _ARG_LO + 8 * cond.arg))
        prog.append((_JSET_K if cond.op == "mask" else _JEQ_K, hit, 0, cond.value))
    prog.append((_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    prog.append(hit)
    prog.append((_RET_K, 0, 0, _action(e)))


def _emit_tree(prog: list[_Insn | str], ranges: list[tuple[int, Leaf]], lo: int, hi: int,
               labels: list[int]) -> None:
    """A balanced search over ranges[lo:hi] (the accumulator holds the number)."""
    if hi - lo == 1:
        _emit_leaf(prog, ranges[lo][1], labels)
        return
    mid = (lo + hi) // 2
    labels[0] += 1
    right = f"r{labels[0]}"
    prog.append((_JGE_K, right, 0, ranges[mid][0]))
    _emit_tree(prog, ranges, lo, mid, labels)
    prog.append(right)
    _emit_tree(prog, ranges, mid, hi, labels)


def _assemble(prog: list[_Insn | str]) -> bytes:
    """Resolve labels; a conditional jump further than 8 bits goes through a JA."""
    while True:
        pos: dict[str, int] = {}
        n = 0
        for item in prog:
            if isinstance(item, str):
                pos[item] = n
            else:
                n += 1
        far = -1
        i = 0
        for idx, item in enumerate(prog):
            if isinstance(item, str):
                continue
            code, jt, jf, _k = item
            if code & 0x07 == 0x05 and code != _JA:
                for t in (jt, jf):
                    if isinstance(t, str) and not 0 <= pos[t] - i - 1 < 256:
                        far = idx
            i += 1
            if far >= 0:
                break
        if far < 0:
            break
        insn = prog[far]
        assert not isinstance(insn, str)
        code, jt, jf, k = insn
        repl: list[_Insn | str] = []
        if isinstance(jt, str) and isinstance(jf, str):
            repl = [(code, 0, 1, k), (_JA, 0, 0, jt), (_JA, 0, 0, jf)]
        elif isinstance(jt, str):  # false falls through
            repl = [(code, 0, 1, k), (_JA, 0, 0, jt)]
        else:  # true falls through, false is far
            repl = [(code, 1, 0, k), (_JA, 0, 0, jf)]
        prog[far:far + 1] = repl
    out = bytearray()
    i = 0
    for item in prog:
        if isinstance(item, str):
            continue
        code, jt, jf, k = item
        jt_n = pos[jt] - i - 1 if isinstance(jt, str) else jt
        jf_n = pos[jf] - i - 1 if isinstance(jf, str) else jf
        k_n = pos[k] - i - 1 if isinstance(k, str) else k
        out += struct.pack("=HBBI", code, jt_n, jf_n, k_n)
        i += 1
    if i > MAX_INSNS:
        raise ValueError(f"seccomp filter too long: {i} instructions")
    return bytes(out)


def build_filter(names: Iterable[str] | None = None) -> bytes:
    """Classic BPF program for the syscall table (or a subset: see ``policy``).

    Any other architecture and the x32 ABI are killed: a filter that only knows
    x86_64 numbers must not let another ABI through unmediated. Then a balanced
    binary search over the syscall number (8-9 comparisons) ends in the entry's
    action: ALLOW for inert calls, the argument checks of conditional entries,
    USER_NOTIF for mediated and refused ones (and for any number the table does not
    name), ERRNO for the refusals the kernel answers itself.
    """
    default: Leaf = ("ret", SECCOMP_RET_USER_NOTIF if names is None else SECCOMP_RET_ALLOW)
    ranges = _ranges(policy(names), default)
    prog: list[_Insn | str] = [
        (_LD_W_ABS, 0, 0, 4),
        (_JEQ_K, 0, "kill", AUDIT_ARCH_X86_64),
        (_LD_W_ABS, 0, 0, 0),
        (_JGE_K, "kill", 0, X32_SYSCALL_BIT),
    ]
    _emit_tree(prog, ranges, 0, len(ranges), [0])
    prog.append("kill")
    prog.append((_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS))
    return _assemble(prog)


def run_filter(code: bytes, nr: int, args: Sequence[int] = (0,) * 6,
               arch: int = AUDIT_ARCH_X86_64) -> int:
    """Interpret a classic BPF seccomp program (the subset ``build_filter`` emits)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * 6)[:6])
    insns = [struct.unpack_from("=HBBI", code, i) for i in range(0, len(code), 8)]
    acc = 0
    pc = 0
    while True:
        c, jt, jf, k = insns[pc]
        pc += 1
        if c == _LD_W_ABS:
            acc = int(struct.unpack_from("=I", data, k)[0])
        elif c == _RET_K:
            return int(k)
        elif c == _JA:
            pc += k
        elif c == _JEQ_K:
            pc += jt if acc == k else jf
        elif c == _JGE_K:
            pc += jt if acc >= k else jf
        elif c == _JSET_K:
            pc += jt if acc & k else jf
        else:
            raise ValueError(f"unexpected BPF instruction {c:#x}")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(names: Iterable[str] | None = None) -> int:
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
        return _table.name_of(self.nr)


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
    """What the container profile notifies (the process mode runs the whole table)."""
    return _CONTAINER_NOTIFY
