"""The compiled SHA-256 and its hashlib fallback give hashlib's answers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semtrust.model import digest
from tests import vectors

IMPLEMENTATIONS: list[Callable[..., bytes]] = [digest.hashlib_sha256]
if digest.COMPILED:
    IMPLEMENTATIONS.append(digest.sha256)


def test_extension_is_built() -> None:
    if not digest.COMPILED:
        reason = ("semtrust.model._sha256 is not built (it needs gcc, the Python headers and "
                  "libssl-dev; scripts/setup.sh installs them); modeling uses hashlib")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert digest.sha256 is not digest.hashlib_sha256


@pytest.mark.parametrize("sha256", IMPLEMENTATIONS)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_equals_hashlib_of_the_concatenation(sha256: Callable[..., bytes],
                                             parts: list[bytes]) -> None:
    assert sha256(*parts) == hashlib.sha256(b"".join(parts)).digest()


@pytest.mark.parametrize("sha256", IMPLEMENTATIONS)
def test_block_boundaries_and_large_input(sha256: Callable[..., bytes]) -> None:
    # lengths around the 64-byte block and the 55-byte padding edge, split anywhere
    for n in (0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1 << 20):
        data = bytes(i % 251 for i in range(n))
        want = hashlib.sha256(data).digest()
        assert sha256(data) == want
        assert sha256(data[: n // 3], data[n // 3:], b"") == want


@pytest.mark.parametrize("sha256", IMPLEMENTATIONS)
@pytest.mark.parametrize("bad", ["text", bytearray(b"x"), memoryview(b"x"), 1, None])
def test_refuses_anything_but_bytes(sha256: Callable[..., bytes], bad: object) -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        sha256(b"ok", bad)


@pytest.mark.parametrize("sha256", IMPLEMENTATIONS)
def test_bytes_subclasses_hash_as_their_bytes(sha256: Callable[..., bytes]) -> None:
    class Tagged(bytes):
        pass

    assert sha256(Tagged(b"abc")) == hashlib.sha256(b"abc").digest()


def test_vectors_through_the_fallback() -> None:
    """The whole modeling path, with the extension unimportable, still meets the vectors."""
    script = """
import json, sys
sys.modules["semtrust.model._sha256"] = None  # makes the import fail
from semtrust.model import digest
from semtrust.events.reader import read_records
from semtrust.events.record import Aggregate
from semtrust.model.tma import TMA
out = {"compiled": digest.COMPILED}
for name in sys.argv[1:]:
    tma = TMA()
    points = []
    for _, rec in read_records(name):
        if isinstance(rec, Aggregate):
            tma.set_aggregate(rec.value)
        else:
            points.append(tma.update(rec).coefficient.hex())
    out[name] = [points, tma.measurement.hex(), tma.state().hex()]
print(json.dumps(out))
"""
    names = [str(vectors.path(n)) for n in vectors.trajectories()]
    proc = subprocess.run([sys.executable, "-c", script, *names], capture_output=True,
                          text=True, check=True)
    got = json.loads(proc.stdout)
    assert got.pop("compiled") is False
    for name, (points, measurement, state) in got.items():
        short = os.path.basename(name)
        assert points == vectors.expected_coefficients(short)
        assert measurement == vectors.summary(short)["measurement"]
        assert state == vectors.summary(short)["state"]
