"""``semtrust run``, ``semtrust console`` and ``semtrust list``."""

from __future__ import annotations

import json
import sys

import click

from semtrust.cli.common import echo_result, hex32
from semtrust.orchestrator.mgmt import SHOW_VIEWS, list_domains, request, stream
from semtrust.orchestrator.pseudonyms import check_pseudonym_path
from semtrust.orchestrator.run import RunOptions, run_domain


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--name", help="Domain name (management socket NAME.sock).")
@click.option("--output", "output", type=click.Path(dir_okay=False),
              help="Write the model (or with --trajectory the events) here at the end.")
@click.option("--trajectory", is_flag=True, help="With --output: write export lines.")
@click.option("--model", "model", type=click.Path(dir_okay=False),
              help="Sealed model: new points become forensics, the process untrusted.")
@click.option("--enforce", is_flag=True, help="With --model: deny events outside it (EPERM).")
@click.option("--model-key", type=click.Path(dir_okay=False),
              help="Public key the --model must be signed by.")
@click.option("--allow-empty", is_flag=True, help="Accept a --model without points.")
@click.option("--tpm", metavar="TCTI",
              help="TPM for the hardware aggregate and quotes, e.g. device:/dev/tpmrm0 or "
                   "swtpm:host=127.0.0.1,port=2321 (default $TPM2TOOLS_TCTI/$TCTI; 'none').")
@click.option("--pcr", type=click.IntRange(0, 23),
              help="Extend the domain's state into this PCR at the end and on 'attest --extend'.")
@click.option("--base", metavar="HEX", help="Base nonce (64 hex digits) for measurement/state.")
@click.option("--tma-key", type=click.Path(dir_okay=False),
              help="Private key (RSA or Ed25519 PEM) that signs attestations.")
@click.option("--bundle", metavar="DIR",
              help="Run this OCI bundle under runc (COMMAND overrides process.args).")
@click.option("--tma", "tma", metavar="ADDR",
              help="External TMA (semtrust tma serve): unix:PATH or tcp:HOST:PORT.")
@click.option("--tma-cert", type=click.Path(dir_okay=False), help="Client certificate (tcp:).")
@click.option("--tma-cert-key", type=click.Path(dir_okay=False), help="Its private key.")
@click.option("--tma-ca", type=click.Path(dir_okay=False), help="CA of the TMA's certificate.")
@click.option("--export", "export", metavar="mqtt://HOST:PORT/TOPIC",
              help="Also publish every event record to this MQTT topic (QoS 1).")
@click.option("--pseudonym", "pseudonyms", multiple=True, metavar="PATH",
              help="Do not measure this file's content (absolute path as the workload sees it; "
                   "repeatable). Learned models keep it as a pseudonym line.")
@click.option("--no-default-pseudonyms", is_flag=True,
              help="When learning, do not add the default pseudonyms (/etc/ld.so.cache).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(name: str | None, output: str | None, trajectory: bool, model: str | None,
        enforce: bool, model_key: str | None, allow_empty: bool, tpm: str | None,
        pcr: int | None,
        base: str | None, tma_key: str | None, bundle: str | None, tma: str | None,
        tma_cert: str | None, tma_cert_key: str | None, tma_ca: str | None,
        export: str | None, pseudonyms: tuple[str, ...], no_default_pseudonyms: bool,
        command: tuple[str, ...]) -> None:
    """Run COMMAND (default: your shell) in a new modeling domain; exit with its code."""
    if trajectory and output is None:
        raise click.UsageError("--trajectory needs --output")
    if enforce and model is None:
        raise click.UsageError("--enforce needs --model")
    if output is not None:
        from semtrust.orchestrator.output import check_writable

        check_writable(output)  # before the workload runs, not after hours of learning
    opts = RunOptions(command=command, name=name, output=output,
                      trajectory=trajectory, model=model, enforce=enforce,
                      model_key=model_key, allow_empty=allow_empty, tpm=tpm, pcr=pcr,
                      base=hex32(base, "--base"), tma_key=tma_key, tma=tma, export=export,
                      tma_tls=_tls(tma_cert, tma_cert_key, tma_ca),
                      pseudonyms=[check_pseudonym_path(p) for p in pseudonyms],
                      default_pseudonyms=not no_default_pseudonyms)
    if bundle is not None:  # container mode
        from semtrust.orchestrator.container import run_container

        sys.exit(run_container(opts, bundle, list(command) or None))
    code = run_domain(opts)
    sys.exit(code)


def _tls(cert: str | None, key: str | None, ca: str | None) -> tuple[str, str, str] | None:
    if cert is None and key is None and ca is None:
        return None
    if cert is None or key is None or ca is None:
        raise click.UsageError("--tma-cert, --tma-cert-key and --tma-ca go together")
    return cert, key, ca


@click.command()
@click.argument("name")
@click.argument("verb", type=click.Choice(["show", "follow"]))
@click.argument("what", required=False, type=click.Choice(list(SHOW_VIEWS)))
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON result.")
def console(name: str, verb: str, what: str | None, as_json: bool) -> None:
    """Query a running domain: show trajectory, forensics, points, counts, state, ...;
    follow streams new points, forensic events (with their reason), calls of untrusted
    processes and faults as JSON lines until the domain ends."""
    if verb == "follow":
        if what is not None:
            raise click.UsageError("follow takes no view")
        for item in stream(name, {"op": "follow"}):
            click.echo(json.dumps(item, separators=(",", ":")))
            sys.stdout.flush()
        return
    if what is None:
        raise click.UsageError(f"show needs a view: {', '.join(SHOW_VIEWS)}")
    result = request(name, {"op": verb, "what": what})
    if as_json:
        if what in RECORD_VIEWS and isinstance(result, list):
            result = [_record(item) for item in result]
        click.echo(json.dumps(result, indent=2))
    else:
        echo_result(result)


#: Views whose items are export lines: ``--json`` prints them as objects.
RECORD_VIEWS = ("trajectory", "forensics")


def _record(item: object) -> object:
    if isinstance(item, str):
        try:
            return json.loads(item)
        except ValueError:
            return item
    return item


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """Running modeling domains."""
    doms = list_domains()
    if as_json:
        click.echo(json.dumps(doms, indent=2))
        return
    for d in doms:
        cmd = " ".join(d.get("command") or [])
        click.echo(f"{d.get('name')}\tpid={d.get('pid')}\tmode={d.get('mode')}\t{cmd}")
