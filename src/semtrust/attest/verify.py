"""Verify a signed attestation against a model, without the trajectory.

The verifier recomputes the one value a model implies — the state (spec §2.7:
the model's hardware aggregate extended first, then its sorted points, all
under the attested base) — and compares it with the attested state. Every
other check is a field comparison or a signature. Each check yields a
:class:`Check`; a verifier trusts the document only if none FAILs.

TPM quotes are parsed here in pure Python (TPMS_ATTEST, TPM 2.0 Part 2
§10.12), so verifying needs no TPM and no tpm2-pytss.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from semtrust.attest.attestation import (
    FORMAT,
    PublicKey,
    canonical,
    key_id,
    quote_qualifier,
    signature_alg,
)
from semtrust.attest.tpm import AGGREGATE_PCRS, pcr_digest, software_extend
from semtrust.errors import InputError
from semtrust.model.coefficient import ZERO, hw_aggregate, state_value
from semtrust.strict import b64decode_canonical, loads_strict

__all__ = ["Check", "ModelLike", "ParsedQuote", "Verifier", "parse_attestation",
           "parse_tpms_attest"]

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_SHA256 = 0x000B


class ModelLike(Protocol):
    """What the verifier needs of a loaded model file (semtrust.model.modelfile.Model)."""

    @property
    def aggregate(self) -> bytes | None: ...
    @property
    def points(self) -> list[bytes]: ...
    @property
    def digest(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Check:
    """One verification step: status is PASS, FAIL or SKIP (SKIP does not fail)."""

    name: str
    status: str
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        return f"{self.status} {self.name}" + (f": {self.reason}" if self.reason else "")


def _pass(name: str, reason: str = "") -> Check:
    return Check(name, "PASS", reason)


def _fail(name: str, reason: str) -> Check:
    return Check(name, "FAIL", reason)


def _skip(name: str, reason: str) -> Check:
    return Check(name, "SKIP", reason)


def _short(h: str) -> str:
    return h[:16] + "…" if len(h) > 16 else h


# --------------------------------------------------------------- TPMS_ATTEST
@dataclass(frozen=True, slots=True)
class ParsedQuote:
    magic: int
    type: int
    signer_name: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware: int
    selection: dict[int, list[int]]  # hash alg -> selected PCR indices (ascending)
    pcr_digest: bytes


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("TPMS_ATTEST truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def tpm2b(self) -> bytes:
        return self.take(self.u16())


def parse_tpms_attest(data: bytes) -> ParsedQuote:
    """Parse a marshalled TPMS_ATTEST of type quote; ValueError if malformed."""
    r = _Reader(data)
    magic, typ = r.u32(), r.u16()
    if typ != TPM_ST_ATTEST_QUOTE:
        raise ValueError(f"attestation type {typ:#06x} is not a quote")
    signer, extra = r.tpm2b(), r.tpm2b()
    clock, resets, restarts, safe = r.u64(), r.u32(), r.u32(), r.u8()
    firmware = r.u64()
    selection: dict[int, list[int]] = {}
    for _ in range(r.u32()):
        alg, size = r.u16(), r.u8()
        bits = r.take(size)
        selection.setdefault(alg, []).extend(
            i for i in range(size * 8) if bits[i // 8] & (1 << (i % 8))
        )
    digest = r.tpm2b()
    if r.pos != len(data):
        raise ValueError("trailing bytes after TPMS_ATTEST")
    return ParsedQuote(magic, typ, signer, extra, clock, resets, restarts, bool(safe),
                       firmware, selection, digest)


# ------------------------------------------------------------------ schema
_HEX32 = ("aggregate", "base", "measurement", "state")
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str, "domain": str, "mode": str, "aggregate": str, "base": str,
    "measurement": str, "state": str, "points": int, "forensics": int,
    "model_digest": (str, type(None)), "trust": dict, "nonce": str, "time": str,
    "tpm": (dict, type(None)), "signature_alg": str, "key_id": str, "signature": str,
}
#: Optional top-level fields; together with _FIELDS the format is closed.
_OPTIONAL: dict[str, type | tuple[type, ...]] = {"pcr_log": dict}
_TRUST = {"untrusted": int, "processes": list}
_PROCESS: dict[str, type | tuple[type, ...]] = {"pid": int}
_PROCESS_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "nspid": (int, type(None)), "process": str, "task_id": str}
_TPM: dict[str, type | tuple[type, ...]] = {
    "bank": str, "pcrs": dict, "quote": str, "quote_signature": str, "quote_alg": str,
    "ak": str}
_PCR_LOG: dict[str, type | tuple[type, ...]] = {"pcr": int, "initial": str, "extends": list}
#: The deepest nesting the format has: document > trust > processes > one process.
MAX_DEPTH = 4
MAX_ATTESTATION_BYTES = 16 << 20
_PCR_INDEX = re.compile(r"0|[1-9][0-9]?")


def _fields(obj: Any, spec: Mapping[str, type | tuple[type, ...]], where: str,
            optional: Mapping[str, type | tuple[type, ...]] | None = None) -> str | None:
    """Why ``obj`` is not an object with exactly ``spec``'s fields (plus ``optional``)."""
    if not isinstance(obj, Mapping):
        return f"{where or 'the document'} is not a JSON object"
    allowed = {**spec, **(optional or {})}
    for name in obj:
        if name not in allowed:
            return f"unknown field '{where}{name}'"
    for name, typ in allowed.items():
        if name not in obj:
            if name in spec:
                return f"missing field '{where}{name}'"
            continue
        value = obj[name]
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
            return f"field '{where}{name}' has the wrong type"
    return None


