"""The ``attest`` management request: server side and client side.

Request: ``{"op": "attest", "nonce": HEX, "extend": bool}``; the result is the
signed attestation document (a JSON object). The orchestrator :func:`attach`es
a :class:`DomainTrust` to its domain; importing this module registers the
request type with the management socket.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from semtrust.attest.domain import DomainTrust, Snapshot
from semtrust.errors import InputError
from semtrust.orchestrator.mgmt import MgmtError, register_request, request

if TYPE_CHECKING:
    from semtrust.orchestrator.domain import Domain

__all__ = ["attach", "request_attestation", "trust_of"]

_TRUST: weakref.WeakKeyDictionary[Domain, DomainTrust] = weakref.WeakKeyDictionary()


def attach(domain: Domain, trust: DomainTrust) -> None:
    """Make ``trust`` answer ``attest`` requests for ``domain``."""
    _TRUST[domain] = trust


def trust_of(domain: Domain) -> DomainTrust | None:
    return _TRUST.get(domain)


def _attest(domain: Domain, req: dict[str, Any]) -> Any:
    trust = _TRUST.get(domain)
    if trust is None:
        raise MgmtError("this domain does not serve attestations")
    nonce_hex = req.get("nonce")
    if not isinstance(nonce_hex, str):
        raise MgmtError("attest needs a 'nonce' (hex string)")
    from semtrust.attest.attestation import parse_nonce  # the signing stack, on demand

    try:
        nonce = parse_nonce(nonce_hex)
    except InputError as exc:
        raise MgmtError(f"nonce: {exc.message}") from None
    with domain.lock:
        snap = Snapshot.of(domain.tma)
        untrusted = []
        for tgid in sorted(domain.tasks.untrusted()):
            p = domain.tasks.procs.get(tgid)
            if p is not None:
                untrusted.append({"pid": p.tgid, "nspid": p.nspid, "process": p.comm,
                                  "task_id": p.task_id.hex()})
    try:
        return trust.attest(snap, nonce, untrusted=untrusted, extend=bool(req.get("extend")))
    except InputError as exc:
        raise MgmtError(exc.message) from None


register_request("attest", _attest)


def request_attestation(name: str, nonce: bytes, *, extend: bool = False,
                        timeout: float = 60.0) -> dict[str, Any]:
    """Ask running domain ``name`` for a signed attestation."""
    doc = request(name, {"op": "attest", "nonce": nonce.hex(), "extend": extend},
                  timeout=timeout)
    if not isinstance(doc, dict):
        raise MgmtError(f"domain {name!r} sent no attestation document")
    return doc
