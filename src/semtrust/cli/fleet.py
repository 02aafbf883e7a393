"""``semtrust verifier ...`` (the fleet verifier service and its operator calls) and
``semtrust agent`` (the per-host pusher)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Any

import click

from semtrust.errors import InputError
from semtrust.fleet.db import DEFAULT_DB

OPERATOR_ENV = "SEMTRUST_OPERATOR_TOKEN"


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    return host.strip("[]") or "127.0.0.1", int(port)


def _read_token(path: str | None) -> str | None:
    if path is None:
        return os.environ.get(OPERATOR_ENV) or None
    try:
        with open(path, encoding="utf-8") as fp:
            token = fp.read(4096).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read token: {exc}", source=path) from None
    if len(token) < 16:
        raise InputError("operator token shorter than 16 characters", source=path)
    return token


def _read_text(path: str, what: str, limit: int = 64 << 20) -> str:
    try:
        with open(path, "rb") as fp:
            data = fp.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", source=path) from None
    if len(data) > limit:
        raise InputError(f"{what} larger than {limit} bytes", source=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} is not UTF-8 text", source=path) from None


def _operator(verifier: str, token_file: str | None) -> Any:
    from semtrust.fleet.client import OperatorClient

    token = _read_token(token_file)
    if token is None:
        raise InputError(f"no operator token (--token-file or ${OPERATOR_ENV})",
                         field="--token-file")
    return OperatorClient(verifier, token)


@click.group()
def verifier() -> None:
    """The fleet verifier service and its operator commands."""


@verifier.command()
@click.option("--db", default=DEFAULT_DB, show_default=True,
              help="SQLAlchemy URL: sqlite:///FILE or postgresql://USER@HOST/DB (psycopg 3).")
@click.option("--listen", default="127.0.0.1:8720", show_default=True, help="HOST:PORT.")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help=f"Operator token file (default ${OPERATOR_ENV}).")
@click.option("--stale-after", type=click.FloatRange(min=0.5), default=180.0,
              show_default=True, help="Seconds without a fresh attestation before 'stale'.")
@click.option("--nonce-ttl", type=click.FloatRange(min=1.0), default=300.0,
              show_default=True, help="Seconds a nonce stays valid.")
@click.option("--mqtt", metavar="URL",
              help="Publish status changes: mqtt://[user[:pass]@]host[:port]/topic.")
@click.option("--webhook", "webhooks", multiple=True, metavar="URL",
              help="Also POST status changes here (repeatable).")
@click.option("--max-body", type=click.IntRange(min=1024), default=8 << 20,
              show_default=True, help="Largest request body in bytes.")
@click.option("--workers", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="Verifier processes sharing the listening socket (and the database's "
                   "queue); one per core.")
def serve(db: str, listen: str, token_file: str | None, stale_after: float, nonce_ttl: float,
          mqtt: str | None, webhooks: tuple[str, ...], max_body: int, workers: int) -> None:
    """Serve the verifier API, metrics and web view (migrates the database first)."""
    from importlib.util import find_spec

    import uvicorn

    from semtrust.fleet.alerts import parse_mqtt_url
    from semtrust.fleet.app import CONFIG_ENV, ServerConfig, config_to_env, create_app
    from semtrust.fleet.db import open_engine, upgrade

    host, port = _listen(listen)
    for url in webhooks:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"not an http(s) URL: {url!r}", field="--webhook")
    cfg = ServerConfig(db=db, operator_token=_read_token(token_file), nonce_ttl=nonce_ttl,
                       stale_after=stale_after, max_body=max_body,
                       mqtt=parse_mqtt_url(mqtt) if mqtt else None, webhooks=list(webhooks))
    opts: dict[str, Any] = {
        "host": host, "port": port, "log_level": "warning", "access_log": False,
        "timeout_graceful_shutdown": 5,
        # uvloop's event loop and the httptools (llhttp) parser where installed: per
        # request they cost a fraction of asyncio's loop and the pure-Python h11.
        "loop": "uvloop" if find_spec("uvloop") else "auto",
        "http": "httptools" if find_spec("httptools") else "auto"}
    if workers == 1:
        uvicorn.run(create_app(cfg), **opts)
        return
    # Each worker is a fresh interpreter: it builds its app from the configuration in
    # its environment (inherited from this process only; same owner as the token file).
    engine = open_engine(cfg.db)
    upgrade(engine)  # once, before the workers start
    engine.dispose()
    os.environ[CONFIG_ENV] = config_to_env(cfg)
    uvicorn.run("semtrust.fleet.app:app_from_environment", factory=True, workers=workers,
                **opts)


@verifier.command()
@click.option("--verifier", "url", required=True, help="Verifier URL.")
@click.option("--token-file", type=click.Path(dir_okay=False))
@click.option("--name", required=True, help="Host name the agent will use.")
@click.option("--tma-key", required=True, type=click.Path(dir_okay=False),
              help="The host's TMA public key (PEM).")
@click.option("--tpm-ak", type=click.Path(dir_okay=False), help="TPM attestation key (PEM).")
def enroll(url: str, token_file: str | None, name: str, tma_key: str,
           tpm_ak: str | None) -> None:
    """Enroll a host: its TMA public key and, where present, its TPM AK."""
    body = {"name": name, "tma_key": _read_text(tma_key, "TMA key", 1 << 16),
            "tpm_ak": _read_text(tpm_ak, "TPM AK", 1 << 16) if tpm_ak else None}
    click.echo(json.dumps(_operator(url, token_file).post("/api/v1/hosts", body)))


@verifier.command("add-workload")
@click.option("--verifier", "url", required=True)
@click.option("--token-file", type=click.Path(dir_okay=False))
@click.option("--name", required=True)
@click.option("--signing-key", required=True, type=click.Path(dir_okay=False),
              help="RSA public key every model of this workload must be signed by.")
def add_workload(url: str, token_file: str | None, name: str, signing_key: str) -> None:
    """Create a workload and pin its model-signing key."""
    body = {"name": name, "signing_key": _read_text(signing_key, "signing key", 1 << 16)}
    click.echo(json.dumps(_operator(url, token_file).post("/api/v1/workloads", body)))


@verifier.command()
@click.option("--verifier", "url", required=True)
@click.option("--token-file", type=click.Path(dir_okay=False))
@click.option("--workload", required=True)
@click.argument("model", type=click.Path(dir_okay=False))
def upload(url: str, token_file: str | None, workload: str, model: str) -> None:
    """Upload a signed model as the workload's next version."""
    body = {"model": _read_text(model, "model")}
    path = f"/api/v1/workloads/{workload}/models"
    click.echo(json.dumps(_operator(url, token_file).post(path, body)))