def _schema_problem(doc: Mapping[str, Any]) -> str | None:
    """Why ``doc`` is not a well-formed attestation (closed format), or None."""
    problem = _fields(doc, _FIELDS, "", _OPTIONAL)
    if problem is not None:
        return problem
    if doc["format"] != FORMAT:
        return f"format '{str(doc['format'])[:40]}' is not {FORMAT}"
    for name in (*_HEX32, "key_id"):
        v = doc[name]
        if len(v) != 64 or not _is_hex(v):
            return f"field '{name}' is not 64 lower-case hex digits"
    if doc["model_digest"] is not None and (len(doc["model_digest"]) != 64
                                            or not _is_hex(doc["model_digest"])):
        return "field 'model_digest' is not 64 lower-case hex digits"
    if not _is_hex(doc["nonce"]):
        return "field 'nonce' is not lower-case hex"
    if doc["points"] < 0 or doc["forensics"] < 0:
        return "negative count"
    if _canonical_b64(doc["signature"]) is None:
        return "field 'signature' is not canonical Base64"
    trust = doc["trust"]
    problem = _fields(trust, _TRUST, "trust.")
    if problem is not None:
        return problem
    for i, proc in enumerate(trust["processes"]):
        problem = _fields(proc, _PROCESS, f"trust.processes[{i}].", _PROCESS_OPTIONAL)
        if problem is not None:
            return problem
    tpm = doc["tpm"]
    if tpm is not None:
        problem = _fields(tpm, _TPM, "tpm.")
        if problem is not None:
            return problem
        for name in ("quote", "quote_signature"):
            if _canonical_b64(tpm[name]) is None:
                return f"field 'tpm.{name}' is not canonical Base64"
        for k, v in tpm["pcrs"].items():
            if _PCR_INDEX.fullmatch(k) is None or not isinstance(v, str) or not _is_hex(v):
                return "field 'tpm.pcrs' must map PCR numbers to hex digests"
    log = doc.get("pcr_log")
    if log is not None:
        problem = _fields(log, _PCR_LOG, "pcr_log.")
        if problem is not None:
            return problem
        if not all(isinstance(e, str) and _is_hex(e) for e in log["extends"]):
            return "field 'pcr_log.extends' must list hex digests"
    return None


def _canonical_b64(text: str) -> bytes | None:
    try:
        return b64decode_canonical(text, "value")
    except InputError:
        return None


def parse_attestation(data: bytes, *, source: str) -> dict[str, Any]:
    """Read an attestation document strictly, before any check looks at it.

    Refused with an :class:`InputError` (one line, exit 2): more than
    ``MAX_ATTESTATION_BYTES``, nesting deeper than the format (``MAX_DEPTH``),
    a duplicate key at any level (a decoy copy before the real field would
    otherwise be what one reader sees and another signs), unknown fields, wrong
    types, non-canonical hex or Base64. What remains can only fail a check.
    """
    doc = loads_strict(data, source=source, max_depth=MAX_DEPTH,
                       max_bytes=MAX_ATTESTATION_BYTES)
    if not isinstance(doc, dict):
        raise InputError("not a JSON object", source=source)
    problem = _schema_problem(doc)
    if problem is not None:
        raise InputError(problem, source=source)
    return doc


_HEX = re.compile(r"(?:[0-9a-f]{2})*")


def _is_hex(s: str) -> bool:
    return _HEX.fullmatch(s) is not None


