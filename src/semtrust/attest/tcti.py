"""Which TPM the options and the environment select, without loading the TPM stack.

Every ``semtrust run`` asks this; only a run that names a TPM pays for importing
:mod:`semtrust.attest.tpm` and talking to it.
"""

from __future__ import annotations

import os

__all__ = ["chosen_tcti", "default_tcti"]


def default_tcti() -> str | None:
    """The TCTI the environment selects (tpm2-tools conventions), if any."""
    for var in ("TPM2TOOLS_TCTI", "TCTI"):
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return None


def chosen_tcti(tcti: str | None) -> str | None:
    """The TCTI to open: ``tcti``, else the environment's; None for 'no TPM'.

    ``tcti`` may be ``"none"`` to force no TPM even when the environment names one.
    """
    chosen = tcti if tcti is not None else default_tcti()
    if chosen is None or chosen.strip().lower() in ("", "none"):
        return None
    return chosen
