"""``semtrust model``: show, diff, merge, refresh, keygen, sign and verify model files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

import click

from semtrust.errors import InputError
from semtrust.events.describe import describe
from semtrust.model import signing
from semtrust.model.coefficient import ZERO, state_value
from semtrust.model.explain import CONTENT_CHANGED, Pair, file_of, is_code, pair_points
from semtrust.model.merge import Entry, entries_of, group, merge_models, program_of, type_of
from semtrust.model.modelfile import Model, load_model, point_descriptions, render_parsed
from semtrust.model.refresh import refresh_model

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
    """Explain how B differs from A (exit 1 when they differ).

    Points for the same file of the same program whose only difference is the
    content are paired as "content changed" (with the --pseudonym that would
    absorb it); the other points only in A or only in B are grouped by program
    and event type.
    """
    ma = load_model(a, allow_unsigned=allow_unsigned, allow_empty=True)
    mb = load_model(b, allow_unsigned=allow_unsigned, allow_empty=True)
    ea = {e.point: e for e in entries_of(ma)}
    eb = {e.point: e for e in entries_of(mb)}
    only_a = [p for p in ea if p not in eb]
    only_b = [p for p in eb if p not in ea]
    common = len(ea.keys() & eb.keys())
    rec_a = {p: e.record for p, e in ea.items() if e.record is not None}
    rec_b = {p: e.record for p, e in eb.items() if e.record is not None}
    pairs = pair_points(only_a, only_b, rec_a, rec_b)
    paired = {x.a for x in pairs} | {x.b for x in pairs}
    rest_a = [ea[p] for p in only_a if p not in paired]
    rest_b = [eb[p] for p in only_b if p not in paired]
    agg = ma.aggregate != mb.aggregate
    pseud = set(ma.pseudonyms) != set(mb.pseudonyms)
    if as_json:
        click.echo(json.dumps({
            "changed": [_pair_json(x) for x in pairs],
            "only_in_a": [_entry_json(e) for e in rest_a],
            "only_in_b": [_entry_json(e) for e in rest_b],
            "common": common,
            "aggregate_differs": agg,
            "pseudonyms_differ": pseud,
        }))
    else:
        if agg:
            click.echo("aggregates differ")
        if pseud:
            click.echo("pseudonyms differ")
        for x in pairs:
            ex = x.explanation
            click.echo(f"~ {x.event_b.type} {x.event_b.process or '?'} {ex.text()}")
            click.echo(f"    {x.a.hex()} -> {x.b.hex()}")
        for mark, rest, src in (("-", rest_a, a), ("+", rest_b, b)):
            for prog, by_type in group(rest).items():
                for etype, items in by_type.items():
                    click.echo(f"{mark} {prog} {etype}: {len(items)} point(s) only in {src}")
                    for e in items:
                        text = e.description or (describe(e.record) if e.record else "")
                        click.echo(f"{mark}   {e.point.hex()}  {text}".rstrip())
        click.echo(f"{len(pairs)} changed, {len(rest_a)} only in {a}, {len(rest_b)} only in "
                   f"{b}, {common} common")
    if only_a or only_b or agg or pseud:
        raise SystemExit(1)


def _entry_json(e: Entry) -> dict[str, object]:
    return {"point": e.point.hex(), "event": e.description,
            "program": program_of(e.record, e.description),
            "type": type_of(e.record, e.description)}


def _pair_json(x: Pair) -> dict[str, object]:
    out: dict[str, object] = {"a": x.a.hex(), "b": x.b.hex(), "type": x.event_b.type,
                              "program": x.event_b.process}
    out.update(x.explanation.as_json())
    f = file_of(x.event_b)
    if x.explanation.kind == CONTENT_CHANGED and f is not None:
        out["suggest"] = "semtrust model refresh" if is_code(x.event_b, f) else \
            f"--pseudonym {f.path.pathname}"
    return out


def _write_model(text: str, output: str, keyfile: str | None) -> None:
    """Write a composed model, signed with ``keyfile`` if given (else unsigned)."""
    if keyfile is not None:
        text = signing.sign_model_text(text, signing.load_private_key(keyfile))
    tmp = f"{output}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fp:
            fp.write(text)
        os.replace(tmp, output)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InputError(f"cannot write: {exc.strerror}", source=output) from None


_KEY = click.option("--key", "keyfile", type=click.Path(dir_okay=False),
                    help="Sign the result with this RSA private key (default: unsigned).")
_MODEL_KEY = click.option("--model-key", type=click.Path(dir_okay=False),
                          help="Require every input to be signed by this public key.")


@model.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option("--allow-mismatch", is_flag=True,
              help="Merge models with different aggregates or bases (the first one's win).")
@_KEY
@_MODEL_KEY
@_ALLOW
def merge(models: tuple[str, ...], output: str, allow_mismatch: bool, keyfile: str | None,
          model_key: str | None, allow_unsigned: bool) -> None:
    """The union of several learned models (points, descriptions, pseudonyms)."""
    loaded = [load_model(m, key=model_key, allow_unsigned=allow_unsigned) for m in models]
    out = merge_models(loaded, allow_mismatch=allow_mismatch)
    _write_model(out.render(), output, keyfile)
    for note in out.notes:
        click.echo(f"semtrust: note: {note}", err=True)
    click.echo(f"merged {len(loaded)} model(s): {len(out.entries)} points, "
               f"{len(out.pseudonyms)} pseudonym(s) -> {output}"
               f"{'' if keyfile else ' (unsigned)'}")


@model.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option("--packages", is_flag=True,
              help="Apply a changed file only if it matches the dpkg database's checksum "
                   "(the loader cache: if ldconfig regenerates it); list the rest for review.")
@click.option("--json", "as_json", is_flag=True, help="Print what changed as one JSON object.")
@_KEY
@_MODEL_KEY
@_ALLOW
def refresh(path: str, output: str, packages: bool, as_json: bool, keyfile: str | None,
            model_key: str | None, allow_unsigned: bool) -> None:
    """Recompute the model's file points against the host's files as they are now."""
    m = load_model(path, key=model_key, allow_unsigned=allow_unsigned)
    out, changes, unrecorded = refresh_model(m, packages=packages)
    _write_model(out.render(), output, keyfile)
    if as_json:
        click.echo(json.dumps({"output": output, "signed": keyfile is not None,
                               "points": len(out.entries), "unrecorded": unrecorded,
                               "changes": [c.as_json() for c in changes]}))
        return
    for c in changes:
        digests = f" {(c.old_digest or '')[:16]}… -> {(c.new_digest or '')[:16]}…" \
            if c.new_digest else ""
        click.echo(f"{c.status:<10}{c.path}: {c.why}{digests}"
                   f"{f' ({c.points} point(s))' if c.points else ''}")
    if unrecorded:
        click.echo(f"semtrust: {unrecorded} point(s) carry no recorded event and were kept "
                   "as they are (learn again to refresh them)", err=True)
    review = sum(1 for c in changes if c.status == "review")
    click.echo(f"wrote {output}{'' if keyfile else ' (unsigned)'}: {len(out.entries)} points"
               f"{f', {review} file(s) left for review (not applied)' if review else ''}")


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