# ---------------------------------------------------------------- verifier
class Verifier:
    """Checks attestations against one TMA public key and one model.

    The state a model implies depends on the attested base, so it is computed
    once per (aggregate, base) and cached: verifying a fleet running the same
    model costs one signature check and a few comparisons per document.
    """

    def __init__(
        self,
        key: PublicKey,
        model: ModelLike,
        *,
        ak: PublicKey | ec.EllipticCurvePublicKey | None = None,
        expected_base: bytes | None = None,
    ) -> None:
        self.key = key
        self.model = model
        self.ak = ak
        self.expected_base = expected_base
        self._alg = signature_alg(key)
        self._key_id = key_id(key)
        #: key_id of ``key``: what ``signature_verified_by`` is compared with
        self.key_id = self._key_id
        self._model_aggregate = model.aggregate if model.aggregate is not None else ZERO
        self._model_points = list(model.points)
        self._model_digest = model.digest.hex()
        self._states: dict[tuple[str, str], str] = {}

    def expected_state(self, base_hex: str) -> str:
        """State implied by the model under ``base`` (hex), cached."""
        k = (self._model_aggregate.hex(), base_hex)
        s = self._states.get(k)
        if s is None:
            s = state_value(self._model_aggregate, bytes.fromhex(base_hex),
                            self._model_points).hex()
            if len(self._states) > 4096:
                self._states.clear()
            self._states[k] = s
        return s

    def verify(self, doc: Mapping[str, Any], *, nonce: bytes | None = None,
               signature_verified_by: str | None = None) -> list[Check]:
        """All checks of ``doc``.

        ``signature_verified_by``: the key_id of a key this exact document's signature
        was already verified under by the caller (a fleet verifier's intake). When it
        is this verifier's key the signature check is not repeated: the outcome is a
        function of document and key, both unchanged. Any other value, or None, and
        the signature is verified here.
        """
        problem = _schema_problem(doc)
        if problem is not None:
            return [_fail("format", problem)]
        if signature_verified_by is not None and signature_verified_by == self._key_id \
                and doc["signature_alg"] == self._alg:
            signature = _pass("signature", "verified at intake under this key")
        else:
            signature = self._signature(doc)
        checks = [_pass("format"), signature]

        if nonce is None:
            checks.append(_skip("nonce", "no --nonce given, replay is not excluded"))
        elif doc["nonce"] != nonce.hex():
            checks.append(_fail("nonce", f"attested nonce {_short(doc['nonce'])} "
                                         f"is not the requested {_short(nonce.hex())}"))
        else:
            checks.append(_pass("nonce"))

        if self.expected_base is not None:
            if doc["base"] != self.expected_base.hex():
                checks.append(_fail("base", f"attested base {_short(doc['base'])} is not the "
                                            f"expected {_short(self.expected_base.hex())}"))
            else:
                checks.append(_pass("base"))

        md = doc["model_digest"]
        if md is None:
            checks.append(_skip("model-digest", "the domain loaded no model (learning mode)"))
        elif md != self._model_digest:
            checks.append(_fail("model-digest", f"the domain loaded model {_short(md)}, "
                                                f"not the given {_short(self._model_digest)}"))
        else:
            checks.append(_pass("model-digest"))

        agg = self._model_aggregate.hex()
        if doc["aggregate"] != agg:
            checks.append(_fail("aggregate", f"platform aggregate {_short(doc['aggregate'])} "
                                             f"differs from the model's {_short(agg)} "
                                             "(other platform state)"))
        else:
            checks.append(_pass("aggregate"))

        want = self.expected_state(doc["base"])
        if doc["state"] != want:
            n_model = len(set(self._model_points))
            checks.append(_fail("state", f"attested state {_short(doc['state'])} is not the "
                                         f"model's {_short(want)} (domain has {doc['points']} "
                                         f"points, model {n_model})"))
        else:
            checks.append(_pass("state"))

        f = doc["forensics"]
        checks.append(_pass("forensics") if f == 0 else
                      _fail("forensics", f"{f} forensic event(s): the workload left its model"))
        u = doc["trust"]["untrusted"]
        checks.append(_pass("trust") if u == 0 else
                      _fail("trust", f"{u} untrusted process(es)"))

        checks.extend(self._tpm(doc))
        return checks

    # -- pieces ----------------------------------------------------------------
    def _signature(self, doc: Mapping[str, Any]) -> Check:
        if doc["signature_alg"] != self._alg:
            return _fail("signature", f"signed with {doc['signature_alg']}, "
                                      f"the given key is {self._alg}")
        sig = _canonical_b64(doc["signature"])
        if sig is None:
            return _fail("signature", "signature is not canonical Base64")
        data = canonical(doc)
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(sig, data)
            else:
                self.key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            if doc["key_id"] != self._key_id:
                return _fail("signature", f"signed by another key (key_id "
                                          f"{_short(doc['key_id'])}, the given key is "
                                          f"{_short(self._key_id)})")
            return _fail("signature", "signature does not verify: document altered after "
                                      "signing")
        return _pass("signature")

    def _tpm(self, doc: Mapping[str, Any]) -> list[Check]:
        t = doc["tpm"]
        log = doc.get("pcr_log")
        if t is None:
            if self.ak is not None:
                return [_fail("tpm-quote", "--tpm-ak given but the attestation has no TPM "
                                           "quote (domain ran without a TPM)")]
            if log is not None:
                return [_fail("pcr-log", "PCR log without a TPM quote")]
            return [_skip("tpm-quote", "no TPM in the attesting domain")]
        if self.ak is None:
            return [_skip("tpm-quote", "no --tpm-ak given; hardware quote not checked")]
        try:
            pcrs = {int(k): bytes.fromhex(v) for k, v in t["pcrs"].items()}
            attest = b64decode_canonical(t["quote"], "quote")
            qsig = b64decode_canonical(t["quote_signature"], "quote_signature")
            q = parse_tpms_attest(attest)
        except (KeyError, TypeError, ValueError, AttributeError, InputError) as e:
            return [_fail("tpm-quote", f"malformed TPM section: {e}")]
        out: list[Check] = []
        sig_ok = _verify_quote_sig(self.ak, attest, qsig)
        if sig_ok is not None:
            return [_fail("tpm-quote", sig_ok)]
        if q.magic != TPM_GENERATED_VALUE:
            return [_fail("tpm-quote", "quote not generated by a TPM (bad magic)")]
        if q.extra_data != quote_qualifier(doc):
            return [_fail("tpm-quote", "quote qualifying data does not match this "
                                       "attestation's nonce and values")]
        out.append(_pass("tpm-quote"))
        selected = q.selection.get(TPM_ALG_SHA256, [])
        if sorted(pcrs) != selected or len(q.selection) != 1:
            out.append(_fail("tpm-pcrs", f"quoted PCRs {selected} differ from reported "
                                         f"{sorted(pcrs)}"))
            return out
        if any(len(v) != 32 for v in pcrs.values()) or \
                q.pcr_digest != pcr_digest(pcrs[i] for i in selected):
            out.append(_fail("tpm-pcrs", "reported PCR values do not match the quoted digest"))
            return out
        out.append(_pass("tpm-pcrs"))
        if not all(i in pcrs for i in AGGREGATE_PCRS):
            out.append(_fail("tpm-aggregate", "quote does not cover PCR 0-7"))
        elif hw_aggregate([pcrs[i] for i in AGGREGATE_PCRS]).hex() != doc["aggregate"]:
            out.append(_fail("tpm-aggregate", "attested aggregate is not H(PCR0..7) of the "
                                              "quoted PCRs"))
        else:
            out.append(_pass("tpm-aggregate"))
        if log is not None:
            out.append(_check_pcr_log(log, pcrs, doc["state"]))
        return out


