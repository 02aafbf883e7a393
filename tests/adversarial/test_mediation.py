"""Attacks on complete mediation: each forbidden effect must not happen under
``--enforce`` and must leave a record (forensics or a fault)."""

from __future__ import annotations

from pathlib import Path

from tests.adversarial.conftest import Attack


def test_pkey_mprotect_exec_denied(attacks: Attack) -> None:
    o = attacks.run("pkey")
    assert "EXECUTED" not in o.run.stdout
    assert "pkey_mprotect -1 errno 1" in o.run.stdout, o.run.stdout
    assert '"mmap_file"' in o.forensics and '"prot": "5"' in o.forensics


def test_personality_read_implies_exec_refused(attacks: Attack) -> None:
    o = attacks.run("personality")
    assert "EXECUTABLE" not in o.run.stdout, o.run.stdout
    assert "personality -1 errno 1" in o.run.stdout
    assert "personality" in o.run.stderr  # the fault names the call


def test_shmat_exec_denied(attacks: Attack) -> None:
    o = attacks.run("shmat")
    assert "SHMEXEC" not in o.run.stdout, o.run.stdout
    assert "shm_shmat" in o.forensics


def test_mprotect_span_describes_every_mapping(attacks: Attack) -> None:
    o = attacks.run("span")
    assert "SPAN_OK" not in o.run.stdout, o.run.stdout
    assert "mprotect -1 errno 1" in o.run.stdout
    assert '"mmap_file"' in o.forensics


def test_open_tree_magic_link_read_denied(attacks: Attack, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("TOPSECRET\n")
    secret.chmod(0o600)
    o = attacks.run("open_tree", str(secret))
    assert "TOPSECRET" not in o.run.stdout, o.run.stdout
    assert str(secret) in o.forensics


def test_sigio_cannot_kill_holder_or_keeper(attacks: Attack) -> None:
    o = attacks.run("sigio")
    out = o.run.stdout
    assert "setown 1 errno 1" in out and "setown 2 errno 1" in out, out
    assert "setown_ex -1 errno 1" in out
    assert "done" in out and o.run.returncode == 0, o.run.stderr
    assert "SIGIO owner" in o.run.stderr


def test_mmap_descriptor_swap_is_caught(attacks: Attack) -> None:
    o = attacks.run("race")
    assert "RACE_WON" not in o.run.stdout
    if "done" not in o.run.stdout:  # the swap happened and the process was killed
        assert "not checked" in o.run.stderr, o.run.stderr


def test_future_syscalls_refused_and_recorded(attacks: Attack) -> None:
    o = attacks.run("future")
    assert "470 -1 errno 38" in o.run.stdout and "1000 -1 errno 38" in o.run.stdout
    assert "syscall_470" in o.run.stderr and "unknown to the table" in o.run.stderr


def test_unlink_outside_model_denied(attacks: Attack, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    o = attacks.run("unlink", str(victim))
    assert victim.exists()
    assert "unlink -1 errno 1" in o.run.stdout, o.run.stdout
    assert "inode_unlink" in o.forensics and str(victim) in o.forensics
