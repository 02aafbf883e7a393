"""Debian's Mosquitto broker started by the test itself, on a free loopback port, with a
password file and no persistence (a restart loses whatever it held)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.integration.needs import need

USER = "tsem"
PASSWORD = "test-only-password"


def need_broker() -> None:
    need(shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists(),
         "mosquitto not installed (Debian package mosquitto)")
    need(shutil.which("mosquitto_passwd") is not None, "mosquitto_passwd not installed")
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        need(False, "paho-mqtt not installed (pip install paho-mqtt)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    def __init__(self, d: Path) -> None:
        need_broker()
        self.dir = d
        self.port = _free_port()
        pw = d / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), USER, PASSWORD], check=True,
                       capture_output=True)
        self.conf = d / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {pw}\n"
            "persistence false\n"
            "user root\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 20\n"
            f"log_dest file {d / 'mosquitto.log'}\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def env(self) -> dict[str, str]:
        return {"TSEM_PASSWORD": PASSWORD}

    def url(self, topic: str) -> str:
        return f"mqtt://{USER}@127.0.0.1:{self.port}/{topic}"

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()
