"""The ``listenerPath`` server: runc hands over each seccomp listener fd here."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from typing import Any

#: Bound on one runc listener message (state JSON).
MAX_STATE_JSON = 1 << 20


class ListenerServer:
    """Accepts runc's ``listenerPath`` connections: state JSON + the seccomp listener fd."""

    def __init__(self, path: str, on_listener: Any) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.listen(16)
        self.on_listener = on_listener
        self.thread = threading.Thread(target=self._run, name="semtrust-listenerpath",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                fds, state = _read_listener_message(conn)
            for extra in fds[1:]:
                os.close(extra)
            if fds:
                self.on_listener(fds[0], state)


def _read_listener_message(conn: socket.socket) -> tuple[list[int], dict[str, Any]]:
    """runc's message: the state JSON with the listener fd attached (SCM_RIGHTS).

    runc keeps the connection open, so stop at the first complete JSON object.
    """
    conn.settimeout(10)
    fds: list[int] = []
    data = bytearray()
    try:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
        data += msg
        while len(data) < MAX_STATE_JSON:
            try:
                state = json.loads(bytes(data))
                return fds, state if isinstance(state, dict) else {}
            except ValueError:
                pass
            more = conn.recv(65536)
            if not more:
                break
            data += more
    except OSError:
        pass
    return fds, {}

