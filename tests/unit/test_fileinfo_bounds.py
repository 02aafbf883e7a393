"""Hashing is bounded (size, cancellation) and large files are hashed aside."""

from __future__ import annotations

import errno
import hashlib
import os
import select
import threading
from pathlib import Path

import pytest

from semtrust.sensors.fileinfo import DigestPending, FileInfo


def _file(tmp: Path, size: int) -> tuple[int, os.stat_result, bytes]:
    p = tmp / "data"
    data = os.urandom(1 << 16) * (size >> 16)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    return fd, os.fstat(fd), hashlib.sha256(data).digest()


def test_too_large_is_refused(tmp_path: Path) -> None:
    fd, st, _ = _file(tmp_path, 1 << 20)
    fi = FileInfo()
    fi.max_bytes = 1000
    with pytest.raises(OSError) as exc:
        fi.digest(fd, st, 0)
    assert exc.value.errno == errno.EFBIG
    os.close(fd)


def test_cancel_stops_hashing(tmp_path: Path) -> None:
    fd, st, _ = _file(tmp_path, 4 << 20)
    fi = FileInfo()
    fi.cancel = threading.Event()
    fi.cancel.set()
    with pytest.raises(OSError) as exc:
        fi.digest(fd, st, 0)
    assert exc.value.errno == errno.EINTR
    os.close(fd)


def test_large_file_hashed_on_a_worker(tmp_path: Path) -> None:
    fd, st, want = _file(tmp_path, 4 << 20)
    fi = FileInfo()
    fi.async_over = 1 << 20
    with pytest.raises(DigestPending):
        fi.digest(fd, st, 0)
    p = select.poll()
    p.register(fi.wakeup, select.POLLIN)
    while not fi._jobs[next(iter(fi._jobs))].done:
        p.poll(1000)
    fi.drain()
    assert fi.digest(fd, st, 0) == want
    assert not fi._jobs  # the worker slot is free again
    fi.close()
    os.close(fd)


@pytest.mark.parametrize("size", [0, 1, 4095, (1 << 20) - 1, 1 << 20, (1 << 20) + 7])
def test_one_read_digest_equals_the_chunked_one(tmp_path: Path, size: int) -> None:
    """Small files are read in one go; the digest is the content's, as chunk by chunk."""
    from semtrust.sensors.fileinfo import _hash_fd

    f = tmp_path / "f"
    data = os.urandom(size)
    f.write_bytes(data)
    fd = os.open(f, os.O_RDONLY)
    try:
        want = hashlib.sha256(data).digest()
        assert _hash_fd(fd, size=size) == want
        assert _hash_fd(fd) == want
        # The size seen at stat time is stale (the file grew, or shrank): still the
        # content that is there now.
        with open(f, "ab") as fp:
            fp.write(b"more")
        assert _hash_fd(fd, size=size) == hashlib.sha256(data + b"more").digest()
        os.truncate(f, size // 2)
        assert _hash_fd(fd, size=size) == hashlib.sha256(data[:size // 2]).digest()
    finally:
        os.close(fd)
