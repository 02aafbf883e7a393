"""Bundle handling: OCI config validation and the container's seccomp profile (no root)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from semtrust.errors import InputError
from semtrust.orchestrator import syscalls as table
from semtrust.orchestrator.bundle import inject_seccomp_notify, load_bundle, runtime_config
from semtrust.orchestrator.container import container_profile, notify_syscalls
from semtrust.orchestrator.container.profile import complement_blocks


def _write(tmp: Path, cfg: Any) -> Path:
    b = tmp / "b"
    (b / "rootfs").mkdir(parents=True)
    (b / "config.json").write_text(json.dumps(cfg) if not isinstance(cfg, str) else cfg)
    return b


GOOD = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/"},
        "mounts": [{"destination": "/data", "type": "bind", "source": "data",
                    "options": ["rbind"]}]}


def test_good_bundle_loads(tmp_path: Path) -> None:
    b = load_bundle(_write(tmp_path, GOOD))
    assert b.rootfs == (tmp_path / "b" / "rootfs").resolve()


@pytest.mark.parametrize(("cfg", "field"), [
    ({**GOOD, "ociVersion": 1}, "ociVersion"),
    ({k: v for k, v in GOOD.items() if k != "process"}, "process"),
    ({**GOOD, "process": {"args": [], "cwd": "/"}}, "process.args"),
    ({**GOOD, "process": {"args": ["sh"], "cwd": "rel"}}, "process.cwd"),
    ({**GOOD, "root": {}}, "root.path"),
    ({**GOOD, "annotations": {"a": 1}}, "annotations"),
    ({**GOOD, "linux": {"seccomp": {}}}, "linux.seccomp"),
])
def test_not_oci_names_the_field(tmp_path: Path, cfg: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as ei:
        load_bundle(_write(tmp_path, cfg))
    assert ei.value.field == field
    assert ei.value.source and ei.value.source.endswith("config.json")


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(InputError) as ei:
        load_bundle(_write(tmp_path, '{\n "ociVersion": "1",\n oops\n}'))
    assert ei.value.line == 3


def test_profile_without_seccomp_notifies_the_list() -> None:
    prof = inject_seccomp_notify(None, ["execve", "connect"], "/run/x.sock")
    assert prof["defaultAction"] == "SCMP_ACT_ALLOW"
    assert prof["listenerPath"] == "/run/x.sock"
    assert prof["syscalls"] == [{"names": ["execve", "connect"], "action": "SCMP_ACT_NOTIFY"}]


def test_existing_profile_is_only_narrowed() -> None:
    engine = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": [
        {"names": ["read", "execve", "mmap", "socketcall"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"},
    ]}
    prof = container_profile(engine, "/l")
    by = [(tuple(r["names"]), r["action"], json.dumps(r.get("args"))) for r in prof["syscalls"]]
    allowed = {n for r in prof["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
               for n in r["names"]}
    assert "read" in allowed and "write" not in allowed  # the engine refuses write
    assert (("execve",), "SCMP_ACT_NOTIFY", "null") in by
    # conditional allow -> the same condition, notified
    assert any(n == ("clone",) and a == "SCMP_ACT_NOTIFY" and "2114060288" in c
               for n, a, c in by)
    # a refused call stays refused (errno 1 is the engine's default: no rule needed)
    assert not any(n == ("ptrace",) for n, _a, _c in by)
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO" and prof["defaultErrnoRet"] == 1
    assert not any("socketcall" in n for n, _, _ in by)  # not an x86_64 call
    # mmap: notified only with PROT_EXEC, and still allowed without it
    mm = [r for r in prof["syscalls"] if r["names"] == ["mmap"]]
    assert {r["action"] for r in mm} == {"SCMP_ACT_NOTIFY", "SCMP_ACT_ALLOW"}
    assert engine["syscalls"][0]["names"] == ["read", "execve", "mmap", "socketcall"]


def test_profile_is_the_table() -> None:
    """Every table entry has its class in the profile; unknown numbers are refused."""
    prof = container_profile(None, "/l")
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO"
    assert prof["defaultErrnoRet"] == table.UNKNOWN_ERRNO
    assert prof["architectures"] == ["SCMP_ARCH_X86_64"]  # x32 and i386 are killed
    actions: dict[str, set[str]] = {}
    for r in prof["syscalls"]:
        for n in r["names"]:
            actions.setdefault(n, set()).add(r["action"])
    for e in table.BY_NR.values():
        got = actions.get(e.name, set())
        if e.cls == table.INERT:
            assert got == {"SCMP_ACT_ALLOW"}, e.name
        elif e.cls == table.REFUSED and e.in_kernel:
            assert "SCMP_ACT_NOTIFY" not in got, e.name
        else:
            assert "SCMP_ACT_NOTIFY" in got, e.name
            assert ("SCMP_ACT_ALLOW" in got) == bool(e.when), e.name


@pytest.mark.skipif(ctypes.util.find_library("seccomp") is None, reason="libseccomp")
def test_profile_compiled_by_libseccomp_answers_like_the_table() -> None:
    """Compiled as runc compiles it (libseccomp), in a child: each call gets the class the
    table gives its arguments, on the low 32 bits where the kernel reads an int."""
    prof = container_profile(None, "/l")
    nr = table.NUMBERS
    calls: list[tuple[str, int, tuple[int, ...], str]] = [
        ("fcntl F_SETOWN", nr["fcntl"], (0, 8, 0), "notify"),
        ("fcntl F_SETOWN, high bits set", nr["fcntl"], (0, 8 | 1 << 32, 0), "notify"),
        ("fcntl F_SETSIG", nr["fcntl"], (0, 10, 0), "notify"),
        ("fcntl F_GETFD", nr["fcntl"], (0, 1, 0), "kernel"),
        ("fcntl F_GETFD, high bits set", nr["fcntl"], (0, 1 | 5 << 32, 0), "kernel"),
        ("mmap PROT_READ", nr["mmap"], (0, 4096, 1, 0x22, (1 << 64) - 1, 0), "kernel"),
        ("mmap PROT_EXEC", nr["mmap"], (0, 4096, 5, 0x22, (1 << 64) - 1, 0), "notify"),
        ("ioctl TIOCSTI", nr["ioctl"], (0, 0x5412, 0), "notify"),
        ("ioctl TIOCGWINSZ", nr["ioctl"], (0, 0x5413, 0), "kernel"),
        ("prctl PR_SET_DUMPABLE", nr["prctl"], (4, 0, 0, 0, 0), "notify"),
        ("prctl PR_SET_NAME", nr["prctl"], (15, 0, 0, 0, 0), "kernel"),
        ("kill", nr["kill"], (0, 0), "notify"),
        ("bpf (refused by the mediator)", nr["bpf"], (0, 0, 0), "notify"),
        ("userfaultfd (refused in the kernel)", nr["userfaultfd"], (0,), "EPERM"),
        ("seccomp NEW_LISTENER", nr["seccomp"], (1, 8, 0), "EPERM"),
        ("unknown number", 400, (), "ENOSYS"),
        ("number above the table", table.MAX_KNOWN_NR + 40, (), "ENOSYS"),
        ("getpid", nr["getpid"], (), "kernel"),
    ]
    got = _run_compiled(prof, [(n, a) for _l, n, a, _w in calls])
    for (label, _n, _a, want), (ret, err) in zip(calls, got, strict=True):
        if want == "notify":
            assert err == _MARK, label
        elif want == "kernel":
            assert err not in (_MARK, errno.ENOSYS), label
        else:
            assert ret == -1 and err == getattr(errno, want), label


_MARK = 200  # the errno that stands for SCMP_ACT_NOTIFY in the test child
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}


class _Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64),
                ("b", ctypes.c_uint64)]


def _act(action: str, err: int | None) -> int:
    if action == "SCMP_ACT_ALLOW":
        return 0x7FFF0000
    if action == "SCMP_ACT_NOTIFY":
        return 0x00050000 | _MARK
    assert action == "SCMP_ACT_ERRNO"
    return 0x00050000 | (1 if err is None else err)


def _run_compiled(prof: dict[str, Any], calls: list[tuple[int, tuple[int, ...]]]
                  ) -> list[tuple[int, int]]:
    """Load ``prof`` with libseccomp in a forked child (notify -> errno _MARK), make the
    calls there, return (ret, errno) of each."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"), use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            ctx = ctypes.c_void_p(lib.seccomp_init(ctypes.c_uint32(
                _act(prof["defaultAction"], prof.get("defaultErrnoRet")))))
            for rule in prof["syscalls"]:
                act = _act(rule["action"], rule.get("errnoRet"))
                for name in rule["names"]:
                    n = lib.seccomp_syscall_resolve_name(name.encode())
                    if n < 0:
                        continue  # runc ignores names libseccomp does not know
                    args = rule.get("args") or []
                    arr = (_Cmp * max(1, len(args)))(*[
                        _Cmp(a["index"], _OPS[a["op"]], a["value"], a.get("valueTwo", 0))
                        for a in args])
                    if lib.seccomp_rule_add_array(ctx, ctypes.c_uint32(act), n, len(args),
                                                  arr) != 0:
                        os._exit(3)
            if lib.seccomp_load(ctx) != 0:
                os._exit(4)
            out = []
            for n, args in calls:
                ctypes.set_errno(0)
                ret = libc.syscall(ctypes.c_long(n), *[ctypes.c_ulong(x) for x in args])
                out.append(f"{ret} {ctypes.get_errno() if ret < 0 else 0}")
            os.write(w, ("\n".join(out)).encode())
            os._exit(0)
        finally:
            os._exit(5)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    res = [ln.split() for ln in data.decode().splitlines()]
    return [(int(a), int(b)) for a, b in res]


