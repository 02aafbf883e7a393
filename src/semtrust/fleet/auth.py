"""Who may speak to the verifier: operators by token, hosts by signed requests.

A host enrolls its TMA public key; afterwards every agent request carries

    X-Semtrust-Host:      the host's enrolled name
    X-Semtrust-Date:      Unix seconds when the request was signed
    X-Semtrust-Signature: Base64 signature, by the host's TMA key, over
                          "semtrust-request-v1\\n" METHOD "\\n" PATH "\\n" HOST "\\n"
                          DATE "\\n" hex(SHA-256(body))

The signature binds method, path, host and body, so a captured request cannot
be re-aimed at another endpoint or host; the date bounds its replay to the
clock window, and pushes are single-use anyway (their nonce is consumed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from semtrust.attest.attestation import PrivateKey, PublicKey

__all__ = ["CLOCK_WINDOW", "operator_ok", "sign_request", "signed_message", "verify_request"]

CLOCK_WINDOW = 300.0
_CONTEXT = b"semtrust-request-v1"


def signed_message(method: str, path: str, host: str, date: str, body: bytes) -> bytes:
    parts = [_CONTEXT, method.upper().encode(), path.encode(), host.encode(), date.encode(),
             hashlib.sha256(body).hexdigest().encode()]
    return b"\n".join(parts)


def sign_request(key: PrivateKey, method: str, path: str, host: str, body: bytes,
                 now: float | None = None) -> dict[str, str]:
    """The three headers that authenticate a request as ``host``."""
    date = str(int(time.time() if now is None else now))
    msg = signed_message(method, path, host, date, body)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(msg)
    else:
        sig = key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    return {"X-Semtrust-Host": host, "X-Semtrust-Date": date,
            "X-Semtrust-Signature": base64.b64encode(sig).decode("ascii")}


def verify_request(key: PublicKey, method: str, path: str, host: str, date: str,
                   signature: str, body: bytes, now: float | None = None) -> str | None:
    """None if the request is authentic and timely, else why not."""
    try:
        when = int(date)
    except ValueError:
        return "X-Semtrust-Date is not an integer"
    t = time.time() if now is None else now
    if abs(t - when) > CLOCK_WINDOW:
        return f"request date is more than {int(CLOCK_WINDOW)} s off the verifier's clock"
    try:
        sig = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return "X-Semtrust-Signature is not Base64"
    msg = signed_message(method, path, host, date, body)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, msg)
        else:
            key.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "request signature does not verify under the host's enrolled key"
    return None


def operator_ok(token: str | None, given: str | None) -> bool:
    """Constant-time comparison of a bearer token with the configured one."""
    if not token or given is None:
        return False
    return hmac.compare_digest(token.encode(), given.encode())
