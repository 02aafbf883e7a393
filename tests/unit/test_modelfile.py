"""Model files and signed models (spec §4)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from semtrust.errors import ModelError, SignatureError
from semtrust.model import signing
from semtrust.model.modelfile import load_model, parse_model, render_model
from semtrust.model.tma import TMA

P1, P2 = "11" * 32, "22" * 32
MODEL = f"# learned\naggregate {'00' * 32}\nstate {P1}\nstate {P2}\nseal\nend\n"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    k = signing.generate_key("rsa")
    assert isinstance(k, rsa.RSAPrivateKey)
    return k


def test_parse_plain_model() -> None:
    m = parse_model(MODEL.encode(), source="m")
    assert m.points == [bytes.fromhex(P1), bytes.fromhex(P2)]
    assert m.sealed and m.ended and not m.signed
    tma = TMA()
    tma.load_model(m)
    assert tma.sealed and tma.valid_points() == m.points


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("state 1234\n", 1, "expected 32 bytes"),
        ("aggregate zz\n", 1, "not a hex"),
        (f"state {P1}\nbogus line\n", 2, "unknown model line"),
        (f"seal\nstate {P1}\n", 2, "state after seal"),
        ("end\nstate " + P1 + "\n", 2, "after 'end'"),
        ("\n", 1, "unknown model line"),
    ],
)
def test_bad_models_name_the_line(text: str, line: int, what: str) -> None:
    with pytest.raises(ModelError, match=what) as err:
        parse_model(text.encode(), source="bad.model")
    assert err.value.line == line
    assert str(err.value).startswith(f"bad.model:{line}: ")


def test_truncated_and_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "nope")
    (tmp_path / "t").write_bytes(b"state " + P1[:40].encode())
    with pytest.raises(ModelError, match="t:1"):
        load_model(tmp_path / "t")


def test_sign_and_verify_round_trip(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    signed = signing.sign_model_text(MODEL, key)
    m = parse_model(signed.encode())
    assert m.signed and m.points == [bytes.fromhex(P1), bytes.fromhex(P2)]
    pub = tmp_path / "k.pub"
    pub.write_bytes(signing.public_pem(key))
    (tmp_path / "m").write_text(signed)
    assert load_model(tmp_path / "m", key=pub).signed


def test_signature_format_is_the_reference_one(key: rsa.RSAPrivateKey) -> None:
    signed = signing.sign_model_text(MODEL, key).splitlines()
    assert base64.b64decode(signed[0][4:]).startswith(b"-----BEGIN PUBLIC KEY-----\n")
    data = b"".join(line.encode() + b"\0" for line in signed[:-1])
    sig = base64.b64decode(signed[-1].removeprefix("signature "))
    key.public_key().verify(sig, data, padding.PKCS1v15(), hashes.SHA256())


def test_tampered_model_is_refused(key: rsa.RSAPrivateKey) -> None:
    signed = signing.sign_model_text(MODEL, key)
    tampered = signed.replace(P2, "23" + P2[2:])
    with pytest.raises(SignatureError, match="does not verify"):
        parse_model(tampered.encode(), source="t")
    extra = signed.replace("seal\n", f"state {'33' * 32}\nseal\n")
    with pytest.raises(SignatureError):
        parse_model(extra.encode())


def test_key_without_signature_needs_allow_unsigned(key: rsa.RSAPrivateKey) -> None:
    stripped = "\n".join(signing.sign_model_text(MODEL, key).splitlines()[:-1]) + "\n"
    with pytest.raises(SignatureError, match="no signature"):
        parse_model(stripped.encode())
    assert not parse_model(stripped.encode(), allow_unsigned=True).signed


def test_pinned_signer(key: rsa.RSAPrivateKey) -> None:
    other = signing.generate_key("rsa")
    signed = signing.sign_model_text(MODEL, key).encode()
    with pytest.raises(SignatureError, match="different key"):
        parse_model(signed, key_pem=signing.public_pem(other))
    with pytest.raises(SignatureError, match="not signed"):
        parse_model(MODEL.encode(), key_pem=signing.public_pem(key))


def test_content_after_signature_is_refused(key: rsa.RSAPrivateKey) -> None:
    signed = signing.sign_model_text(MODEL, key) + f"state {'44' * 32}\n"
    with pytest.raises(ModelError, match="after the signature"):
        parse_model(signed.encode())


def test_render_model_round_trip() -> None:
    tma = TMA()
    tma.set_aggregate(bytes([7]) * 32)
    tma.add_pseudonym(bytes([9]) * 32)
    for i in range(5):
        tma.update_coefficient(bytes([i]) * 32)
    tma.seal()
    tma.update_coefficient(bytes([99]) * 32)
    m = parse_model(render_model(tma).encode())
    assert m.points == tma.points() and m.sealed
    again = TMA()
    again.load_model(m)
    assert again.state() == tma.state()


def test_keygen_writes_0600(tmp_path: Path) -> None:
    priv, pub = signing.write_keypair(tmp_path / "k", signing.generate_key("rsa"))
    assert priv.stat().st_mode & 0o777 == 0o600
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    with pytest.raises(Exception, match="overwrite"):
        signing.write_keypair(tmp_path / "k", signing.generate_key("rsa"))
