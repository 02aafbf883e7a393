"""Writing what a domain learned: checked before the workload starts, atomic, never lost.

A learning run can take hours; a model that cannot be written at the end is
work thrown away. So ``--output`` is probed before the workload starts (a file
is created and removed in its directory), the final write goes through a
temporary file in the same directory and a rename (a reader never sees half a
model, and no temporary file is left behind, whatever is raised), and when that
still fails the data is written to a private fallback file whose name the error
gives.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from semtrust.errors import InputError

__all__ = ["OutputError", "check_writable", "fallback_dir", "write_output"]


class OutputError(OSError):
    """The output could not be written where asked; ``strerror`` says where it went."""

    def __init__(self, errno_: int, message: str, fallback: str | None) -> None:
        super().__init__(errno_, message)
        self.fallback = fallback


def check_writable(path: str, *, option: str = "--output") -> None:
    """Raise InputError unless a file can be created next to ``path`` and renamed onto it."""
    p = Path(path)
    if p.is_dir():
        raise InputError("is a directory", source=path, field=option)
    directory = p.parent
    probe = directory / f".{p.name}.probe{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise InputError(f"cannot create files in {directory}: {exc.strerror}",
                         source=path, field=option) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def fallback_dir() -> Path:
    """$XDG_STATE_HOME/semtrust, ~/.local/state/semtrust, or /tmp (first that works)."""
    state = os.environ.get("XDG_STATE_HOME") or (
        os.path.join(os.environ["HOME"], ".local", "state") if os.environ.get("HOME") else "")
    if state:
        d = Path(state) / "semtrust"
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            if os.access(d, os.W_OK | os.X_OK):
                return d
        except OSError:
            pass
    return Path("/tmp")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively and fill it; on any failure remove it again."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def write_output(path: str, text: str, *, what: str = "model") -> str:
    """Write ``text`` to ``path`` atomically; return the path written.

    On failure raise :class:`OutputError` after saving the data to a 0600 file in
    :func:`fallback_dir`, named in the message.
    """
    data = text.encode("utf-8", "surrogateescape")
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        _write_new(tmp, data, 0o644)
        try:
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path
    except OSError as exc:
        reason = exc.strerror or str(exc)
        errno_ = exc.errno or 0
    stamp = time.strftime("%Y%m%dT%H%M%S")
    spare = fallback_dir() / f"semtrust-{target.name or what}-{stamp}-{os.getpid()}"
    try:
        _write_new(spare, data, 0o600)
    except OSError as exc:
        raise OutputError(errno_, f"{reason}; saving the {what} to {spare} failed too "
                                  f"({exc.strerror}): it is lost", None) from None
    raise OutputError(errno_, f"{reason}; the {what} was saved to {spare} instead", str(spare))
