"""Hardware root of trust and attestation.

``tpm`` talks to a TPM (PCRs, hardware aggregate, extend, quotes);
``attestation`` builds and signs state attestations; ``verify`` checks them
against a model; ``swtpm`` runs a private software TPM for tests and demos.
"""
