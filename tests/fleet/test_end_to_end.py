"""End to end on the real kernel: a sealed domain under `semtrust run`, an agent
pushing to a verifier process, MQTT alerts from a real Mosquitto, and the web
view in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fleet.services import SEMTRUST, Mosquitto, Subscriber, verifier, wait_for
from tests.integration.needs import need

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")
TOKEN = "operator-token-e2e-0123456789"
# Goes round its loop until the stop file appears; with the deviate file present it
# opens /etc/passwd, which the learned model has never seen.
LOOP = ('while [ ! -e "$1/stop" ]; do if [ -e "$1/deviate" ]; then : </etc/passwd; fi; '
        'sleep 0.05; done')


class Host:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        rt = tmp / "run"
        rt.mkdir(mode=0o700)
        self.ctl = tmp / "ctl"
        self.ctl.mkdir()
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(rt),
                    "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        for k in ("TPM2TOOLS_TCTI", "TCTI"):
            self.env.pop(k, None)
        self.sock_dir = rt / "semtrust"
        self.procs: list[subprocess.Popen[str]] = []

    def cli(self, *args: str) -> str:
        r = subprocess.run([*SEMTRUST, *args], env=self.env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
        return r.stdout

    def start(self, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen([*SEMTRUST, *args], env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def domain(self, name: str, *opts: str) -> subprocess.Popen[str]:
        (self.ctl / "stop").unlink(missing_ok=True)
        p = self.start("run", "--name", name, *opts, "--", "/bin/sh", "-c", LOOP, "sh",
                       str(self.ctl))
        wait_for(lambda: (self.sock_dir / f"{name}.sock").exists() or p.poll() is not None,
                 f"domain {name}")
        assert p.poll() is None, p.communicate()
        return p

    def stop_domain(self, p: subprocess.Popen[str]) -> None:
        (self.ctl / "stop").touch()
        p.communicate(timeout=60)

    def close(self) -> None:
        (self.ctl / "stop").touch()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.communicate()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = Host(tmp_path)
    try:
        yield h
    finally:
        h.close()


def chromium(tmp: Path, url: str, *, screenshot: Path | None = None) -> str:
    exe = shutil.which("chromium")
    need(exe is not None, "chromium not installed (Debian package chromium)")
    assert exe is not None
    profile = tmp / f"chromium-{time.monotonic_ns()}"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,800"]
    cmd += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    r = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_enroll_push_deviate_alert_page_stale(db_url: str, host: Host, tmp_path: Path,
                                              mosquitto: Mosquitto) -> None:
    topic = f"semtrust/test/{os.getpid()}/{time.monotonic_ns()}"
    sub = Subscriber(mosquitto, topic)
    h = host
    h.cli("model", "keygen", str(tmp_path / "tma.key"), "--type", "ed25519")
    h.cli("model", "keygen", str(tmp_path / "model.key"))
    learned, signed = tmp_path / "learned.model", tmp_path / "signed.model"
    p = h.domain("learn", "--output", str(learned))
    time.sleep(0.5)  # go round the loop a few times, as the sealed run will
    h.stop_domain(p)
    h.cli("model", "sign", str(learned), "--key", str(tmp_path / "model.key"), "-o", str(signed))

    with verifier(db_url, tmp_path, token=TOKEN, stale_after=4.0,
                  mqtt=mosquitto.url(topic)) as v:
        tf = tmp_path / "token"
        tf.write_text(TOKEN)
        op = ("--verifier", v.url, "--token-file", str(tf))
        h.cli("verifier", "enroll", *op, "--name", "node-1", "--tma-key",
              str(tmp_path / "tma.key.pub"))
        h.cli("verifier", "add-workload", *op, "--name", "loop", "--signing-key",
              str(tmp_path / "model.key.pub"))
        h.cli("verifier", "upload", *op, "--workload", "loop", str(signed))

        h.domain("web", "--model", str(signed), "--model-key", str(tmp_path / "model.key.pub"),
                 "--tma-key", str(tmp_path / "tma.key"))
        # One push by hand, then the agent.
        out = h.cli("attest", "web", "--push", v.url, "--host", "node-1", "--host-key",
                    str(tmp_path / "tma.key"))
        assert json.loads(out) == {"pushed": ["web"]}
        agent = h.start("agent", "--verifier", v.url, "--host", "node-1", "--key",
                        str(tmp_path / "tma.key"), "--interval", "1", "-v")
        api = f"{v.url}/api/v1/domains/node-1/web"

        def status() -> str:
            r = httpx.get(api)
            return str(r.json()["status"]) if r.status_code == 200 else ""

        wait_for(lambda: status() == "trusted", "web trusted")
        d = httpx.get(api).json()
        assert d["model"] == "loop v1" and d["mode"] == "sealed"
        wait_for(lambda: sub.find(domain="web", status="trusted"), "MQTT trusted alert")
        dom = chromium(tmp_path, v.url + "/")
        assert 'data-domain="web" data-status="trusted"' in dom

        (h.ctl / "deviate").touch()
        wait_for(lambda: status() == "untrusted", "web untrusted")
        alert = wait_for(lambda: sub.find(domain="web", status="untrusted"), "MQTT alert")
        assert alert["host"] == "node-1" and alert["previous"] == "trusted"
        assert "forensics" in alert["reason"] and alert["forensics"] > 0
        dom = chromium(tmp_path, v.url + "/")
        assert 'data-domain="web" data-status="untrusted"' in dom
        page = chromium(tmp_path, v.url + "/hosts/node-1/domains/web")
        assert '<span id="status" class="status status-untrusted">untrusted</span>' in page
        # The forensic event the agent delivered, summarised.
        assert "file_open by sh" in page and ": /etc/passwd</div>" in page, page
        shot = tmp_path / "fleet.png"
        chromium(tmp_path, v.url + "/hosts/node-1/domains/web", screenshot=shot)
        assert shot.stat().st_size > 10_000
        if os.environ.get("SEMTRUST_KEEP_SCREENSHOT"):
            shutil.copy(shot, os.environ["SEMTRUST_KEEP_SCREENSHOT"])
        chromium(tmp_path, v.url + "/", screenshot=tmp_path / "index.png")
        if os.environ.get("SEMTRUST_KEEP_SCREENSHOT"):
            shutil.copy(tmp_path / "index.png", os.environ["SEMTRUST_KEEP_SCREENSHOT"] + ".index.png")

        agent.terminate()
        agent.communicate(timeout=30)
        wait_for(lambda: status() == "stale", "web stale")
        wait_for(lambda: sub.find(domain="web", status="stale"), "MQTT stale alert")
    sub.close()
