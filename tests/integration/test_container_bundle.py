"""Bundle handling: OCI config validation and the injected seccomp notify profile (no root)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from semtrust.errors import InputError
from semtrust.orchestrator.bundle import inject_seccomp_notify, load_bundle, runtime_config
from semtrust.orchestrator.container import notify_profile_rules, notify_syscalls


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
    engine = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
        {"names": ["read", "execve", "mmap"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"},
    ]}
    prof = notify_profile_rules(inject_seccomp_notify(engine, ["execve", "mmap", "clone",
                                                                "ptrace", "kill"], "/l"))
    by = [(tuple(r["names"]), r["action"], json.dumps(r.get("args"))) for r in prof["syscalls"]]
    assert (("read",), "SCMP_ACT_ALLOW", "null") in by
    assert (("execve",), "SCMP_ACT_NOTIFY", "null") in by
    # conditional allow -> the same condition, notified
    assert any(n == ("clone",) and a == "SCMP_ACT_NOTIFY" and "2114060288" in c
               for n, a, c in by)
    # a denied call stays denied; one the profile does not allow (kill) is not added
    assert (("ptrace",), "SCMP_ACT_ERRNO", "null") in by
    assert not any("kill" in n for n, _, _ in by)
    # mmap: notified only with PROT_EXEC, and still allowed without it
    mm = [r for r in prof["syscalls"] if r["names"] == ["mmap"]]
    assert {r["action"] for r in mm} == {"SCMP_ACT_NOTIFY", "SCMP_ACT_ALLOW"}
    assert engine["syscalls"][0]["names"] == ["read", "execve", "mmap"]  # input untouched


def test_file_opens_are_notified_for_routing() -> None:
    """Opens reach the mediator, which leaves those on marked mounts to fanotify."""
    names = set(notify_syscalls())
    assert {"open", "openat", "openat2", "creat"} <= names
    assert {"execve", "connect", "kill", "ptrace", "setuid"} <= names


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
