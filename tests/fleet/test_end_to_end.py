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
from pathlib import Path

import httpx
import pytest

from tests.fleet.services import Host, Mosquitto, Subscriber, verifier, wait_for
from tests.integration.needs import need

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")
TOKEN = "operator-token-e2e-0123456789"
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
        # Screenshots render (kept for a human look with SEMTRUST_KEEP_SCREENSHOT=DIR).
        keep = os.environ.get("SEMTRUST_KEEP_SCREENSHOT")
        for page_name, path in (("domain", "/hosts/node-1/domains/web"), ("index", "/")):
            shot = tmp_path / f"{page_name}.png"
            chromium(tmp_path, v.url + path, screenshot=shot)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
            if keep:
                shutil.copy(shot, Path(keep) / shot.name)

        agent.terminate()
        agent.communicate(timeout=30)
        wait_for(lambda: status() == "stale", "web stale")
        wait_for(lambda: sub.find(domain="web", status="stale"), "MQTT stale alert")
    sub.close()
