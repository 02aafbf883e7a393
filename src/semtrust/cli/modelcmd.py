"""``semtrust model``: show, diff, keygen, sign and verify model files."""

from __future__ import annotations

import hashlib
import json

import click

from semtrust.errors import InputError
from semtrust.model import signing
from semtrust.model.coefficient import ZERO, state_value
from semtrust.model.modelfile import Model, load_model, point_descriptions, render_parsed

_ALLOW = click.option("--allow-unsigned", is_flag=True,
                      help="Accept a model with a key but no signature.")


def _fingerprint(pem: bytes) -> str:
    der = signing.public_der(signing.load_public_key_pem(pem))
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _summary(m: Model) -> dict[str, object]:
    return {
        "model": m.source,
        "digest": m.digest.hex(),
        "signed": m.signed,
        "signer": _fingerprint(m.key_pem) if m.key_pem else None,
        "aggregate": m.aggregate.hex() if m.aggregate else None,
        "base": m.base.hex() if m.base else None,
        "pseudonyms": len(m.pseudonyms),
        "points": len(set(m.points)),
        "sealed": m.sealed,
        "state": state_value(m.aggregate or ZERO, m.base or ZERO, m.points).hex(),
    }


@click.group()
def model() -> None:
    """Inspect, compare, sign and verify model files."""


@model.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--points", "list_points", is_flag=True, help="List every point.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_ALLOW
def show(path: str, list_points: bool, as_json: bool, allow_unsigned: bool) -> None:
    """Summarise a model: signer, aggregate, point count and the state it implies."""
    m = load_model(path, allow_unsigned=allow_unsigned, allow_empty=True)
    info = _summary(m)
    if list_points:
        info["point_list"] = [p.hex() for p in m.points]
    if as_json:
        click.echo(json.dumps(info))
        return
    for key, value in info.items():
        if key == "point_list":
            continue
        click.echo(f"{key:<11}{value}")
    if list_points:
        desc = point_descriptions(m)
        for p in m.points:
            click.echo(f"state {p.hex()}  {desc.get(p, '')}".rstrip())


@model.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_ALLOW
def diff(a: str, b: str, as_json: bool, allow_unsigned: bool) -> None:
    """Points only in A and only in B (exit 1 when they differ)."""
    ma = load_model(a, allow_unsigned=allow_unsigned, allow_empty=True)
    mb = load_model(b, allow_unsigned=allow_unsigned, allow_empty=True)
    sa, sb = set(ma.points), set(mb.points)
    desc = point_descriptions(ma) | point_descriptions(mb)
    only_a = [p for p in dict.fromkeys(ma.points) if p not in sb]
    only_b = [p for p in dict.fromkeys(mb.points) if p not in sa]
    if as_json:
        click.echo(json.dumps({
            "only_in_a": [{"point": p.hex(), "event": desc.get(p)} for p in only_a],
            "only_in_b": [{"point": p.hex(), "event": desc.get(p)} for p in only_b],
            "common": len(sa & sb),
            "aggregate_differs": ma.aggregate != mb.aggregate,
        }))
    else:
        if ma.aggregate != mb.aggregate:
            click.echo("aggregates differ")
        for mark, pts in (("-", only_a), ("+", only_b)):
            for p in pts:
                click.echo(f"{mark} {p.hex()}  {desc.get(p, '')}".rstrip())
        click.echo(f"{len(only_a)} only in {a}, {len(only_b)} only in {b}, {len(sa & sb)} common")
    if only_a or only_b or ma.aggregate != mb.aggregate:
        raise SystemExit(1)


@model.command()
@click.argument("keyfile", type=click.Path(dir_okay=False))
@click.option("--type", "kind", type=click.Choice(["rsa", "ed25519"]), default="rsa",
              show_default=True,
              help="rsa for model signing (reference format); ed25519 for TMA attestation keys.")
def keygen(keyfile: str, kind: str) -> None:
    """Write KEYFILE (private, PEM, mode 0600) and KEYFILE.pub."""
    private, public = signing.write_keypair(keyfile, signing.generate_key(kind))
    click.echo(f"wrote {private} and {public}")


@model.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--key", "keyfile", required=True, type=click.Path(dir_okay=False),
              help="RSA private key (PEM).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Signed model to write.")
@_ALLOW
@click.option("--allow-empty", is_flag=True, help="Sign a model without points.")
def sign(path: str, keyfile: str, output: str, allow_unsigned: bool, allow_empty: bool) -> None:
    """Sign a model: key line, the model's lines, signature line."""
    m = load_model(path, allow_unsigned=True, allow_empty=allow_empty)
    text = signing.sign_model_text(render_parsed(m), signing.load_private_key(keyfile))
    try:
        with open(output, "w", encoding="utf-8") as fp:
            fp.write(text)
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror}", source=output) from None
    click.echo(f"signed {path} -> {output}")


@model.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--key", "pubkey", type=click.Path(dir_okay=False),
              help="Require this signer (PEM public key).")
def verify(path: str, pubkey: str | None) -> None:
    """Verify a signed model (exit 0 only if the signature verifies)."""
    m = load_model(path, key=pubkey, allow_empty=True)
    if not m.signed or m.key_pem is None:
        raise InputError("model is not signed", source=path, field="signature")
    click.echo(f"OK {path}: signed by {_fingerprint(m.key_pem)}, {len(m.points)} points")
