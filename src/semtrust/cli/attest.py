"""``semtrust attest`` (ask a running domain for a signed attestation) and
``semtrust verify`` (check one against a model, offline).

``verify`` prints one line per check (``PASS name`` / ``FAIL name: reason`` /
``SKIP name: reason``) and exits 0 only if nothing FAILs, 1 if a check fails,
2 on bad input (unreadable file, not a well-formed attestation, not a key) or
when neither ``--nonce`` nor ``--no-nonce`` is given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from semtrust.attest.attestation import dumps, load_public_key, parse_nonce, read_bounded
from semtrust.attest.verify import MAX_ATTESTATION_BYTES, Verifier, load_ak, parse_attestation
from semtrust.cli.common import hex32
from semtrust.errors import InputError
from semtrust.model.modelfile import load_model


def _nonce(value: str | None, option: str) -> bytes | None:
    if value is None:
        return None
    try:
        return parse_nonce(value, field=option)
    except InputError as exc:
        raise click.BadParameter(exc.message, param_hint=option) from None


def read_attestation(path: str) -> dict[str, Any]:
    """Read and strictly parse an attestation file (``-`` = stdin); InputError if not a
    well-formed document (see ``semtrust.attest.verify.parse_attestation``)."""
    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_ATTESTATION_BYTES + 1)
        else:
            with open(path, "rb") as fp:
                data = fp.read(MAX_ATTESTATION_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=source) from None
    return parse_attestation(data, source=source)


@click.command()
@click.argument("attestation", metavar="FILE")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False),
              help="TMA public key (PEM, Ed25519 or RSA) the attestation must be signed by.")
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Model the domain must be in (signed models are verified).")
@click.option("--nonce", metavar="HEX", help="The nonce you sent with 'semtrust attest' (hex).")
@click.option("--no-nonce", is_flag=True,
              help="Check without a nonce: accept that the attestation may be a replay.")
@click.option("--tpm-ak", "ak_path", type=click.Path(dir_okay=False),
              help="TPM attestation key public PEM: check the hardware quote.")
@click.option("--base", metavar="HEX", help="Require this base nonce (64 hex digits).")
@click.option("--model-key", type=click.Path(dir_okay=False),
              help="Public key the model must be signed by.")
@click.option("--allow-empty", is_flag=True, help="Accept a --model without points.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON object.")
def verify(attestation: str, key_path: str, model_path: str, nonce: str | None,
           no_nonce: bool, ak_path: str | None, base: str | None, model_key: str | None,
           allow_empty: bool, as_json: bool) -> None:
    """Check a signed attestation against a model: signature, nonce, state, forensics, quote.

    The state the model implies is recomputed (aggregate first, then its sorted
    points, under the attested base) and compared with the attested one; no
    trajectory is needed. Without the nonce you sent, an old attestation of a
    good state could be replayed; so one of --nonce and --no-nonce is required.
    """
    if nonce is None and not no_nonce:
        raise click.UsageError("give --nonce HEX (the nonce you sent to 'semtrust attest'), "
                               "or --no-nonce to accept a possibly replayed attestation")
    if nonce is not None and no_nonce:
        raise click.UsageError("--nonce and --no-nonce exclude each other")
    want_nonce = _nonce(nonce, "--nonce")
    want_base = hex32(base, "--base")
    key = load_public_key(key_path)
    model = load_model(model_path, key=model_key, allow_empty=allow_empty)
    ak = None
    if ak_path is not None:
        ak = load_ak(read_bounded(ak_path, "TPM attestation key"), ak_path)
    doc = read_attestation(attestation)
    checks = Verifier(key, model, ak=ak, expected_base=want_base).verify(doc, nonce=want_nonce)
    ok = not any(c.failed for c in checks)
    if as_json:
        click.echo(json.dumps({
            "ok": ok,
            "checks": [{"name": c.name, "status": c.status, "reason": c.reason}
                       for c in checks],
        }))
    else:
        for c in checks:
            click.echo(c.line())
    sys.exit(0 if ok else 1)


@click.command()
@click.argument("name")
@click.option("--nonce", metavar="HEX",
              help="Verifier-chosen nonce, 1-64 bytes as hex (required without --push).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the attestation here (default: stdout).")
@click.option("--extend", is_flag=True,
              help="First extend the current state into the domain's --pcr.")
@click.option("--tpm-ak-out", type=click.Path(dir_okay=False),
              help="Also write the domain TPM's attestation key (PEM) here.")
@click.option("--push", "push_url", metavar="URL",
              help="Get a nonce from this fleet verifier and push the attestation to it.")
@click.option("--host", "host", help="With --push: this host's enrolled name.")
@click.option("--host-key", type=click.Path(dir_okay=False),
              help="With --push: the host's TMA private key (signs the request).")
def attest(name: str, nonce: str | None, output: str | None, extend: bool,
           tpm_ak_out: str | None, push_url: str | None, host: str | None,
           host_key: str | None) -> None:
    """Ask running domain NAME for a signed attestation of its state."""
    if push_url is not None:
        if host is None or host_key is None:
            raise click.UsageError("--push needs --host and --host-key")
        from semtrust.cli.fleet import push_one

        push_one(push_url, host, host_key, name)
        return
    if nonce is None:
        raise click.UsageError("--nonce is required (or use --push URL)")
    value = _nonce(nonce, "--nonce")
    assert value is not None
    from semtrust.attest.service import request_attestation

    doc = request_attestation(name, value, extend=extend)
    text = dumps(doc)
    if tpm_ak_out is not None:
        tpm = doc.get("tpm")
        if not isinstance(tpm, dict) or not isinstance(tpm.get("ak"), str):
            raise InputError("the domain has no TPM, so there is no attestation key",
                             field="--tpm-ak-out")
        _write(tpm_ak_out, tpm["ak"])
    if output is None:
        click.echo(text, nl=False)
    else:
        _write(output, text)


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror}", source=path) from None