@click.command()
@click.option("--verifier", "url", required=True, help="Verifier URL.")
@click.option("--host", "host", required=True, help="This host's enrolled name.")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False),
              help="The host's TMA private key (signs requests; domains sign attestations).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds between pushes (forensics are pushed at once).")
@click.option("--once", is_flag=True, help="Push one round and exit.")
@click.option("-v", "--verbose", is_flag=True)
def agent(url: str, host: str, key_path: str, interval: float, once: bool,
          verbose: bool) -> None:
    """Attest every running domain on this host and push to the verifier."""
    from semtrust.attest.attestation import load_private_key
    from semtrust.fleet.agent import Agent, push_once
    from semtrust.fleet.client import HostClient

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="semtrust agent: %(message)s", stream=sys.stderr)
    client = HostClient(url, host, load_private_key(key_path))
    if once:
        r = push_once(client)
        click.echo(json.dumps({"pushed": r.pushed, "skipped": r.skipped}))
        return
    a = Agent(client, interval=interval)
    signal.signal(signal.SIGTERM, lambda *_: a.stop.set())
    signal.signal(signal.SIGINT, lambda *_: a.stop.set())
    a.run()


def push_one(url: str, host: str, key_path: str, name: str) -> None:
    """``semtrust attest NAME --push URL``: one domain, one round."""
    from semtrust.attest.attestation import load_private_key
    from semtrust.errors import SemtrustError
    from semtrust.fleet.agent import push_once
    from semtrust.fleet.client import HostClient

    r = push_once(HostClient(url, host, load_private_key(key_path)), [name])
    if name not in r.pushed:
        raise SemtrustError(f"domain {name!r} not pushed: {r.skipped.get(name, 'unknown')}")
    click.echo(json.dumps({"pushed": r.pushed}))
