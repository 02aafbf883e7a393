"""HTTP client of the verifier: signed host requests and operator calls."""

from __future__ import annotations

import json
from typing import Any

import httpx

from semtrust.attest.attestation import PrivateKey
from semtrust.errors import SemtrustError
from semtrust.fleet.auth import sign_request

__all__ = ["HostClient", "OperatorClient", "VerifierError", "VerifierUnavailable"]

MAX_RESPONSE = 64 << 20


class VerifierError(SemtrustError):
    """The verifier refused a request (4xx); ``status`` and its JSON ``body``."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"verifier refused ({status}): {message}")
        self.status = status
        self.body = body or {}


class VerifierUnavailable(SemtrustError):
    """The verifier is unreachable or answered 5xx: try again later."""


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise SemtrustError(f"verifier URL must be http:// or https://, not {url!r}")
    return url.rstrip("/")


def _result(r: httpx.Response) -> Any:
    if len(r.content) > MAX_RESPONSE:
        raise VerifierUnavailable("verifier response too large")
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code >= 500:
        msg = body.get("error") if isinstance(body, dict) else r.reason_phrase
        raise VerifierUnavailable(f"verifier unavailable ({r.status_code}): {msg}")
    if r.status_code >= 400:
        msg = body.get("error") if isinstance(body, dict) else r.reason_phrase
        raise VerifierError(r.status_code, str(msg), body if isinstance(body, dict) else None)
    return body


class _Base:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = _check_url(url)
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
        try:
            r = self.http.request(method, self.url + path, content=body,
                                  headers={"Content-Type": "application/json", **headers})
        except httpx.HTTPError as exc:
            raise VerifierUnavailable(f"cannot reach the verifier at {self.url}: {exc}") \
                from None
        return _result(r)


class HostClient(_Base):
    """Requests signed with the host's enrolled key."""

    def __init__(self, url: str, host: str, key: PrivateKey, timeout: float = 30.0) -> None:
        super().__init__(url, timeout)
        self.host = host
        self.key = key

    def call(self, method: str, path: str, obj: Any = None) -> Any:
        body = b"" if obj is None else json.dumps(obj, separators=(",", ":")).encode()
        headers = sign_request(self.key, method, path, self.host, body)
        return self._send(method, path, body, headers)

    def nonce(self) -> str:
        r = self.call("POST", "/api/v1/nonce")
        if not isinstance(r, dict) or not isinstance(r.get("nonce"), str):
            raise VerifierUnavailable("verifier sent no nonce")
        return str(r["nonce"])

    def push(self, nonce: str, docs: list[dict[str, Any]],
             forensics: dict[str, dict[str, Any]] | None = None) -> Any:
        return self.call("POST", "/api/v1/attestations",
                         {"nonce": nonce, "attestations": docs, "forensics": forensics or {}})


class OperatorClient(_Base):
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        super().__init__(url, timeout)
        self.token = token

    def post(self, path: str, obj: Any) -> Any:
        body = json.dumps(obj).encode()
        return self._send("POST", path, body, {"Authorization": f"Bearer {self.token}"})
