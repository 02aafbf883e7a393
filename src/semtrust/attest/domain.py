"""The hardware/attestation side of one modeling domain.

The orchestrator creates one :class:`DomainTrust` per domain from the ``run``
options (``--tpm``, ``--pcr``, ``--base``, ``--tma-key``) and calls it at three
moments: :meth:`prepare` before the workload starts (base nonce, hardware
aggregate, model), :meth:`attest` for a management ``attest`` request, and
:meth:`finish` when the workload ends (optional PCR extension of the state).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semtrust.attest.tcti import chosen_tcti
from semtrust.errors import InputError
from semtrust.model.coefficient import ZERO
from semtrust.model.tma import TMA

# The TPM and signing stacks are imported when a run names a TPM or a key: most runs
# have neither and should not pay for loading them.
if TYPE_CHECKING:
    from semtrust.attest.attestation import PrivateKey
    from semtrust.attest.tpm import TpmLink
    from semtrust.model.modelfile import Model

__all__ = ["DomainTrust", "Snapshot", "TrustOptions"]


@dataclass(frozen=True, slots=True)
class TrustOptions:
    """``run`` options of this module. ``tcti=None`` means: use the environment."""

    tcti: str | None = None
    pcr: int | None = None
    base: bytes | None = None
    tma_key: Path | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """TMA values read together (under the domain's lock, if it has one)."""

    mode: str
    aggregate: bytes
    base: bytes
    measurement: bytes
    state: bytes
    points: int
    forensics: int

    @classmethod
    def of(cls, tma: TMA) -> Snapshot:
        return cls(
            mode=tma.mode.name.lower(),
            aggregate=tma.aggregate if tma.aggregate is not None else ZERO,
            base=tma.base,
            measurement=tma.measurement,
            state=tma.state(),
            points=len(tma.points()),
            forensics=tma.forensics_count,
        )


class DomainTrust:
    """TPM link, hardware aggregate, base nonce, TMA key and PCR log of a domain."""

    def __init__(self, name: str, options: TrustOptions) -> None:
        self.name = name
        self.options = options
        if options.pcr is not None and not 0 <= options.pcr < 24:
            raise InputError("PCR index must be 0-23", field="--pcr")
        if options.base is not None and len(options.base) != 32:
            raise InputError("base must be 32 bytes (64 hex digits)", field="--base")
        self.key: PrivateKey | None = None
        if options.tma_key is not None:
            from semtrust.attest.attestation import load_private_key

            self.key = load_private_key(options.tma_key)
        tcti = chosen_tcti(options.tcti)
        self.tpm: TpmLink | None = None
        if tcti is not None:
            from semtrust.attest.tpm import TpmLink

            self.tpm = TpmLink(tcti)
        if options.pcr is not None and self.tpm is None:
            raise InputError("--pcr needs a TPM (--tpm TCTI or TPM2TOOLS_TCTI)", field="--pcr")
        # Held across extend + PCR log + quote, so the log always matches the quoted PCR.
        self._lock = threading.RLock()
        self.model_digest: bytes | None = None
        self.model_aggregate: bytes | None = None
        self.aggregate = ZERO
        self._pcr_initial: bytes | None = None
        if self.tpm is not None:
            from semtrust.attest.tpm import TpmError

            try:
                self.aggregate = self.tpm.hardware_aggregate()
                if options.pcr is not None:
                    self._pcr_initial = self.tpm.pcr_read([options.pcr])[options.pcr]
            except TpmError:
                self.close()
                raise
        self._extends: list[bytes] = []

    # -- start -----------------------------------------------------------------
    def prepare(self, tma: TMA, model: Model | None = None) -> None:
        """Set base, platform aggregate and model, in the order the spec needs.

        The platform's own aggregate always wins over a model's ``aggregate``
        line: a model learned on another platform state must not validate here.
        ``--base`` wins over a model's ``base`` line.
        """
        if model is not None:
            self.model_digest = model.digest
            self.model_aggregate = model.aggregate
            tma.load_model(model, base=self.options.base, aggregate=self.aggregate)
        else:
            if self.options.base is not None:
                tma.set_base(self.options.base)
            tma.set_aggregate(self.aggregate)

    def aggregate_mismatch(self) -> str | None:
        """A warning when the loaded model was learned on another platform state."""
        m = self.model_aggregate
        if m is None or m == self.aggregate:
            return None
        return (f"model aggregate {m.hex()[:16]}… differs from this platform's "
                f"{self.aggregate.hex()[:16]}…: its state will not verify")

    # -- PCR -------------------------------------------------------------------
    def extend_state(self, tma: TMA | Snapshot) -> bytes | None:
        """Extend the current state into ``--pcr`` (never per event); new PCR value."""
        if self.options.pcr is None or self.tpm is None:
            return None
        state = tma.state if isinstance(tma, Snapshot) else tma.state()
        with self._lock:
            value = self.tpm.extend(self.options.pcr, state)
            self._extends.append(state)
        return value

    def pcr_log(self) -> dict[str, Any] | None:
        if self.options.pcr is None or self._pcr_initial is None:
            return None
        with self._lock:
            return {
                "pcr": self.options.pcr,
                "initial": self._pcr_initial.hex(),
                "extends": [e.hex() for e in self._extends],
            }

    # -- attestation -------------------------------------------------------------
    def attest(
        self,
        tma: TMA | Snapshot,
        nonce: bytes,
        *,
        untrusted: Sequence[Mapping[str, Any]] = (),
        extend: bool = False,
    ) -> dict[str, Any]:
        """A signed attestation document (with a TPM quote when there is a TPM)."""
        if self.key is None:
            raise InputError("this domain has no TMA key (start it with run --tma-key FILE)",
                             field="attest")
        from semtrust.attest.attestation import build_attestation, sign_document
        from semtrust.attest.tpm import AGGREGATE_PCRS

        snap = tma if isinstance(tma, Snapshot) else Snapshot.of(tma)
        if extend and self.options.pcr is None:
            raise InputError("extend requested but the domain has no --pcr", field="attest")
        pcrs: list[int] = list(AGGREGATE_PCRS)
        if self.options.pcr is not None and self.options.pcr not in pcrs:
            pcrs.append(self.options.pcr)
        with self._lock:
            if extend:
                self.extend_state(snap)
            doc = build_attestation(
                domain=self.name,
                mode=snap.mode,
                aggregate=snap.aggregate,
                base=snap.base,
                measurement=snap.measurement,
                state=snap.state,
                points=snap.points,
                forensics=snap.forensics,
                model_digest=self.model_digest,
                untrusted=untrusted,
                nonce=nonce,
                tpm=self.tpm,
                quote_pcrs=pcrs,
                pcr_log=self.pcr_log(),
            )
        return sign_document(doc, self.key)

    def ak_public_pem(self) -> bytes | None:
        return self.tpm.ak_public_pem() if self.tpm is not None else None

    # -- end -------------------------------------------------------------------
    def finish(self, tma: TMA) -> bytes | None:
        """At workload end: extend the final state into ``--pcr`` if configured."""
        return self.extend_state(tma)

    def close(self) -> None:
        if self.tpm is not None:
            self.tpm.close()
            self.tpm = None