def _verify_quote_sig(ak: object, attest: bytes, sig: bytes) -> str | None:
    try:
        if isinstance(ak, ec.EllipticCurvePublicKey):
            ak.verify(sig, attest, ec.ECDSA(hashes.SHA256()))
        elif isinstance(ak, rsa.RSAPublicKey):
            ak.verify(sig, attest, padding.PKCS1v15(), hashes.SHA256())
        else:
            return "unsupported attestation key type"
    except InvalidSignature:
        return "quote signature does not verify under the given AK"
    return None


def _check_pcr_log(log: Any, pcrs: Mapping[int, bytes], state: str) -> Check:
    """Replay the domain's extends of its state PCR (``--pcr``)."""
    try:
        index = int(log["pcr"])
        value = bytes.fromhex(log["initial"])
        extends: Sequence[str] = log["extends"]
        for e in extends:
            value = software_extend(value, bytes.fromhex(e))
    except (KeyError, TypeError, ValueError) as e:
        return _fail("pcr-log", f"malformed PCR log: {e}")
    if index not in pcrs:
        return _fail("pcr-log", f"PCR {index} not quoted")
    if pcrs[index] != value:
        return _fail("pcr-log", f"replaying the domain's extends does not give PCR {index} "
                                "(another party extended it)")
    if extends and extends[-1] != state:
        return _pass("pcr-log", "last extended state predates the attested one")
    return _pass("pcr-log")


def load_ak(data: bytes, source: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """Parse a TPM attestation key public PEM (ECDSA P-256 or RSA)."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise InputError(f"not a PEM public key ({e})", source=source) from e
    if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return key
    raise InputError("TPM AK must be an ECC or RSA public key", source=source)

