"""``--output`` is checked before the workload, written atomically, never lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from semtrust.errors import InputError
from semtrust.orchestrator import output


def test_check_writable(tmp_path: Path) -> None:
    output.check_writable(str(tmp_path / "m"))
    assert list(tmp_path.iterdir()) == []  # the probe is gone
    with pytest.raises(InputError, match="cannot create files") as err:
        output.check_writable(str(tmp_path / "missing" / "m"))
    assert err.value.field == "--output"
    with pytest.raises(InputError, match="is a directory"):
        output.check_writable(str(tmp_path))


def test_write_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.write_text("old\n")
    assert output.write_output(str(target), "new\n") == str(target)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_failed_write_goes_to_a_private_fallback(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    gone = tmp_path / "gone"
    with pytest.raises(OSError, match="saved to") as err:
        output.write_output(str(gone / "m"), "state x\n")
    assert isinstance(err.value, output.OutputError) and err.value.fallback is not None
    spare = Path(err.value.fallback)
    assert spare.parent == tmp_path / "state" / "semtrust"
    assert spare.read_text() == "state x\n"
    assert spare.stat().st_mode & 0o777 == 0o600
    assert str(spare) in (err.value.strerror or "")


def test_an_exception_mid_write_removes_the_temporary(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        output.write_output(str(tmp_path / "m"), "x\n")
    assert list(tmp_path.iterdir()) == []


def test_fallback_dir_without_a_usable_state_dir(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))  # not a directory
    assert output.fallback_dir() == Path("/tmp")
