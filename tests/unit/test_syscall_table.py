"""The syscall table and the filter built from it.

The filter is checked twice: with a small classic-BPF interpreter over every
number 0..1023 (and the argument conditions), and in the kernel, installed in a
forked child whose calls are observed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from semtrust.orchestrator import syscalls as table
from semtrust.sensors import seccomp
from semtrust.sensors.seccomp import (
    AUDIT_ARCH_X86_64,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    SECCOMP_RET_USER_NOTIF,
    build_filter,
    run_filter,
)
from tests.integration.needs import need

HEADER = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
ROOT = Path(__file__).resolve().parents[2]


def _expected(nr: int, args: tuple[int, ...]) -> int:
    e = table.lookup(nr)
    if e is None:
        return SECCOMP_RET_USER_NOTIF
    if not e.applies(args) or e.cls == table.INERT:
        return SECCOMP_RET_ALLOW
    if e.cls == table.REFUSED and e.in_kernel:
        return SECCOMP_RET_ERRNO | e.errno
    return SECCOMP_RET_USER_NOTIF


def test_every_header_syscall_is_classified() -> None:
    need(HEADER.exists(), "linux-libc-dev not installed (it comes with libc6-dev)")
    names = dict(re.findall(r"#define __NR_(\w+) (\d+)", HEADER.read_text()))
    for name, nr in names.items():
        assert table.BY_NAME[name].nr == int(nr), name
    assert max(table.BY_NR) == table.MAX_KNOWN_NR


def test_each_entry_has_a_reason_and_mediated_names_an_event() -> None:
    for e in table.BY_NR.values():
        assert e.why and e.cls in (table.INERT, table.MEDIATED, table.REFUSED), e
        if e.cls == table.MEDIATED:
            assert e.family and e.event, e
        if e.cls == table.REFUSED:
            assert e.errno in (errno.EPERM, errno.ENOSYS), e


def test_interpreter_agrees_with_table_on_every_number() -> None:
    code = build_filter()
    probes = [(0,) * 6, (0, 0, 4, 0, 0, 0), (0x400000, 8, 0o100000, 0, 1, 0),
              (1, 8, 0, 0, 0, 0), (1 << 40, 15, 4, 0, 0, 0), (0, 10, 0, 0, 1 << 33, 0)]
    for nr in range(1024):
        for args in probes:
            assert run_filter(code, nr, args) == _expected(nr, args), (nr, args)


def test_argument_conditions() -> None:
    code = build_filter()
    nr = table.BY_NAME
    notify = SECCOMP_RET_USER_NOTIF
    assert run_filter(code, nr["mmap"].nr, (0, 4096, 1, 2, 3, 0)) == SECCOMP_RET_ALLOW
    assert run_filter(code, nr["mmap"].nr, (0, 4096, 5, 2, 3, 0)) == notify
    assert run_filter(code, nr["pkey_mprotect"].nr, (0, 4096, 4, 0, 0, 0)) == notify
    assert run_filter(code, nr["personality"].nr, (0x0400000, 0, 0, 0, 0, 0)) == notify
    assert run_filter(code, nr["personality"].nr, (0, 0, 0, 0, 0, 0)) == SECCOMP_RET_ALLOW
    assert run_filter(code, nr["shmat"].nr, (1, 0, 0o100000, 0, 0, 0)) == notify
    for cmd, want in ((8, notify), (10, notify), (15, notify), (1, SECCOMP_RET_ALLOW),
                      (4, SECCOMP_RET_ALLOW)):
        assert run_filter(code, nr["fcntl"].nr, (3, cmd, 0, 0, 0, 0)) == want, cmd
    # a 64-bit pointer with a zero low half is still a destination address
    assert run_filter(code, nr["sendto"].nr, (3, 0, 0, 0, 1 << 32, 0)) == notify
    assert run_filter(code, nr["sendto"].nr, (3, 0, 0, 0, 0, 0)) == SECCOMP_RET_ALLOW
    assert run_filter(code, nr["seccomp"].nr, (1, 8, 0, 0, 0, 0)) == \
        SECCOMP_RET_ERRNO | errno.EPERM
    assert run_filter(code, nr["seccomp"].nr, (1, 0, 0, 0, 0, 0)) == SECCOMP_RET_ALLOW


def test_foreign_arch_and_x32_killed_unknown_notified() -> None:
    code = build_filter()
    assert run_filter(code, 0, arch=0x40000003) == SECCOMP_RET_KILL_PROCESS
    assert run_filter(code, 0x40000000 | 1, arch=AUDIT_ARCH_X86_64) == SECCOMP_RET_KILL_PROCESS
    for nr in (470, 1000, 0x3FFFFFFF):
        assert run_filter(code, nr) == SECCOMP_RET_USER_NOTIF


def test_search_is_logarithmic() -> None:
    """An inert call costs a handful of comparisons, not a scan of the table."""
    code = build_filter()
    insns = [code[i:i + 8] for i in range(0, len(code), 8)]
    worst = 0
    for nr in range(1024):
        e = table.lookup(nr)
        if e is None or e.cls != table.INERT:
            continue
        # count executed instructions with a tracing copy of the interpreter
        steps = _steps(insns, nr)
        worst = max(worst, steps)
    assert worst <= 24, worst
    assert len(insns) > 256  # big enough that the JA trampolines are exercised


def _steps(insns: list[bytes], nr: int) -> int:
    import struct

    pc = acc = steps = 0
    while True:
        c, jt, jf, k = struct.unpack("=HBBI", insns[pc])
        pc += 1
        steps += 1
        if c == 0x20:
            acc = {4: AUDIT_ARCH_X86_64, 0: nr}.get(k, 0)
        elif c == 0x06:
            return steps
        elif c == 0x05:
            pc += k
        elif c == 0x15:
            pc += jt if acc == k else jf
        elif c == 0x35:
            pc += jt if acc >= k else jf
        elif c == 0x45:
            pc += jt if acc & k else jf


_CHILD = r"""
import ctypes, errno, os, sys
from semtrust.sensors import seccomp
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
code = seccomp.build_filter()
buf = ctypes.create_string_buffer(code, len(code))
prog = seccomp._SockFprog(len(code) // 8, ctypes.addressof(buf))
assert libc.prctl(38, 1, 0, 0, 0) == 0
# no listener: a USER_NOTIF answer without a listener is ENOSYS, so the observable
# outcome tells ALLOW (the call's own result), ERRNO and NOTIFY apart
rc = libc.syscall(ctypes.c_long(317), ctypes.c_ulong(1), ctypes.c_ulong(0),
                  ctypes.c_void_p(ctypes.addressof(prog)))
assert rc == 0, ctypes.get_errno()
def call(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return ctypes.get_errno() if r < 0 else 0
out = []
out.append(("getpid", libc.syscall(ctypes.c_long(39)) > 0))
out.append(("future470", call(470)))
out.append(("future1000", call(1000)))
out.append(("userfaultfd", call(323, 0)))
out.append(("io_uring_setup", call(425, 1, 0)))
out.append(("unlink", call(87, 0)))
out.append(("fcntl_getfl", call(72, 1, 3)))
out.append(("fcntl_setown", call(72, 1, 8, 1)))
print(repr(out))
"""


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                    reason="x86_64 Linux only")
def test_filter_in_the_kernel() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                       env=env, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    got = dict(eval(r.stdout.strip()))
    assert got["getpid"] is True  # inert: stays in the kernel
    assert got["fcntl_getfl"] == 0  # inert command of a mediated syscall
    # notified without a listener: the kernel answers ENOSYS
    assert got["future470"] == errno.ENOSYS
    assert got["future1000"] == errno.ENOSYS
    assert got["unlink"] == errno.ENOSYS
    assert got["fcntl_setown"] == errno.ENOSYS
    # refused in the kernel itself
    assert got["userfaultfd"] == errno.EPERM
    assert got["io_uring_setup"] == errno.ENOSYS
    assert ctypes.sizeof(seccomp._SockFprog) == 16


def test_readme_table_is_generated_from_the_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert table.readme_section(readme) == readme, \
        "README syscall table is stale: run scripts/syscall_table.py --write README.md"


def test_oci_rules_cover_every_notified_entry() -> None:
    rules = table.oci_rules(exclude=frozenset({"open", "openat"}))
    names = {r["names"][0] for r in rules}  # type: ignore[index]
    for e in table.BY_NR.values():
        if e.name in ("open", "openat"):
            assert e.name not in names
        else:
            assert (e.name in names) == (e.cls != table.INERT), e.name
    fcntl = [r for r in rules if r["names"] == ["fcntl"]]
    assert len(fcntl) == 3 and all(r["action"] == "SCMP_ACT_NOTIFY" for r in fcntl)
    assert {"names": ["userfaultfd"], "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.EPERM} in rules
