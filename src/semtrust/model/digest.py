"""SHA-256 over the concatenation of byte strings: the one hash of the modeling math.

Every coefficient, measurement extension and state step is a SHA-256 of a few
short strings concatenated. ``sha256(a, b, c)`` computes it in one call of the
compiled ``_sha256`` module, about 4x cheaper than ``hashlib`` for inputs this
short and without a temporary concatenation. Where that module was not built,
``sha256`` is ``hashlib_sha256``; ``tests/unit/test_digest.py`` holds the two to
the same answers.
"""

from __future__ import annotations

import hashlib

__all__ = ["COMPILED", "hashlib_sha256", "sha256"]

_hashlib_sha256 = hashlib.sha256


def hashlib_sha256(*parts: bytes) -> bytes:
    """The SHA-256 digest of the concatenation of ``parts``, through hashlib."""
    for part in parts:
        if not isinstance(part, bytes):
            raise TypeError(f"sha256() argument must be bytes, not {type(part).__name__}")
    return _hashlib_sha256(b"".join(parts)).digest()


try:
    from semtrust.model._sha256 import sha256
except ImportError:  # a source tree without the extension: same answers, slower
    sha256 = hashlib_sha256
    COMPILED = False
else:
    COMPILED = True
