"""End to end through the CLI: `run` with a TPM, base nonce, PCR and TMA key;
`attest` over the management socket; `verify`; signed models in the loop."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from semtrust.attest.swtpm import SoftwareTpm
from semtrust.attest.tpm import TpmLink, software_extend

CLI = [sys.executable, "-c", "from semtrust.cli import main; main()"]
NONCE = "5eed" * 8
BASE = hashlib.sha256(b"chosen by the verifier").hexdigest()
# Polls for a stop file: a long-lived, deterministic workload (same points every run,
# provided every run goes round the loop at least once; see Env.learn).
LOOP = 'sleep 0.01; while [ ! -e "$1" ]; do sleep 0.05; done; cat /etc/hostname >/dev/null'
EXTRA = 'cat /etc/passwd >/dev/null; ' + LOOP


class Env:
    def __init__(self, tmp: Path, tcti: str) -> None:
        self.tmp = tmp
        self.tcti = tcti
        rt = tmp / "run"
        rt.mkdir(mode=0o700)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(rt)}
        self.env.pop("TPM2TOOLS_TCTI", None)
        self.env.pop("TCTI", None)
        self.sock_dir = rt / "semtrust"

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True,
                           timeout=120)
        if check:
            assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
        return r

    def start(self, name: str, script: str, *opts: str) -> tuple[subprocess.Popen[str], Path]:
        # One stop-file path for every run: its name enters the modeled events.
        stop = self.tmp / "stop"
        stop.unlink(missing_ok=True)
        p = subprocess.Popen([*CLI, "run", "--name", name, *opts, "--", "/bin/sh", "-c",
                              script, "sh", str(stop)],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        sock = self.sock_dir / f"{name}.sock"
        deadline = time.monotonic() + 30
        while not sock.exists():
            if p.poll() is not None:
                out, err = p.communicate()
                pytest.fail(f"run {name} exited {p.returncode}: {out}{err}")
            if time.monotonic() > deadline:
                p.kill()
                pytest.fail(f"domain {name} did not come up")
            time.sleep(0.05)
        return p, stop

    @staticmethod
    def finish(p: subprocess.Popen[str], stop: Path) -> tuple[int, str]:
        stop.touch()
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        return p.returncode, out + err

    def learn(self, name: str, script: str, *opts: str) -> Path:
        model = self.tmp / f"{name}.model"
        p, stop = self.start(name, script, "--tpm", self.tcti, "--output", str(model), *opts)
        # Let the workload see the stop file absent at least once, as later runs will.
        time.sleep(0.5)
        code, out = self.finish(p, stop)
        assert code == 0, out
        return model


@pytest.fixture
def env(fresh_swtpm: SoftwareTpm, tmp_path: Path) -> Iterator[Env]:
    yield Env(tmp_path, fresh_swtpm.tcti)


def _keys(e: Env) -> tuple[Path, Path]:
    e.cli("model", "keygen", str(e.tmp / "tma.key"), "--type", "ed25519", check=True)
    e.cli("model", "keygen", str(e.tmp / "model.key"), check=True)
    return e.tmp / "tma.key", e.tmp / "model.key"


def test_attest_and_verify_a_sealed_domain_with_tpm(env: Env) -> None:
    tma_key, model_key = _keys(env)
    learned = env.learn("learn", LOOP)
    signed = env.tmp / "signed.model"
    env.cli("model", "sign", str(learned), "--key", str(model_key), "-o", str(signed), check=True)

    p, stop = env.start("web", LOOP, "--tpm", env.tcti, "--model", str(signed),
                        "--model-key", f"{model_key}.pub", "--base", BASE, "--pcr", "11",
                        "--tma-key", str(tma_key))
    try:
        att, ak = env.tmp / "att.json", env.tmp / "ak.pem"
        env.cli("attest", "web", "--nonce", NONCE, "-o", str(att), "--tpm-ak-out", str(ak),
                "--extend", check=True)
        att2 = env.tmp / "att2.json"
        env.cli("attest", "web", "--nonce", "77" * 16, "-o", str(att2), check=True)
    finally:
        code, out = env.finish(p, stop)
    assert code == 0, out
    doc = json.loads(att.read_text())
    assert doc["mode"] == "sealed" and doc["base"] == BASE and doc["forensics"] == 0
    assert doc["tpm"] is not None and "11" in doc["tpm"]["pcrs"]
    assert doc["pcr_log"]["extends"] == [doc["state"]]

    verify = ["verify", str(att), "--key", f"{tma_key}.pub", "--model", str(signed),
              "--tpm-ak", str(ak), "--base", BASE]
    r = env.cli(*verify, "--nonce", NONCE)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("signature", "nonce", "base", "model-digest", "aggregate", "state",
                 "forensics", "tpm-quote", "tpm-pcrs", "tpm-aggregate", "pcr-log"):
        assert f"PASS {name}" in r.stdout.splitlines(), (name, r.stdout)
    # The second attestation (no --extend) still replays the PCR log.
    r = env.cli("verify", str(att2), "--key", f"{tma_key}.pub", "--model", str(signed),
                "--tpm-ak", str(ak), "--nonce", "77" * 16)
    assert r.returncode == 0, r.stdout

    # Replay: the old document does not answer a new nonce.
    r = env.cli(*verify, "--nonce", "00" * 16)
    assert r.returncode == 1 and "FAIL nonce: " in r.stdout
    # Another TMA key.
    env.cli("model", "keygen", str(env.tmp / "other.key"), "--type", "ed25519", check=True)
    r = env.cli("verify", str(att), "--key", str(env.tmp / "other.key.pub"), "--model",
                str(signed), "--nonce", NONCE)
    assert r.returncode == 1 and "FAIL signature: signed by another key" in r.stdout
    # A tampered field.
    tampered = env.tmp / "tampered.json"
    tampered.write_text(json.dumps({**doc, "forensics": 0, "mode": "enforcing"}))
    r = env.cli("verify", str(tampered), "--key", f"{tma_key}.pub", "--model", str(signed),
                "--nonce", NONCE)
    assert r.returncode == 1 and "FAIL signature: signature does not verify: document altered" \
        in r.stdout
    # A model with one extra point.
    lines = learned.read_text().splitlines()
    extra = env.tmp / "extra.model"
    at = lines.index("seal")
    extra.write_text("\n".join([*lines[:at], "state " + "ab" * 32, *lines[at:]]) + "\n")
    r = env.cli("verify", str(att), "--key", f"{tma_key}.pub", "--model", str(extra),
                "--nonce", NONCE, "--tpm-ak", str(ak))
    assert r.returncode == 1 and "FAIL state: " in r.stdout

    # At the end of the workload the final state was extended into PCR 11 too.
    with TpmLink(env.tcti) as tpm:
        pcr11 = tpm.pcr_read([11])[11]
    log = doc["pcr_log"]
    expect = software_extend(bytes.fromhex(log["initial"]), bytes.fromhex(doc["state"]))
    expect = software_extend(expect, bytes.fromhex(doc["state"]))
    assert pcr11 == expect


def test_forensic_workload_fails_verification(env: Env) -> None:
    tma_key, _ = _keys(env)
    learned = env.learn("learn", LOOP)
    p, stop = env.start("web", EXTRA, "--tpm", env.tcti, "--model", str(learned),
                        "--tma-key", str(tma_key))
    try:
        att, ak = env.tmp / "att.json", env.tmp / "ak.pem"
        env.cli("attest", "web", "--nonce", NONCE, "-o", str(att), "--tpm-ak-out", str(ak),
                check=True)
    finally:
        env.finish(p, stop)
    doc = json.loads(att.read_text())
    assert doc["forensics"] > 0 and doc["trust"]["untrusted"] > 0
    r = env.cli("verify", str(att), "--key", f"{tma_key}.pub", "--model", str(learned),
                "--nonce", NONCE, "--tpm-ak", str(ak))
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert any(line.startswith("FAIL forensics: ") and "left its model" in line for line in out)
    assert any(line.startswith("FAIL state: ") for line in out)
    assert "PASS signature" in out and "PASS tpm-quote" in out


def test_tampered_or_wrongly_signed_model_is_refused_by_run(env: Env) -> None:
    _, model_key = _keys(env)
    learned = env.learn("learn", LOOP)
    signed = env.tmp / "signed.model"
    env.cli("model", "sign", str(learned), "--key", str(model_key), "-o", str(signed), check=True)
    text = signed.read_text()
    state_line = next(line for line in text.splitlines() if line.startswith("state "))
    flipped = state_line[:-1] + ("0" if state_line[-1] != "0" else "1")
    cases = {
        "tampered": text.replace(state_line, flipped),
        "stripped": "".join(ln + "\n" for ln in text.splitlines()
                            if not ln.startswith("signature ")),
    }
    for label, body in cases.items():
        bad = env.tmp / f"{label}.model"
        bad.write_text(body)
        r = env.cli("run", "--name", label, "--model", str(bad), "--", "/bin/true")
        assert r.returncode == 2, (label, r.stdout, r.stderr)
        assert r.stderr.startswith("semtrust: ") and "signature" in r.stderr, r.stderr
    # Genuine model, but pinned to another signer.
    env.cli("model", "keygen", str(env.tmp / "other.key"), check=True)
    r = env.cli("run", "--name", "pin", "--model", str(signed), "--model-key",
                str(env.tmp / "other.key.pub"), "--", "/bin/true")
    assert r.returncode == 2 and "different key" in r.stderr
    # And the genuine one, pinned to its signer, runs.
    r = env.cli("run", "--name", "ok", "--tpm", env.tcti, "--model", str(signed), "--model-key",
                f"{model_key}.pub", "--", "/bin/sh", "-c", LOOP, "sh", "/")
    assert r.returncode == 0, r.stderr


def test_learning_on_another_platform_state_does_not_validate(env: Env) -> None:
    """PCR 7 changes between learning and running: run warns, verify fails on aggregate."""
    tma_key, _ = _keys(env)
    learned = env.learn("learn", LOOP)
    with TpmLink(env.tcti) as tpm:
        tpm.extend(7, hashlib.sha256(b"changed boot policy").digest())
    p, stop = env.start("web", LOOP, "--tpm", env.tcti, "--model", str(learned),
                        "--tma-key", str(tma_key))
    try:
        att = env.tmp / "att.json"
        env.cli("attest", "web", "--nonce", NONCE, "-o", str(att), check=True)
    finally:
        _, out = env.finish(p, stop)
    assert "warning: model aggregate" in out
    r = env.cli("verify", str(att), "--key", f"{tma_key}.pub", "--model", str(learned),
                "--nonce", NONCE)
    assert r.returncode == 1
    assert any(line.startswith("FAIL aggregate: ") for line in r.stdout.splitlines())


def test_attest_errors(env: Env) -> None:
    p, stop = env.start("nokey", LOOP, "--tpm", "none")
    try:
        r = env.cli("attest", "nokey", "--nonce", NONCE)
        assert r.returncode == 2 and "no TMA key" in r.stderr
        r = env.cli("attest", "nokey", "--nonce", "xyz")
        assert r.returncode == 2
    finally:
        env.finish(p, stop)
    r = env.cli("attest", "absent", "--nonce", NONCE)
    assert r.returncode == 2 and "no running domain" in r.stderr
    r = env.cli("run", "--pcr", "11", "--tpm", "none", "--", "/bin/true")
    assert r.returncode == 2 and "--pcr needs a TPM" in r.stderr
