"""Signed state attestations: build, serialize canonically, sign.

An attestation is one JSON object. Its signature covers the *canonical form*
of the object without the ``signature`` field: ``json.dumps(obj,
sort_keys=True, separators=(",", ":"), ensure_ascii=True)`` encoded as UTF-8
(pure ASCII). Bytes are lower-case hex; the TPM quote's binary parts are
standard Base64. The signature algorithm follows the TMA key type:

* Ed25519 key  -> ``"signature_alg": "ed25519"`` (RFC 8032, fast to verify)
* RSA key      -> ``"signature_alg": "rsa-pkcs1v15-sha256"``

When a TPM is present the quote's qualifying data (``extraData``) is
``SHA-256("semtrust-quote-v1\\0" || canonical(body))`` where *body* is the
document without ``tpm``, ``signature``, ``signature_alg`` and ``key_id``: the TPM thereby signs the
verifier's nonce *and* every attested value, so a genuine quote cannot be
paired with other state values.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semtrust.attest.tpm import AGGREGATE_PCRS, TpmLink, describe_pcrs
from semtrust.errors import InputError

__all__ = [
    "FORMAT",
    "PrivateKey",
    "PublicKey",
    "build_attestation",
    "canonical",
    "dumps",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_nonce",
    "parse_public_key",
    "quote_qualifier",
    "sign_document",
    "signature_alg",
]

FORMAT = "semtrust-attestation/1"
QUOTE_CONTEXT = b"semtrust-quote-v1\0"
#: Fields added after the quote is taken, hence not covered by its extraData.
_NOT_QUOTED = ("tpm", "signature", "signature_alg", "key_id")
MAX_NONCE = 64

# cryptography is imported where keys are used: `semtrust run` without a TMA key
# should not pay for loading it (about 10 ms of start-up).
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey


def __getattr__(name: str) -> Any:
    """``PrivateKey`` and ``PublicKey`` at run time, loading cryptography then."""
    if name in ("PrivateKey", "PublicKey"):
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        return (ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey if name == "PrivateKey"
                else ed25519.Ed25519PublicKey | rsa.RSAPublicKey)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def canonical(doc: Mapping[str, Any], *, exclude: Iterable[str] = ("signature",)) -> bytes:
    """The exact bytes that are signed (see module docstring)."""
    skip = set(exclude)
    body = {k: v for k, v in doc.items() if k not in skip}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def quote_qualifier(doc: Mapping[str, Any]) -> bytes:
    """TPM quote extraData binding the quote to the nonce and all attested values."""
    return hashlib.sha256(QUOTE_CONTEXT + canonical(doc, exclude=_NOT_QUOTED)).digest()


# ----------------------------------------------------------------------- keys
MAX_KEY_BYTES = 1 << 20  # a PEM key is a few KiB; anything larger is not a key


def read_bounded(path: str | Path, what: str) -> bytes:
    try:
        with open(path, "rb") as fp:
            data = fp.read(MAX_KEY_BYTES + 1)
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror}", source=str(path)) from e
    if len(data) > MAX_KEY_BYTES:
        raise InputError(f"{what} larger than {MAX_KEY_BYTES} bytes", source=str(path))
    return data


def load_private_key(path: str | Path) -> PrivateKey:
    """A TMA signing key: PEM, Ed25519 or RSA (PKCS#1 or PKCS#8, unencrypted)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    data = read_bounded(path, "TMA key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InputError(f"not an unencrypted PEM private key ({e})", source=str(path)) from e
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise InputError("RSA TMA key shorter than 2048 bits", source=str(path))
        return key
    raise InputError("TMA key must be Ed25519 or RSA", source=str(path))


def parse_public_key(data: bytes, source: str) -> PublicKey:
    """A PEM public key (or the public half of a PEM private key)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        if b"PRIVATE KEY" in data:
            priv = serialization.load_pem_private_key(data, password=None)
            pub: object = priv.public_key()
        else:
            pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InputError(f"not a PEM public key ({e})", source=source) from e
    if isinstance(pub, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        return pub
    raise InputError("key must be Ed25519 or RSA", source=source)


def load_public_key(path: str | Path) -> PublicKey:
    return parse_public_key(read_bounded(path, "public key"), str(path))


def signature_alg(key: PrivateKey | PublicKey) -> str:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    return "rsa-pkcs1v15-sha256"


def public_pem(key: PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def key_id(key: PrivateKey | PublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo: names the signer in the document."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    pub = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) \
        else key
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


# ------------------------------------------------------------------- building
def parse_nonce(text: str, *, field: str = "nonce") -> bytes:
    """A verifier nonce: 1-64 bytes as hex."""
    try:
        value = bytes.fromhex(text.strip())
    except ValueError as e:
        raise InputError("not a hex string", field=field) from e
    if not 1 <= len(value) <= MAX_NONCE:
        raise InputError(f"must be 1 to {MAX_NONCE} bytes", field=field)
    return value


def build_attestation(
    *,
    domain: str,
    mode: str,
    aggregate: bytes,
    base: bytes,
    measurement: bytes,
    state: bytes,
    points: int,
    forensics: int,
    model_digest: bytes | None,
    untrusted: Sequence[Mapping[str, Any]],
    nonce: bytes,
    tpm: TpmLink | None = None,
    quote_pcrs: Sequence[int] = AGGREGATE_PCRS,
    pcr_log: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The unsigned document; with ``tpm`` it carries a quote bound to it."""
    if not 1 <= len(nonce) <= MAX_NONCE:
        raise InputError(f"nonce must be 1 to {MAX_NONCE} bytes", field="nonce")
    t = time.time() if now is None else now
    doc: dict[str, Any] = {
        "format": FORMAT,
        "domain": domain,
        "mode": mode,
        "aggregate": aggregate.hex(),
        "base": base.hex(),
        "measurement": measurement.hex(),
        "state": state.hex(),
        "points": points,
        "forensics": forensics,
        "model_digest": model_digest.hex() if model_digest is not None else None,
        "trust": {
            "untrusted": len(untrusted),
            "processes": [dict(p) for p in untrusted],
        },
        "nonce": nonce.hex(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
    }
    if pcr_log is not None:
        doc["pcr_log"] = dict(pcr_log)
    if tpm is not None:
        q = tpm.quote(quote_pcrs, quote_qualifier(doc))
        doc["tpm"] = {
            "bank": "sha256",
            "pcrs": describe_pcrs(q.pcrs),
            "quote": base64.b64encode(q.attest).decode("ascii"),
            "quote_signature": base64.b64encode(q.signature).decode("ascii"),
            "quote_alg": q.sig_alg,
            "ak": tpm.ak_public_pem().decode("ascii"),
        }
    else:
        doc["tpm"] = None
    return doc


def sign_document(doc: Mapping[str, Any], key: PrivateKey) -> dict[str, Any]:
    """Return ``doc`` with ``signature_alg``, ``key_id`` and ``signature`` set."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding

    out = {k: v for k, v in doc.items() if k != "signature"}
    out["signature_alg"] = signature_alg(key)
    out["key_id"] = key_id(key)
    data = canonical(out)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(data)
    else:
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    out["signature"] = base64.b64encode(sig).decode("ascii")
    return out


def dumps(doc: Mapping[str, Any]) -> str:
    """Human-friendly file form (the signature does not depend on layout)."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
