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

    code, out = _run(*base, "--model", str(f["model"]), "--model-key", str(f["pub"]))
    assert code == 2  # model not signed by that key: bad input, refused

    code, out = _run(*base, "--model", str(f["model"]), "--model-key", str(f["mpub"]), "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_verify_tampered_and_bad_input(tmp_path: Path) -> None:
    f = _setup(tmp_path)
    doc = json.loads(f["att"].read_text())
    doc["forensics"] = 0
    doc["points"] = doc["points"] + 1
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    code, out = _run("verify", str(tampered), "--key", str(f["pub"]), "--model", str(f["model"]))
    assert code == 1 and "FAIL signature: " in out

    (tmp_path / "junk.json").write_text("{not json")
    code, _ = _run("verify", str(tmp_path / "junk.json"), "--key", str(f["pub"]),
                   "--model", str(f["model"]))
    assert code == 2
    code, _ = _run("verify", str(tmp_path / "missing"), "--key", str(f["pub"]),
                   "--model", str(f["model"]))
    assert code == 2
    code, _ = _run("verify", str(f["att"]), "--key", str(f["model"]), "--model", str(f["model"]))
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
