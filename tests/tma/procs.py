"""``semtrust tma serve`` as a real process, for the integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

SEMTRUST = str(Path(sys.executable).parent / "semtrust")


class ServeProcess:
    """Starts ``semtrust tma serve ARGS`` and reads the addresses it listens on."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([SEMTRUST, "tma", "serve", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.addresses: list[str] = []
        assert self.proc.stdout is not None
        want = sum(1 for a in args if a == "--listen") + sum(1 for a in args if a == "--from")
        while len(self.addresses) < want:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"tma serve exited: {self.stderr()}")
            self.addresses.append(line.split()[-1])

    @property
    def unix(self) -> str:
        return next(a for a in self.addresses if a.startswith("unix:"))

    @property
    def tcp(self) -> str:
        return next(a for a in self.addresses if a.startswith("tcp:"))

    def stderr(self) -> str:
        self.kill()
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill(signal.SIGTERM)


def tma(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SEMTRUST, "tma", *args], capture_output=True, text=True,
                          timeout=120, **kw)  # type: ignore[call-overload]
