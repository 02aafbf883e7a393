"""``semtrust points`` and ``semtrust replay``: model recorded trajectories."""

from __future__ import annotations

import json
import sys
import time

import click

from semtrust.cli.common import hex32
from semtrust.errors import InputError
from semtrust.events.describe import describe
from semtrust.events.jsonexport import parse_record_bytes
from semtrust.events.reader import FORMATS, iter_points, open_trajectory, source_name
from semtrust.events.record import Aggregate, LogRecord, PseudonymRecord
from semtrust.model.coefficient import event_coefficient
from semtrust.model.modelfile import load_model, record_line, write_model
from semtrust.model.quick import QuickCoefficients
from semtrust.model.tma import ADDED, TMA, TRUSTED, Mode


def _warn(message: str) -> None:
    click.echo(f"semtrust: {message}", err=True)


class _Progress:
    """Events read so far, on a terminal only; called every 65536 lines."""

    def __init__(self) -> None:
        self._console = None
        if sys.stderr.isatty():
            from rich.console import Console  # only a terminal shows progress

            self._console = Console(stderr=True)
        self._start = time.monotonic()
        self._shown = False

    def show(self, lines: int, tma: TMA) -> None:
        if self._console is None:
            return
        rate = lines / max(time.monotonic() - self._start, 1e-9)
        self._console.print(
            f"  {lines:,} records, {tma.point_count:,} points, {rate:,.0f} records/s",
            end="\r", highlight=False,
        )
        self._shown = True

    def close(self) -> None:
        if self._console is not None and self._shown:
            self._console.print(" " * 70, end="\r")


_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default=None,
    help="Trajectory format (default: detected from the first line).",
)


@click.command()
@click.argument("trajectory", type=click.Path(dir_okay=False, allow_dash=True))
@_FORMAT
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="Model whose pseudonyms apply.")
@click.option("--allow-unsigned", is_flag=True, help="Accept a model with a key but no signature.")
def points(trajectory: str, fmt: str | None, model_path: str | None, allow_unsigned: bool) -> None:
    """Print one coefficient per input event, in input order."""
    pseudonyms: frozenset[bytes] = frozenset()
    if model_path:
        pseudonyms = frozenset(load_model(model_path, allow_unsigned=allow_unsigned,
                                          allow_empty=True).pseudonyms)
    out = sys.stdout
    buf: list[str] = []
    coefficients = QuickCoefficients(pseudonyms)
    with open_trajectory(trajectory) as fp:
        for _line, item in iter_points(fp, coefficients.of_line, source=source_name(trajectory),
                                       fmt=fmt, on_warning=_warn):
            if type(item) is bytes:
                buf.append(item.hex())
            elif isinstance(item, PseudonymRecord):
                pseudonyms = pseudonyms | {item.value}
                coefficients.add_pseudonym(item.value)
                continue
            elif isinstance(item, Aggregate | LogRecord):
                continue
            else:
                buf.append(event_coefficient(item, pseudonyms).hex())  # type: ignore[arg-type]
            if len(buf) >= 4096:
                out.write("\n".join(buf) + "\n")
                buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")
    out.flush()


@click.command()
@click.argument("trajectory", type=click.Path(dir_okay=False, allow_dash=True))
@_FORMAT
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="Load this model first (points, pseudonyms, base, seal).")
@click.option("--model-key", type=click.Path(dir_okay=False),
              help="Require the model to be signed by this public key.")
@click.option("--allow-unsigned", is_flag=True, help="Accept a model with a key but no signature.")
@click.option("--allow-empty", is_flag=True, help="Accept a --model without points.")
@click.option("--seal", is_flag=True, help="Seal before replaying: new points become forensics.")
@click.option("--enforce", is_flag=True,
              help="Seal and count denials (as an enforcing sensor would).")
