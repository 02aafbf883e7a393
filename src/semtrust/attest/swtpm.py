"""Start and stop a software TPM (``swtpm``) on loopback.

Tests, benchmarks and the demo need a TPM that nobody else uses; this runs a
private ``swtpm`` with its own state directory on a free loopback port pair
(``swtpm`` TCTI convention: command port N, control port N+1) and stops it
again. Nothing here is needed on a machine with a real TPM.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from semtrust.errors import SemtrustError

__all__ = ["SoftwareTpm", "swtpm_available"]


def swtpm_available() -> str | None:
    """Return None when swtpm can run here, else the reason it cannot."""
    for tool in ("swtpm", "swtpm_setup"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian packages swtpm, swtpm-tools)"
    return None


def _free_port_pair() -> int:
    """Find N such that loopback ports N and N+1 are both free right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise SemtrustError("no free loopback port pair for swtpm")


class SoftwareTpm:
    """A private swtpm process; use as a context manager.

    ``tcti`` is the string to pass as ``--tpm`` / ``TPM2TOOLS_TCTI``.
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="semtrust-swtpm-"))
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> SoftwareTpm:
        reason = swtpm_available()
        if reason is not None:
            raise SemtrustError(reason)
        if not (self.state_dir / "tpm2-00.permall").exists():
            subprocess.run(
                ["swtpm_setup", "--tpm2", "--tpmstate", str(self.state_dir),
                 "--createek", "--overwrite", "--config", "/dev/null"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
            )
        last_err = ""
        for _ in range(5):
            self.port = _free_port_pair()
            self._proc = subprocess.Popen(
                ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir}",
                 "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                 "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                 "--flags", "not-need-init,startup-clear"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return self
                except OSError:
                    time.sleep(0.02)
            # Port taken between probe and bind, or swtpm died: try another pair.
            err = b""
            if self._proc.poll() is None:
                self._proc.kill()
            _, err = self._proc.communicate(timeout=5)
            last_err = err.decode(errors="replace").strip()
            self._proc = None
        raise SemtrustError(f"swtpm did not start: {last_err}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> SoftwareTpm:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
