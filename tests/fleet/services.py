"""Real services for the fleet tests: a throw-away PostgreSQL cluster, a Mosquitto
broker with a password file, and verifier processes (``semtrust verifier serve``).

PostgreSQL refuses to run as root, so as root the cluster belongs to ``nobody``
in a private temp directory under /tmp (which ``nobody`` can reach even when the
checkout lives under a 0700 directory).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.integration.needs import need

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SEMTRUST = [sys.executable, "-c", "from semtrust.cli import main; main()"]
SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Any, what: str, timeout: float = 60.0, every: float = 0.1) -> Any:
    """Poll ``cond()`` until it returns a true value (a liveness bound, not a timing test)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


# ------------------------------------------------------------------ PostgreSQL
class Postgres:
    """``options``: extra server settings (``-c name=value ...``) for every start."""

    def __init__(self, options: str = "") -> None:
        self.options = options
        need((PG_BIN / "initdb").exists(), "PostgreSQL 15 server not installed "
                                           "(Debian package postgresql)")
        self.dir = Path(tempfile.mkdtemp(prefix=f"semtrust-pg-{os.getpid()}-", dir="/tmp"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user: str | None = "nobody" if os.geteuid() == 0 else None
        if self.user is not None:
            shutil.chown(self.dir, self.user)
        self._n = 0
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--no-sync"])
        self.start()

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, user=self.user,
                           cwd=self.dir)
        assert r.returncode == 0, f"{cmd[0]}: {r.stdout}{r.stderr}"

    def start(self) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                   "-w", "-o", f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 "
                               f"-c fsync=off -c max_connections=200 {self.options}", "start"])

    def stop(self) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        import psycopg

        self._n += 1
        name = f"fleet_{os.getpid()}_{self._n}"
        with psycopg.connect(self.url().replace("postgresql://", "postgresql://", 1),
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------ Mosquitto
class Mosquitto:
    USER = "semtrust"

    def __init__(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        need(os.access(exe, os.X_OK), "mosquitto not installed (Debian package mosquitto)")
        self.dir = Path(tempfile.mkdtemp(prefix=f"semtrust-mqtt-{os.getpid()}-"))
        self.port = free_port()
        self.password = f"pw-{os.getpid()}-{time.monotonic_ns()}"
        pwfile = self.dir / "passwd"
        r = subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), self.USER,
                            self.password], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        os.chmod(pwfile, 0o600)
        conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous false",
                 f"password_file {pwfile}", "persistence false",
                 f"log_dest file {self.dir / 'log'}"]
        if os.geteuid() == 0:
            lines.append("user root")  # keep access to the private temp directory
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_for(self._up, "mosquitto to listen", timeout=30)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            err = self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(f"mosquitto exited: {err!r}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def url(self, topic: str) -> str:
        return f"mqtt://{self.USER}:{self.password}@127.0.0.1:{self.port}/{topic}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Subscriber:
    """Collects the JSON messages of one topic."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        import json

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{os.getpid()}")
        c.username_pw_set(broker.USER, broker.password)

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(client: Any, userdata: Any, mid: Any, rcs: Any, props: Any) -> None:
            subscribed.set()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            with self._lock:
                self.messages.append(json.loads(msg.payload))

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = on_message
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        self.client = c
        assert subscribed.wait(30), "MQTT subscription not acknowledged"

    def find(self, **want: Any) -> dict[str, Any] | None:
        with self._lock:
            for m in self.messages:
                if all(m.get(k) == v for k, v in want.items()):
                    return m
        return None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ------------------------------------------------------------------ verifier
class VerifierProcess:
    """``semtrust verifier serve`` in a subprocess on a free port."""

    def __init__(self, db: str, tmp: Path, *, token: str, stale_after: float = 180.0,
                 mqtt: str | None = None, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        token_file = tmp / f"token-{self.port}"
        token_file.write_text(token + "\n")
        self.log = tmp / f"verifier-{self.port}.log"
        cmd = [*SEMTRUST, "verifier", "serve", "--db", db, "--listen",
               f"127.0.0.1:{self.port}", "--token-file", str(token_file),
               "--stale-after", str(stale_after), *extra]
        if mqtt is not None:
            cmd += ["--mqtt", mqtt]
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        self._logfp = open(self.log, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._logfp, stderr=subprocess.STDOUT)
        wait_for(self._up, f"verifier on {self.url}", timeout=60)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"verifier exited: {self.log.read_text()}")
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._logfp.close()


@contextlib.contextmanager
def verifier(db: str, tmp: Path, **kw: Any) -> Iterator[VerifierProcess]:
    v = VerifierProcess(db, tmp, **kw)
    try:
        yield v
    finally:
        v.close()


# ------------------------------------------------------------------ a host with domains
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

    def start(self, *args: str, log: Path | None = None) -> subprocess.Popen[str]:
        """Start a CLI command; its stderr goes to ``log`` when given (readable while
        it runs), else to a pipe."""
        err: Any = subprocess.PIPE
        if log is not None:
            err = open(log, "w")  # noqa: SIM115 - handed to the child
        p = subprocess.Popen([*SEMTRUST, *args], env=self.env, stdout=subprocess.PIPE,
                             stderr=err, text=True)
        if log is not None:
            err.close()
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
