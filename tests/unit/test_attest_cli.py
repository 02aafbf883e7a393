"""`semtrust verify`: one line per check, exit 0 / 1 / 2."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from semtrust.attest.attestation import dumps
from semtrust.attest.domain import DomainTrust, TrustOptions
from semtrust.cli import main
from semtrust.model.coefficient import ZERO
from semtrust.model.modelfile import load_model, render_model
from semtrust.model.signing import (
    generate_key,
    load_private_key,
    sign_model_text,
    write_keypair,
)
from semtrust.model.tma import TMA

NONCE = "c0ffee" * 4


def _setup(tmp: Path) -> dict[str, Path]:
    key, pub = write_keypair(tmp / "tma", generate_key("ed25519"))
    mkey, mpub = write_keypair(tmp / "modelkey", generate_key("rsa"))
    learned = TMA()
    learned.set_aggregate(ZERO)
    pts = [hashlib.sha256(bytes([i])).digest() for i in range(4)]
    for p in pts:
        learned.update_coefficient(p)
    text = render_model(learned, describe_points=False)
    model = tmp / "model"
    model.write_text(sign_model_text(text, load_private_key(mkey)))
    extra = tmp / "extra-model"
    learned.update_coefficient(hashlib.sha256(b"extra").digest())
    extra.write_text(render_model(learned, describe_points=False))
    dt = DomainTrust("web", TrustOptions(tcti="none", tma_key=key))
    tma = TMA()
    dt.prepare(tma, load_model(model))
    for p in pts[:2]:
        tma.update_coefficient(p)
    att = tmp / "att.json"
    att.write_text(dumps(dt.attest(tma, bytes.fromhex(NONCE))))
    return {"att": att, "pub": pub, "model": model, "extra": extra, "mpub": mpub, "key": key}


def _run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


def test_verify_pass_and_fail_lines(tmp_path: Path) -> None:
    f = _setup(tmp_path)
    base = ["verify", str(f["att"]), "--key", str(f["pub"])]
    code, out = _run(*base, "--model", str(f["model"]), "--nonce", NONCE)
    assert code == 0, out
    lines = out.splitlines()
    assert "PASS signature" in lines and "PASS state" in lines and "PASS nonce" in lines
    assert all(line.split()[0] in ("PASS", "SKIP") for line in lines)

    code, out = _run(*base, "--model", str(f["model"]), "--nonce", "00" * 12)
    assert code == 1 and "FAIL nonce: " in out

    code, out = _run(*base, "--model", str(f["extra"]), "--nonce", NONCE)
    assert code == 1 and "FAIL state: " in out and "FAIL model-digest: " in out

    code, out = _run(*base, "--model", str(f["model"]), "--model-key", str(f["pub"]),
                     "--no-nonce")
    assert code == 2  # model not signed by that key: bad input, refused

    code, out = _run(*base, "--model", str(f["model"]), "--model-key", str(f["mpub"]), "--json",
                     "--no-nonce")
    assert code == 0 and json.loads(out)["ok"] is True


def test_verify_tampered_and_bad_input(tmp_path: Path) -> None:
    f = _setup(tmp_path)
    doc = json.loads(f["att"].read_text())
    doc["forensics"] = 0
    doc["points"] = doc["points"] + 1
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    code, out = _run("verify", str(tampered), "--key", str(f["pub"]), "--model", str(f["model"]),
                     "--nonce", NONCE)
    assert code == 1 and "FAIL signature: " in out

    (tmp_path / "junk.json").write_text("{not json")
    code, _ = _run("verify", str(tmp_path / "junk.json"), "--key", str(f["pub"]),
                   "--model", str(f["model"]), "--no-nonce")
    assert code == 2
    code, _ = _run("verify", str(tmp_path / "missing"), "--key", str(f["pub"]),
                   "--model", str(f["model"]), "--no-nonce")
    assert code == 2
    code, _ = _run("verify", str(f["att"]), "--key", str(f["model"]), "--model", str(f["model"]),
                   "--no-nonce")
    assert code == 2
    code, _ = _run("verify", str(f["att"]), "--key", str(f["pub"]), "--model", str(f["model"]),
                   "--nonce", "xyz")
    assert code == 2


def test_verify_exit_status_from_a_real_process(tmp_path: Path) -> None:
    f = _setup(tmp_path)
    cmd = [sys.executable, "-c", "from semtrust.cli import main; main()", "verify",
           str(f["att"]), "--key", str(f["pub"]), "--model", str(f["model"])]
    ok = subprocess.run([*cmd, "--nonce", NONCE], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([*cmd, "--nonce", "11"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "FAIL nonce" in bad.stdout


def _verify_cli(att: Path, f: dict[str, Path], *extra: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("semtrust")
    return subprocess.run([str(exe), "verify", str(att), "--key", str(f["pub"]), "--model",
                           str(f["model"]), *extra], capture_output=True, text=True,
                          timeout=60, check=False)


def _refused(r: subprocess.CompletedProcess[str], what: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == ""  # refused before any check ran
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert what in r.stderr, r.stderr


def test_verify_needs_a_nonce_or_no_nonce(tmp_path: Path) -> None:
    f = _setup(tmp_path)
    code, out = _run("verify", str(f["att"]), "--key", str(f["pub"]), "--model", str(f["model"]))
    assert code == 2 and "--no-nonce" in out
    code, out = _run("verify", str(f["att"]), "--key", str(f["pub"]), "--model", str(f["model"]),
                     "--no-nonce")
    assert code == 0 and "SKIP nonce: " in out
    code, out = _run("verify", str(f["att"]), "--key", str(f["pub"]), "--model", str(f["model"]),
                     "--no-nonce", "--nonce", NONCE)
    assert code == 2


def test_duplicate_keys_before_the_real_ones_are_refused(tmp_path: Path) -> None:
    """A decoy copy of a field first: a first-wins reader sees the decoy while a
    last-wins reader checks the genuine, signed one. Neither may be accepted."""
    f = _setup(tmp_path)
    text = f["att"].read_text()
    assert _verify_cli(f["att"], f, "--nonce", NONCE).returncode == 0
    decoys = {
        "top": text.replace("{", '{"forensics": 7, "state": "' + "ab" * 32 + '", ', 1),
        "nested": text.replace('"trust": {', '"trust": {"untrusted": 9, ', 1),
    }
    for name, forged in decoys.items():
        att = tmp_path / f"{name}.json"
        att.write_text(forged)
        _refused(_verify_cli(att, f, "--nonce", NONCE), "duplicate key")


def test_non_canonical_base64_is_refused(tmp_path: Path) -> None:
    f = _setup(tmp_path)
    doc = json.loads(f["att"].read_text())
    sig = doc["signature"]
    for bad in (sig.rstrip("="), sig[:8] + "\n" + sig[8:], " " + sig):
        att = tmp_path / "b64.json"
        att.write_text(json.dumps({**doc, "signature": bad}))
        _refused(_verify_cli(att, f, "--nonce", NONCE), "canonical Base64")


def test_deep_nesting_and_unknown_fields_are_refused(tmp_path: Path) -> None:
    f = _setup(tmp_path)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    _refused(_verify_cli(deep, f, "--nonce", NONCE), "nested")
    doc = json.loads(f["att"].read_text())
    for name, bad in {
        "extra": {**doc, "comment": "hello"},
        "nested-extra": {**doc, "trust": {**doc["trust"], "note": 1}},
        "too-deep": {**doc, "trust": {**doc["trust"], "processes": [{"pid": [[1]]}]}},
    }.items():
        att = tmp_path / f"{name}.json"
        att.write_text(json.dumps(bad))
        r = _verify_cli(att, f, "--nonce", NONCE)
        _refused(r, "nested" if name == "too-deep" else "unknown field")
    big = tmp_path / "big.json"
    with big.open("wb") as fp:
        fp.write(b'{"x": "' + b"a" * (17 << 20) + b'"}')
    _refused(_verify_cli(big, f, "--nonce", NONCE), "larger than")