@click.option("--aggregate", "aggregate_hex", metavar="HEX", help="Hardware aggregate (64 hex).")
@click.option("--base", "base_hex", metavar="HEX", help="Base nonce (64 hex).")
@click.option("--output-model", type=click.Path(dir_okay=False), help="Write the resulting model.")
@click.option("--skip-invalid", is_flag=True,
              help="Count and report bad records instead of stopping.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def replay(
    trajectory: str, fmt: str | None, model_path: str | None, model_key: str | None,
    allow_unsigned: bool, allow_empty: bool, seal: bool, enforce: bool,
    aggregate_hex: str | None,
    base_hex: str | None, output_model: str | None, skip_invalid: bool, as_json: bool,
) -> None:
    """Run a trajectory through a TMA and print its measurement and state."""
    base = hex32(base_hex, "--base")
    aggregate = hex32(aggregate_hex, "--aggregate")
    tma = TMA(keep_events=False)
    if model_path:
        model = load_model(model_path, key=model_key, allow_unsigned=allow_unsigned,
                           allow_empty=allow_empty)
        tma.load_model(model, base=base, aggregate=aggregate)
    else:
        if base is not None:
            tma.set_base(base)
        if aggregate is not None:
            tma.set_aggregate(aggregate)
    if enforce:
        tma.enforce()
    elif seal:
        tma.seal()

    skipped: list[InputError] = []  # only the first 10: each pins its record's frames
    skip_count = 0

    def _skip(exc: InputError) -> None:
        nonlocal skip_count
        skip_count += 1
        if len(skipped) < 10:
            skipped.append(exc)

    logs = untrusted_events = 0
    progress = _Progress()
    # Coefficients come straight from the lines where they can (semtrust.model.quick).
    # A model to write wants each new point described: only those lines are parsed in
    # full, and only their description and record lines are kept (not whole events).
    quick = QuickCoefficients(tma.pseudonyms)
    of_line = quick.of_line
    descriptions: dict[bytes, str] | None = {} if output_model else None
    # The point's export record, as a model learned live keeps it (one full parse per
    # new point): the same trajectory gives the same model file whichever way it is read.
    records: dict[bytes, str] = {}
    last_line = b""

    def quick_keeping_line(raw: bytes) -> bytes | None:
        nonlocal last_line
        last_line = raw
        return of_line(raw)

    with open_trajectory(trajectory) as traj:
        source = source_name(trajectory)
        items = iter_points(traj, of_line if descriptions is None else quick_keeping_line,
                            source=source, fmt=fmt, skip_invalid=skip_invalid,
                            on_skip=_skip, on_warning=_warn)
        observe = tma.observe
        for line, item in items:
            if not line & 0xFFFF:
                progress.show(line, tma)
            if type(item) is bytes:
                outcome = observe(item)
                if outcome & ADDED and descriptions is not None:
                    full = parse_record_bytes(last_line, source=source, line=line)
                    descriptions[item] = describe(full)  # type: ignore[arg-type]
                    rec = record_line(full)
                    if rec is not None:
                        records[item] = rec
            elif isinstance(item, Aggregate):
                tma.set_aggregate(item.value)
                continue
            elif isinstance(item, PseudonymRecord):
                tma.add_pseudonym(item.value)
                quick.add_pseudonym(item.value)
                continue
            elif isinstance(item, LogRecord):
                logs += 1
                continue
            else:
                coefficient = tma.coefficient(item)  # type: ignore[arg-type]
                outcome = observe(coefficient)
                if outcome & ADDED and descriptions is not None:
                    descriptions[coefficient] = describe(item)  # type: ignore[arg-type]
                    rec = record_line(item)
                    if rec is not None:
                        records[coefficient] = rec
            if not outcome & TRUSTED:
                untrusted_events += 1
    denied = untrusted_events if tma.mode is Mode.ENFORCING else 0
    progress.close()
    for exc in skipped:
        click.echo(f"semtrust: skipped: {exc}", err=True)
    if skip_count > 10:
        click.echo(f"semtrust: skipped {skip_count - 10} more invalid records", err=True)

    if output_model:
        try:
            with open(output_model, "w", encoding="utf-8") as fp:
                write_model(fp, tma, descriptions=descriptions, records=records)
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror}", source=output_model) from None

    summary = {
        "events": tma.events,
        "points": tma.point_count,
        "measurement": tma.measurement.hex(),
        "state": tma.state().hex(),
        "forensics": tma.forensics_count,
        "aggregate": (tma.aggregate or bytes(32)).hex(),
        "base": tma.base.hex(),
        "mode": tma.mode.value,
        "untrusted_events": untrusted_events,
        "denied": denied,
        "logs": logs,
        "skipped": skip_count,
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        for key, value in summary.items():
            click.echo(f"{key} {value}")
