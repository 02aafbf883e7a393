"""Real keys, signed models and signed attestations for the verifier tests, built with
the same library calls a domain uses (no running workload needed)."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from semtrust.attest.attestation import build_attestation, public_pem, sign_document
from semtrust.model import signing
from semtrust.model.coefficient import ZERO, state_value

POINTS = [hashlib.sha256(f"point {i}".encode()).digest() for i in range(3)]
BASE = hashlib.sha256(b"fleet base").digest()


class Material:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.host_keys: dict[str, ed25519.Ed25519PrivateKey] = {}
        self.model_key = signing.generate_key("rsa")
        (tmp / "model.pub").write_bytes(signing.public_pem(self.model_key))
        body = "".join(f"state {p.hex()}\n" for p in POINTS) + "seal\nend\n"
        self.model_text = signing.sign_model_text(body, self.model_key)
        (tmp / "signed.model").write_text(self.model_text)
        self.model_digest = hashlib.sha256(self.model_text.encode()).hexdigest()

    def host(self, name: str) -> Path:
        """A host's TMA key; returns the public key file."""
        key = ed25519.Ed25519PrivateKey.generate()
        self.host_keys[name] = key
        pub = self.tmp / f"{name}.pub"
        pub.write_text(public_pem(key))
        return pub

    def doc(self, host: str, domain: str, nonce: str, *, forensics: int = 0,
            points: list[bytes] | None = None, sealed: bool = True,
            base: bytes = BASE) -> dict[str, Any]:
        pts = POINTS if points is None else points
        state = state_value(ZERO, base, pts)
        doc = build_attestation(
            domain=domain, mode="sealed" if sealed else "free", aggregate=ZERO, base=base,
            measurement=secrets.token_bytes(32), state=state, points=len(pts),
            forensics=forensics,
            model_digest=bytes.fromhex(self.model_digest) if sealed else None,
            untrusted=[{"pid": 7}] if forensics else [], nonce=bytes.fromhex(nonce))
        return sign_document(doc, self.host_keys[host])
