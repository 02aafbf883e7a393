"""How ``semtrust run`` builds a domain's TMA when it is remote or exported.

The orchestrator only ever sees an object with the in-process TMA's interface:
a :class:`~semtrust.tma.client.RemoteTMA` for ``--tma ADDR``, wrapped in an
:class:`ExportingTMA` for ``--export mqtt://…``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from semtrust.errors import InputError, SemtrustError
from semtrust.events.record import Event
from semtrust.model.tma import TMA, ModeledEvent, Verdict

if TYPE_CHECKING:
    from semtrust.model.modelfile import Model
    from semtrust.orchestrator.run import RunOptions
    from semtrust.tma.mqtt import Publisher


class ExportingTMA:
    """A TMA that also publishes every event record (and the aggregate) it models.

    ``is_valid`` answers "unknown" so the mediator describes every event in full,
    not only those that add a point: the export carries the whole trajectory.
    """

    def __init__(self, inner: TMA, publisher: Publisher) -> None:
        # The export formatters, loaded here: a run that exports nothing never needs them.
        from semtrust.events import jsonexport

        self.inner = inner
        self.publisher = publisher
        self._export = jsonexport

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def is_valid(self, c: bytes) -> bool | None:
        return None

    def set_aggregate(self, hw: bytes) -> None:
        self.inner.set_aggregate(hw)
        self.publisher.publish([self._export.format_aggregate(hw)])

    def add_pseudonym(self, value: bytes) -> None:
        self.inner.add_pseudonym(value)
        self.publisher.publish([self._export.format_pseudonym(value)])

    def load_model(self, model: Model, *, base: bytes | None = None,
                   aggregate: bytes | None = None) -> None:
        self.inner.load_model(model, base=base, aggregate=aggregate)
        agg = aggregate if aggregate is not None else model.aggregate
        if agg is not None:
            self.publisher.publish([self._export.format_aggregate(agg)])
        if model.pseudonyms:
            self.publisher.publish([self._export.format_pseudonym(p)
                                    for p in sorted(model.pseudonyms)])

    def update(self, ev: ModeledEvent) -> Verdict:
        return self.update_coefficient(self.inner.coefficient(ev), ev)

    def update_coefficient(self, c: bytes, ev: ModeledEvent | None = None) -> Verdict:
        v = self.inner.update_coefficient(c, ev)
        if isinstance(ev, Event):
            self.publisher.publish([self._export.format_event(ev)])
        return v

    def close(self) -> None:
        self.publisher.close()
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def remote_tma(opts: RunOptions, name: str | None) -> TMA:
    """The TMA object ``run`` uses for ``--tma`` and/or ``--export``."""
    if not name:
        raise InputError("a remote or exported domain needs a name", field="--name")
    inner: TMA
    if opts.tma is not None:
        from semtrust.tma.client import RemoteTMA
        from semtrust.tma.protocol import ProtocolError, TLSFiles, parse_address

        if opts.tma_key is not None:
            raise InputError("with --tma the TMA signs attestations with its own key "
                             "(tma serve --key)", field="--tma-key")
        try:
            addr = parse_address(opts.tma)
        except ProtocolError as exc:
            raise InputError(str(exc), field="--tma") from None
        tls = TLSFiles(*opts.tma_tls) if opts.tma_tls is not None else None
        if addr.kind == "tcp" and tls is None:
            raise InputError("a tcp: TMA needs --tma-cert, --tma-cert-key and --tma-ca",
                             field="--tma")
        inner = cast(TMA, RemoteTMA(addr, name, tls=tls))
    else:
        inner = TMA()
    if opts.export is None:
        return inner
    from semtrust.tma.mqtt import Publisher, parse_mqtt_url

    return cast(TMA, ExportingTMA(inner, Publisher(parse_mqtt_url(opts.export, "--export"),
                                                   name)))


def on_tma_lost(tma: TMA, stop: Callable[[], None]) -> None:
    """Have ``stop`` called if the domain's external TMA is lost."""
    callbacks = getattr(tma, "on_lost", None)
    if isinstance(callbacks, list):
        callbacks.append(stop)


def finish_tma(tma: TMA) -> str | None:
    """At the end of the workload: flush the export and wait until the external TMA
    has modeled every event. Returns why the model is incomplete (the TMA was lost),
    or None; then nothing may be written as if it were complete."""
    inner: Any = tma
    if isinstance(tma, ExportingTMA):
        inner = tma.inner
        tma.publisher.close(complete=getattr(inner, "lost", None) is None)
    sync = getattr(inner, "sync", None)
    if sync is None:
        return None
    try:
        sync()
    except (OSError, SemtrustError) as exc:
        return f"external TMA: {exc}"
    return None
