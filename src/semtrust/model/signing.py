"""Signed models: RSA PKCS#1 v1.5 with SHA-256, as the reference signs them (spec §4.3).

The ``key`` line carries Base64 of the PEM public key text; the ``signature``
line carries Base64 of the signature over every preceding line, each followed
by one NUL byte (``modelfile.signed_bytes``; why that encoding cannot be forged
once lines are printable text is argued in ``semtrust.model.modelfile``). Both
Base64 values must be canonical.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from semtrust.errors import InputError, SignatureError
from semtrust.strict import b64decode_canonical

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def _b64decode(text: str, what: str) -> bytes:
    """Canonical Base64 only: the signature line is outside the signed bytes, so a
    second spelling of the same signature would be a second file that verifies."""
    try:
        return b64decode_canonical(text, what)
    except InputError as exc:
        raise SignatureError(exc.message) from None


def decode_key_line(text: str) -> bytes:
    """PEM bytes of a ``key`` line's public key (checked to load as RSA)."""
    pem = _b64decode(text, "key")
    _load_rsa_public(pem)
    return pem


def _load_rsa_public(pem: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # unknown key type OID
        raise SignatureError("not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("model signing keys must be RSA")
    return key


def verify_model_signature(key_pem: bytes, signed_data: bytes, signature_b64: str) -> None:
    """Raise :class:`SignatureError` unless the signature verifies."""
    key = _load_rsa_public(key_pem)
    signature = _b64decode(signature_b64, "signature")
    try:
        key.verify(signature, signed_data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureError("model signature does not verify") from None


def same_public_key(pem_a: bytes, pem_b: bytes) -> bool:
    """Whether two PEM texts hold the same public key (PEM whitespace may differ)."""
    a = load_public_key_pem(pem_a)
    b = load_public_key_pem(pem_b)
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return a.public_bytes(enc, fmt) == b.public_bytes(enc, fmt)


def load_public_key_pem(pem: bytes) -> PublicKey:
    """A public key from PEM, or from a private key PEM (its public half)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            return load_private_key_pem(pem).public_key()
        except InputError:
            raise SignatureError("not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise SignatureError("unsupported key type (RSA or Ed25519 only)")
    return key


def load_private_key_pem(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(f"not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise InputError("unsupported key type (RSA or Ed25519 only)")
    return key


def read_key_file(path: str | Path, *, private: bool) -> bytes:
    try:
        with open(path, "rb") as fp:
            data = fp.read(1 << 16)
    except OSError as exc:
        raise InputError(f"cannot read key: {exc.strerror}", source=str(path)) from None
    return data


def load_private_key(path: str | Path) -> PrivateKey:
    try:
        return load_private_key_pem(read_key_file(path, private=True))
    except InputError as exc:
        raise exc.located(str(path)) from None


def load_public_key(path: str | Path) -> PublicKey:
    try:
        return load_public_key_pem(read_key_file(path, private=False))
    except InputError as exc:
        raise exc.located(str(path)) from None


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    pub: PublicKey
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        pub = key.public_key()
    else:
        pub = key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_der(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate_key(kind: str = "rsa") -> PrivateKey:
    """RSA-2048 (e=65537) like the reference ``sign-model -G``, or Ed25519."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise InputError(f"unknown key type {kind!r} (rsa or ed25519)", field="--type")


def write_keypair(path: str | Path, key: PrivateKey) -> tuple[Path, Path]:
    """Write ``path`` (private PEM, mode 0600, created exclusively) and ``path.pub``."""
    private = Path(path)
    public = Path(f"{path}.pub")
    if isinstance(key, rsa.RSAPrivateKey):
        fmt = serialization.PrivateFormat.TraditionalOpenSSL
    else:
        fmt = serialization.PrivateFormat.PKCS8
    pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError("refusing to overwrite an existing key", source=str(private)) from None
    except OSError as exc:
        raise InputError(f"cannot create key: {exc.strerror}", source=str(private)) from None
    with os.fdopen(fd, "wb") as fp:
        fp.write(pem)
    public.write_bytes(public_pem(key))
    return private, public


def sign_model_text(body: str, key: PrivateKey) -> str:
    """A signed model: ``key`` line, ``body`` lines, ``signature`` line."""
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InputError("model signing keys must be RSA (the reference format)", field="--key")
    from semtrust.model.modelfile import check_line, signed_bytes

    lines = [f"key {base64.b64encode(public_pem(key)).decode()}"]
    lines += body.rstrip("\n").split("\n")
    for n, line in enumerate(lines[1:], 1):
        problem = check_line(line)
        if problem is not None:  # never sign what the loader would refuse
            raise InputError(problem, line=n)
    data = signed_bytes(lines)
    sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    lines.append(f"signature {base64.b64encode(sig).decode()}")
    return "\n".join(lines) + "\n"