def test_complement_blocks_cover_exactly_the_rest() -> None:
    values = {8, 10, 15}
    blocks = complement_blocks(values, bits=8)
    for x in range(256):
        hits = sum(1 for m, v in blocks if x & m == v)
        assert hits == (0 if x in values else 1), x


def test_file_opens_are_notified() -> None:
    """Opens reach the mediator, which emulates them (the object checked is the object
    opened)."""
    names = set(notify_syscalls())
    assert {"open", "openat", "openat2", "creat"} <= names
    assert {"execve", "connect", "kill", "ptrace", "setuid", "mount"} <= names


def test_runtime_config_copies_and_rewrites(tmp_path: Path) -> None:
    b = load_bundle(_write(tmp_path, GOOD))
    cfg = runtime_config(b, rootfs="/run/x/rootfs", listener_path="/run/x/l.sock",
                         notify_syscalls=["execve"], cgroups_path="/semtrust/x",
                         args=["true"], terminal=False)
    assert cfg["root"]["path"] == "/run/x/rootfs"
    assert cfg["process"]["args"] == ["true"] and cfg["process"]["terminal"] is False
    assert cfg["linux"]["cgroupsPath"] == "/semtrust/x"
    assert cfg["mounts"][0]["source"] == str(b.path / "data")
    assert b.config == GOOD  # the bundle's own config is not modified
