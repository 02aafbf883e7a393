"""Parsed keys and models, cached by their content.

Parsing a PEM key, or a signed model and its signature, costs more than the
check it serves; a fleet verifier meets the same few thousand keys and few models
over and over. Every entry is found by the exact text it was parsed from (for a
model: its digest together with the workload's pinned signing key), and that
text is read from the database for every request and every batch: a host
re-keyed, an AK changed, a model removed or a workload's signing key replaced is
a different text, so nothing stale can be used — the cache only saves the parse.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from semtrust.attest.attestation import PublicKey, parse_public_key
from semtrust.attest.verify import ModelLike, Verifier, load_ak

__all__ = ["LRU", "ParsedKeys"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A bounded mapping, least recently used out first; safe across threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
                return v
        v = make()  # outside the lock: a parse may take a while; a race parses twice
        with self._lock:
            self._d[key] = v
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return v

    def __len__(self) -> int:
        return len(self._d)


class ParsedKeys:
    """Host TMA keys and TPM AKs by PEM text; verifiers by (key, AK, model) text."""

    def __init__(self, size: int = 20000) -> None:
        self._keys: LRU[str, PublicKey] = LRU(size)
        self._aks: LRU[str, ec.EllipticCurvePublicKey | rsa.RSAPublicKey] = LRU(size)
        self._verifiers: LRU[tuple[str, str | None, object], Verifier] = LRU(size)

    def tma_key(self, pem: str, source: str) -> PublicKey:
        return self._keys.get(pem, lambda: parse_public_key(pem.encode(), source))

    def ak(self, pem: str, source: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        return self._aks.get(pem, lambda: load_ak(pem.encode(), source))

    def verifier(self, tma_pem: str, ak_pem: str | None, model_key: object, model: ModelLike,
                 source: str) -> Verifier:
        """A verifier for this host key, AK and model; ``model_key`` must name the
        model's text and the key its signature was checked with."""
        def make() -> Verifier:
            return Verifier(self.tma_key(tma_pem, source), model,
                            ak=self.ak(ak_pem, f"{source} AK") if ak_pem else None)
        return self._verifiers.get((tma_pem, ak_pem, model_key), make)
