"""Fixtures for integration tests (real kernel mechanisms and services).

Owners append their own fixtures below, each in its own section.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from semtrust.attest.swtpm import SoftwareTpm, swtpm_available
from tests.integration.needs import need


# ---------------------------------------------------------------- swtpm
def _tpm_unavailable(reason: str) -> None:
    need(False, f"swtpm: {reason}")


def _need_swtpm() -> None:
    reason = swtpm_available()
    if reason is not None:
        _tpm_unavailable(reason)
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError as e:
        _tpm_unavailable(f"tpm2-pytss not importable: {e}")


@pytest.fixture(scope="session")
def swtpm() -> Iterator[SoftwareTpm]:
    """A private software TPM on a free loopback port, for the whole session."""
    _need_swtpm()
    with SoftwareTpm() as tpm:
        yield tpm


@pytest.fixture
def fresh_swtpm() -> Iterator[SoftwareTpm]:
    """A software TPM of its own, for tests that extend PCRs."""
    _need_swtpm()
    with SoftwareTpm() as tpm:
        yield tpm
