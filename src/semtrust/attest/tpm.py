"""The link to a TPM 2.0: PCR reads, the hardware aggregate, PCR extension, quotes.

Everything that talks to a TPM lives here, behind :class:`TpmLink`, so the rest
of semtrust sees plain bytes. ``tpm2-pytss`` is imported lazily: without a TPM
(and without the package) the hardware aggregate is simply 0^32 (spec §2.8).

The attestation key (AK) is a restricted ECDSA P-256 signing key created as a
*primary* key in the owner hierarchy from a fixed template, so the same TPM
always yields the same AK (no key blob to store) and a verifier can pin its
public key once (``semtrust attest --tpm-ak-out``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from semtrust.attest.tcti import chosen_tcti, default_tcti
from semtrust.errors import SemtrustError
from semtrust.model.coefficient import hw_aggregate

__all__ = [
    "AGGREGATE_PCRS",
    "Quote",
    "TpmError",
    "TpmLink",
    "default_tcti",
    "describe_pcrs",
    "open_tpm",
    "pcr_digest",
    "software_extend",
]

#: PCRs that make up the hardware aggregate (spec §2.8: code reads 0-7).
AGGREGATE_PCRS: tuple[int, ...] = tuple(range(8))


class TpmError(SemtrustError):
    """The TPM could not be opened or refused a command."""


def pcr_digest(values: Iterable[bytes]) -> bytes:
    """TPMS_QUOTE_INFO.pcrDigest for SHA-256 PCR values in selection order."""
    h = hashlib.sha256()
    for v in values:
        h.update(v)
    return h.digest()


def software_extend(value: bytes, digest: bytes) -> bytes:
    """What a TPM does on PCR_Extend in the SHA-256 bank."""
    return hashlib.sha256(value + digest).digest()


@dataclass(frozen=True, slots=True)
class Quote:
    """A TPM2_Quote result, in forms a verifier can check without a TPM."""

    pcrs: dict[int, bytes]  # SHA-256 PCR values covered by the quote
    attest: bytes  # marshalled TPMS_ATTEST (the signed structure)
    signature: bytes  # DER ECDSA signature over SHA-256(attest)
    sig_alg: str  # "ecdsa-p256-sha256"


def _ak_template() -> Any:
    from tpm2_pytss import TPM2B_PUBLIC, TPMA_OBJECT
    from tpm2_pytss.constants import TPM2_ALG

    attrs = (
        TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.SIGN_ENCRYPT
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
    )
    pub = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=attrs)
    # A restricted signing key must not have a symmetric algorithm.
    pub.publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
    return pub


class TpmLink:
    """An open TPM (device or simulator). Thread-safe: one command at a time.

    ``tcti`` uses tpm2-tools syntax: ``device:/dev/tpmrm0``,
    ``swtpm:host=127.0.0.1,port=2321``, ``mssim:...``.
    """

    def __init__(self, tcti: str) -> None:
        try:
            from tpm2_pytss import ESAPI
        except ImportError as e:  # pragma: no cover - depends on install
            raise TpmError(
                "TPM support needs tpm2-pytss (pip install 'semtrust[tpm]')"
            ) from e
        self.tcti = tcti
        self._lock = threading.Lock()
        self._ak: Any = None
        self._ak_pem: bytes | None = None
        try:
            self._esapi: Any = ESAPI(tcti)
        except Exception as e:
            raise TpmError(f"cannot open TPM '{tcti}': {e}") from e

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._esapi is None:
                return
            try:
                if self._ak is not None:
                    self._esapi.flush_context(self._ak)
            except Exception:  # best effort: the TPM may already be gone
                pass
            self._ak = None
            self._esapi.close()
            self._esapi = None

    def __enter__(self) -> TpmLink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _live(self) -> Any:
        if self._esapi is None:
            raise TpmError("TPM link is closed")
        return self._esapi

    # -- PCRs ----------------------------------------------------------------
    def _read(self, indices: list[int]) -> dict[int, bytes]:
        from tpm2_pytss import TPML_PCR_SELECTION

        esapi = self._live()
        want = sorted(set(indices))
        for i in want:
            if not 0 <= i < 24:
                raise TpmError(f"PCR index {i} out of range 0-23")
        out: dict[int, bytes] = {}
        # A TPM returns at most 8 digests per read; ask again for the rest.
        for _ in range(len(want) + 1):
            rest = [i for i in want if i not in out]
            if not rest:
                break
            sel = TPML_PCR_SELECTION.parse("sha256:" + ",".join(str(i) for i in rest))
            try:
                _, sel_out, digests = esapi.pcr_read(sel)
            except Exception as e:
                raise TpmError(f"PCR read failed: {e}") from e
            got = [i for i in rest if self._selected(sel_out, i)]
            if not got:
                raise TpmError("TPM has no SHA-256 PCR bank")
            for i, d in zip(got, digests, strict=False):
                out[i] = bytes(d)
        return out

    @staticmethod
    def _selected(sel: Any, index: int) -> bool:
        from tpm2_pytss.constants import TPM2_ALG

        for k in range(sel.count):
            s = sel.pcrSelections[k]
            if s.hash != TPM2_ALG.SHA256:
                continue
            bits = bytes(s.pcrSelect)[: s.sizeofSelect]
            if index // 8 < len(bits) and bits[index // 8] & (1 << (index % 8)):
                return True
        return False

    def pcr_read(self, indices: Iterable[int]) -> dict[int, bytes]:
        """SHA-256 bank values of the given PCRs."""
        with self._lock:
            return self._read(list(indices))

    def hardware_aggregate(self) -> bytes:
        """HW_AGG = H(PCR0 || ... || PCR7), SHA-256 bank (spec §2.8)."""
        pcrs = self.pcr_read(AGGREGATE_PCRS)
        return hw_aggregate([pcrs[i] for i in AGGREGATE_PCRS])

    def extend(self, index: int, digest: bytes) -> bytes:
        """Extend a SHA-256 digest into PCR ``index``; return the new value."""
        from tpm2_pytss import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG

        if len(digest) != 32:
            raise TpmError("PCR extend needs a 32-byte SHA-256 digest")
        if not 0 <= index < 24:
            raise TpmError(f"PCR index {index} out of range 0-23")
        with self._lock:
            esapi = self._live()
            values = TPML_DIGEST_VALUES(
                [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))]
            )
            try:
                esapi.pcr_extend(ESYS_TR.parse(f"PCR{index}"), values)
            except Exception as e:
                raise TpmError(f"PCR {index} extend failed: {e}") from e
            return self._read([index])[index]

    # -- attestation key and quotes -------------------------------------------
    def _ensure_ak(self) -> Any:
        if self._ak is None:
            from tpm2_pytss.constants import ESYS_TR

            esapi = self._live()
            try:
                handle, public, *_ = esapi.create_primary(None, _ak_template(), ESYS_TR.OWNER)
            except Exception as e:
                raise TpmError(f"cannot create the attestation key: {e}") from e
            self._ak = handle
            self._ak_pem = bytes(public.to_pem())
        return self._ak

    def ak_public_pem(self) -> bytes:
        """PEM SubjectPublicKeyInfo of the attestation key."""
        with self._lock:
            self._ensure_ak()
            assert self._ak_pem is not None
            return self._ak_pem

    def quote(self, indices: Iterable[int], qualifying_data: bytes) -> Quote:
        """TPM2_Quote over SHA-256 PCRs with ``qualifying_data`` as extraData.

        The PCR values are read next to the quote and re-read if a PCR moved in
        between, so the reported values always match the quoted digest.
        """
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
        from tpm2_pytss import TPM2B_DATA, TPML_PCR_SELECTION, TPMS_ATTEST, TPMT_SIG_SCHEME
        from tpm2_pytss.constants import TPM2_ALG

        want = sorted(set(indices))
        if not want:
            raise TpmError("a quote needs at least one PCR")
        if len(qualifying_data) > 64:
            raise TpmError("qualifying data longer than 64 bytes")
        sel = "sha256:" + ",".join(str(i) for i in want)
        with self._lock:
            esapi = self._live()
            ak = self._ensure_ak()
            for _ in range(5):
                try:
                    quoted, sig = esapi.quote(
                        ak,
                        TPML_PCR_SELECTION.parse(sel),
                        TPM2B_DATA(qualifying_data),
                        TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
                    )
                except Exception as e:
                    raise TpmError(f"TPM quote failed: {e}") from e
                pcrs = self._read(want)
                attest = bytes(quoted)
                info, _ = TPMS_ATTEST.unmarshal(attest)
                if bytes(info.attested.quote.pcrDigest) == pcr_digest(pcrs[i] for i in want):
                    ecdsa = sig.signature.ecdsa
                    der = encode_dss_signature(
                        int.from_bytes(bytes(ecdsa.signatureR), "big"),
                        int.from_bytes(bytes(ecdsa.signatureS), "big"),
                    )
                    return Quote(pcrs=pcrs, attest=attest, signature=der,
                                 sig_alg="ecdsa-p256-sha256")
        raise TpmError("PCRs kept changing during the quote")


def open_tpm(tcti: str | None) -> TpmLink | None:
    """Open the TPM ``tcti`` names (or the environment's), or None for 'no TPM'.

    ``tcti`` may be ``"none"`` to force no TPM even when the environment names one.
    """
    chosen = chosen_tcti(tcti)
    return TpmLink(chosen) if chosen is not None else None


def describe_pcrs(pcrs: Mapping[int, bytes]) -> dict[str, str]:
    """JSON form of PCR values: {"0": hex, ...}."""
    return {str(i): pcrs[i].hex() for i in sorted(pcrs)}
