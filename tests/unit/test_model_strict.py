"""Model files are strictly parsed and their signed bytes cannot be re-cut into
another model (the NUL re-join forgery)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from semtrust.errors import ModelError, SignatureError
from semtrust.model import signing
from semtrust.model.modelfile import check_line, load_model, parse_model, signed_bytes
from semtrust.strict import b64decode_canonical

P1, P2, P3 = "11" * 32, "22" * 32, "33" * 32
ZERO = "00" * 32
MODEL = f"aggregate {ZERO}\nstate {P1}\nstate {P2}\nseal\nend\n"
SEMTRUST = Path(sys.executable).with_name("semtrust")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    k = signing.generate_key("rsa")
    assert isinstance(k, rsa.RSAPrivateKey)
    return k


def _nul_forgery(key: rsa.RSAPrivateKey) -> tuple[str, str]:
    """The attack: a genuine signed model, and a forged one whose lines signed by the
    reference encoding are the same bytes. The victim signs a model whose first
    comment is ``#``; the attacker folds every following line into that comment with
    NUL bytes and writes its own points after it, keeping the genuine signature."""
    body = f"#\naggregate {ZERO}\nstate {P1}\nseal\nend\n"
    signed = signing.sign_model_text(body, key)
    lines = signed.rstrip("\n").split("\n")
    key_line, comment, rest, signature = lines[0], lines[1], lines[2:-1], lines[-1]
    # Sign with a lenient signer to show the bytes match: the reference would accept.
    folded = comment + "\0" + "\0".join(rest)
    forged_lines = [key_line, folded]
    assert signed_bytes(forged_lines) == signed_bytes(lines[:-1])
    forged = "\n".join([*forged_lines, signature]) + "\n"
    return signed, forged


def test_nul_rejoined_signed_model_is_refused(key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    signed, forged = _nul_forgery(key)
    assert parse_model(signed.encode()).signed
    with pytest.raises(ModelError, match="U\\+0000") as err:
        parse_model(forged.encode(), source="forged")
    assert err.value.line == 2
    # The same through the command line, with the signer pinned: one line, exit 2.
    pub = tmp_path / "k.pub"
    pub.write_bytes(signing.public_pem(key))
    path = tmp_path / "forged.model"
    path.write_text(forged)
    marker = tmp_path / "ran"
    for args in (["model", "verify", str(path), "--key", str(pub)],
                 ["replay", "/dev/null", "--model", str(path), "--model-key", str(pub)],
                 ["run", "--model", str(path), "--model-key", str(pub), "--enforce", "--",
                  "touch", str(marker)]):
        r = subprocess.run([str(SEMTRUST), *args], capture_output=True, text=True, check=False)
        assert r.returncode == 2, r
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
        assert f"{path}:2:" in r.stderr and "U+0000" in r.stderr
    assert not marker.exists()  # the workload never ran under the forged model


def test_the_reference_encoding_is_kept(key: rsa.RSAPrivateKey) -> None:
    signed = signing.sign_model_text(MODEL, key).rstrip("\n").split("\n")
    sig = b64decode_canonical(signed[-1].removeprefix("signature "), "signature")
    data = b"".join(line.encode() + b"\0" for line in signed[:-1])
    key.public_key().verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
    assert parse_model(("\n".join(signed) + "\n").encode()).signed_data == data


# Lines the parser accepts: printable text, including non-ASCII, never a NUL.
_accepted = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn",
                                                             "Zl", "Zp")),
    max_size=12,
).filter(lambda s: check_line(s) is None)
# Any lines at all (what a lenient reader would sign), to search for collisions.
_any = st.text(alphabet=st.sampled_from("a\0b\r\x01é#"), max_size=6)


@settings(max_examples=400)
@given(st.lists(_accepted, max_size=6), st.lists(_accepted, max_size=6))
def test_distinct_accepted_models_never_sign_alike(a: list[str], b: list[str]) -> None:
    if a != b:
        assert signed_bytes(a) != signed_bytes(b)
    assert signed_bytes(a).split(b"\0")[:-1] == [line.encode() for line in a]


@settings(max_examples=400)
@given(st.lists(_any, min_size=1, max_size=5), st.lists(_any, min_size=1, max_size=5))
def test_every_colliding_pair_has_a_refused_line(a: list[str], b: list[str]) -> None:
    """Where the reference encoding collides, one of the two has a line we refuse."""
    if a != b and signed_bytes(a) == signed_bytes(b):
        assert any(check_line(x) is not None for x in a + b)


@settings(max_examples=200)
@given(st.lists(st.sampled_from([f"state {P1}", f"state {P2}", f"pseudonym {P3}",
                                 "# a comment", "# ü ☃"]), max_size=6))
def test_parsed_signed_data_is_the_lines(lines: list[str]) -> None:
    text = "\n".join([f"aggregate {ZERO}", *lines, "seal", "end"]) + "\n"
    m = parse_model(text.encode())
    assert m.signed_data == signed_bytes(text.rstrip("\n").split("\n"))


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        (f"state {P1}\r\nend\n", 1, "CR"),
        (f"# x\x0cy\nstate {P1}\n", 1, "U\\+000C"),
        (f"# tab\there\nstate {P1}\n", 1, "U\\+0009"),
        (f"# esc \x1b[31m\nstate {P1}\n", 1, "U\\+001B"),
        (f"# \u2028\nstate {P1}\n", 1, "U\\+2028"),
        (f"# bidi \u202e\nstate {P1}\n", 1, "U\\+202E"),
        (f"# nbsp\u00a0\nstate {P1}\n", 1, "U\\+00A0"),
        (f"state  {P1}\n", 1, "white space"),
        (f"state {P1} \n", 1, "white space"),
        (f" state {P1}\n", 1, "unknown model line"),
        (f"state {P1}\nseal\nseal\n", 3, "more than one 'seal'"),
        (f"state {P1}\nend\nend\n", 3, "more than one 'end'"),
        (f"aggregate {ZERO}\naggregate {ZERO}\nstate {P1}\n", 2, "more than one 'aggregate'"),
        (f"state {P1}\nend\npseudonym {P2}\n", 3, "after 'end'"),
        (f"state {P1}\nseal now\n", 2, "takes no value"),
        (f"state {P1}", 1, "no newline"),
        (f"state {P1}\n# {'x' * (70 << 10)}\n", 2, "longer than"),
        (f"state {P1}\nsignature AAAA\n", 2, "without a key"),
    ],
)
def test_strict_lines(text: str, line: int, what: str) -> None:
    with pytest.raises(ModelError, match=what) as err:
        parse_model(text.encode(), source="m")
    assert err.value.line == line


def test_non_utf8_names_the_line() -> None:
    with pytest.raises(ModelError, match="not UTF-8") as err:
        parse_model(f"state {P1}\n# caf\xe9\n".encode("latin-1"), source="m")
    assert err.value.line == 2


def test_comments_after_end_and_then_the_signature(key: rsa.RSAPrivateKey) -> None:
    text = signing.sign_model_text(MODEL + "# trailer\n", key)
    m = parse_model(text.encode())
    assert m.signed and m.comments == ["# trailer"]
    with pytest.raises(ModelError, match="after the signature"):
        parse_model((text + "# more\n").encode())


def test_non_canonical_base64_signature_is_refused(key: rsa.RSAPrivateKey) -> None:
    lines = signing.sign_model_text(MODEL, key).rstrip("\n").split("\n")
    sig = lines[-1].removeprefix("signature ")
    assert sig.endswith("=")  # 256-byte RSA-2048 signature: one pad character
    variants = {
        "no padding": sig.rstrip("="),
        "white space": sig[:10] + " " + sig[10:],
        "trailing bits": sig[:-2] + chr(ord(sig[-2]) ^ 1) + "=",
    }
    for why, bad in variants.items():
        text = "\n".join([*lines[:-1], f"signature {bad}"]) + "\n"
        with pytest.raises(SignatureError, match="Base64") as err:
            parse_model(text.encode())
        assert err.value.line == len(lines), why


def test_signer_refuses_lines_the_loader_refuses(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(Exception, match="U\\+0000"):
        signing.sign_model_text(f"# a\0b\nstate {P1}\n", key)


def test_empty_model_needs_allow_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.model"
    empty.write_text(f"aggregate {ZERO}\nseal\nend\n")
    with pytest.raises(ModelError, match="no points"):
        load_model(empty)
    assert load_model(empty, allow_empty=True).points == []
    (tmp_path / "zero").write_bytes(b"")
    with pytest.raises(ModelError, match="no points"):
        load_model(tmp_path / "zero")
