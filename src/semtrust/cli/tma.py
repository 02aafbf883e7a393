"""``semtrust tma`` (serve, show, attest, domains) and ``semtrust export``."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from semtrust.cli.common import echo_result
from semtrust.errors import InputError

if TYPE_CHECKING:
    from semtrust.tma.domains import ServedDomain
    from semtrust.tma.server import TMAServer
from semtrust.tma.protocol import Address, ProtocolError, RemoteError, TLSFiles, parse_address


def _addr(text: str, option: str) -> Address:
    try:
        return parse_address(text, option)
    except ProtocolError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _tls(cert: str | None, key: str | None, ca: str | None, names: str) -> TLSFiles | None:
    given = [x for x in (cert, key, ca) if x is not None]
    if not given:
        return None
    if len(given) != 3 or cert is None or key is None or ca is None:
        raise click.UsageError(f"{names} go together")
    return TLSFiles(cert, key, ca)


_client_tls = [
    click.option("--cert", type=click.Path(dir_okay=False), help="Client certificate (tcp:)."),
    click.option("--cert-key", type=click.Path(dir_okay=False), help="Its private key."),
    click.option("--ca", type=click.Path(dir_okay=False), help="CA of the TMA's certificate."),
]


F = TypeVar("F", bound=Callable[..., Any])


def _with_client_tls(f: F) -> F:
    for opt in reversed(_client_tls):
        f = opt(f)
    return f


@click.group()
def tma() -> None:
    """An external Trusted Modeling Agent: serve one, or query it."""


@tma.command()
@click.option("--listen", "listen", multiple=True, required=True, metavar="ADDR",
              help="unix:PATH or tcp:HOST:PORT (mutual TLS); may be repeated.")
@click.option("--key", "key_path", type=click.Path(dir_okay=False),
              help="Private key (RSA or Ed25519 PEM) that signs attestations.")
@click.option("--allow-uid", "allow_uid", type=int, multiple=True,
              help="Uid allowed on the Unix socket (default: this process's uid).")
@click.option("--cert", type=click.Path(dir_okay=False), help="Server certificate (tcp:).")
@click.option("--cert-key", type=click.Path(dir_okay=False), help="Its private key.")
@click.option("--client-ca", type=click.Path(dir_okay=False),
              help="CA that signs the certificates of allowed clients.")
@click.option("--from", "sources", multiple=True, metavar="mqtt://HOST:PORT/TOPIC",
              help="Also model the event streams exported to this topic (no enforcement).")
def serve(listen: tuple[str, ...], key_path: str | None, allow_uid: tuple[int, ...],
          cert: str | None, cert_key: str | None, client_ca: str | None,
          sources: tuple[str, ...]) -> None:
    """Serve modeling domains until SIGTERM or SIGINT."""
    from semtrust.attest.attestation import load_private_key
    from semtrust.tma.server import TMAServer

    addrs = [_addr(a, "--listen") for a in listen]
    tls = _tls(cert, cert_key, client_ca, "--cert, --cert-key and --client-ca")
    key = load_private_key(key_path) if key_path is not None else None
    server = TMAServer(key=key, allow_uids=set(allow_uid) or None, tls=tls)
    importers = []
    try:
        for a in addrs:
            try:
                bound = server.listen(a)
            except OSError as exc:
                raise InputError(f"cannot listen: {exc.strerror or exc}", source=str(a)) \
                    from None
            click.echo(f"listening on {bound}")
        if sources:
            from semtrust.tma.mqtt import Importer, parse_mqtt_url

            for src in sources:
                target = parse_mqtt_url(src, "--from")
                imp = Importer(target, _stream_domains(server, f"mqtt:{target}"))
                imp.start()
                importers.append(imp)
                click.echo(f"modeling streams from {target}")
        sys.stdout.flush()

        def _stop(signum: int, frame: FrameType | None) -> None:
            server.close()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        server.wait()
    finally:
        for imp in importers:
            imp.stop()
        server.close()


def _stream_domains(server: TMAServer, owner: str) -> Callable[[str], ServedDomain]:
    return lambda name: server.stream_domain(name, owner)


def _session(addr: str, cert: str | None, cert_key: str | None, ca: str | None
             ) -> tuple[Address, TLSFiles | None]:
    return _addr(addr, "ADDR"), _tls(cert, cert_key, ca, "--cert, --cert-key and --ca")


def _call(addr: str, tls: tuple[str | None, str | None, str | None], req: dict[str, object]
          ) -> object:
    from semtrust.tma.client import open_session

    a, t = _session(addr, *tls)
    conn = open_session(a, t)
    try:
        return conn.call(req).get("result")
    except RemoteError as exc:
        raise InputError(str(exc), source=str(a)) from None
    except (OSError, ProtocolError) as exc:
        raise InputError(f"connection lost: {exc}", source=str(a)) from None
    finally:
        conn.close()


@tma.command()
@click.argument("addr")
@click.argument("domain")
@click.argument("what")
@_with_client_tls
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON result.")
def show(addr: str, domain: str, what: str, cert: str | None, cert_key: str | None,
         ca: str | None, as_json: bool) -> None:
    """Show a view of DOMAIN held by the TMA at ADDR (state, measurement, points,
    counts, model, trajectory, forensics, trust_events, summary, ...)."""
    result = _call(addr, (cert, cert_key, ca),
                   {"op": "show", "domain": domain, "what": what})
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        echo_result(result)


@tma.command()
@click.argument("addr")
@_with_client_tls
def domains(addr: str, cert: str | None, cert_key: str | None, ca: str | None) -> None:
    """The domains the TMA at ADDR holds."""
    result = _call(addr, (cert, cert_key, ca), {"op": "domains"})
    assert isinstance(result, list)
    for d in result:
        click.echo(f"{d['domain']}\tmode={d['mode']}\tevents={d['events']}\t"
                   f"points={d['points']}\tunattestable={d['unattestable']}")


@tma.command()
@click.argument("addr")
@click.argument("domain")
@click.option("--nonce", metavar="HEX", required=True, help="Verifier-chosen nonce (hex).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the attestation here (default: stdout).")
@_with_client_tls
def attest(addr: str, domain: str, nonce: str, output: str | None, cert: str | None,
           cert_key: str | None, ca: str | None) -> None:
    """A signed attestation of DOMAIN, signed by the TMA at ADDR with its own key."""
    from semtrust.attest.attestation import dumps, parse_nonce

    try:
        parse_nonce(nonce, field="--nonce")
    except InputError as exc:
        raise click.BadParameter(exc.message, param_hint="--nonce") from None
    doc = _call(addr, (cert, cert_key, ca), {"op": "attest", "domain": domain,
                                              "nonce": nonce.lower()})
    if not isinstance(doc, dict):
        raise InputError("the TMA sent no attestation document", source=addr)
    text = dumps(doc)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            Path(output).write_text(text)
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror}", source=output) from None


@click.command("export")
@click.argument("trajectory", type=click.Path(dir_okay=False))
@click.option("--to", "to", required=True, metavar="mqtt://HOST:PORT/TOPIC",
              help="Broker and topic (password from $TSEM_PASSWORD).")
@click.option("--domain", help="Domain name of the stream (default: the file's name).")
@click.option("--batch", type=click.IntRange(1, 10000), default=200, show_default=True,
              help="Records per MQTT message.")
def export(trajectory: str, to: str, domain: str | None, batch: int) -> None:
    """Publish a JSON trajectory's records, numbered, at QoS 1."""
    import time

    from semtrust.events.jsonexport import parse_record_bytes
    from semtrust.events.reader import open_trajectory, source_name
    from semtrust.tma.mqtt import Publisher, parse_mqtt_url

    target = parse_mqtt_url(to, "--to")
    name = domain or Path(trajectory).name
    src = source_name(trajectory)
    lines: list[str] = []
    with open_trajectory(trajectory) as fp:
        # Every record is checked before anything is sent, then sent as read.
        for n, raw in enumerate(fp, 1):
            if not raw.strip():
                continue
            parse_record_bytes(raw, source=src, line=n)
            lines.append(raw.decode("utf-8", "surrogateescape").rstrip("\r\n"))
    pub = Publisher(target, name)
    t0 = time.perf_counter()
    for i in range(0, len(lines), batch):
        pub.publish(lines[i:i + batch])
    ok = pub.close()
    dt = time.perf_counter() - t0
    click.echo(f"{len(lines)} records to {target} as domain {name} in {dt:.2f} s "
               f"({len(lines) / dt if dt else 0:,.0f}/s)", err=True)
    if not ok:
        raise InputError("the broker did not acknowledge every message", source=str(target))
