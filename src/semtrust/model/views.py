"""The read-only views of a TMA that every place serving one shows the same way.

A domain's management socket and the TMA service both answer ``show points``,
``counts``, ``state``... with these values, so a console reads one format whether
the TMA runs in the orchestrator or behind a socket.
"""

from __future__ import annotations

from typing import Any

from semtrust.model.modelfile import render_model
from semtrust.model.tma import TMA

#: The views :func:`tma_view` answers.
TMA_VIEWS = ("points", "counts", "state", "measurement", "aggregate", "model")


def tma_view(t: TMA, what: str) -> Any:
    """One of ``TMA_VIEWS`` as a JSON-able value; KeyError for any other name."""
    if what == "points":
        return [p.hex() for p in t.points()]
    if what == "counts":
        return t.counts()
    if what == "state":
        return t.state().hex()
    if what == "measurement":
        return t.measurement.hex()
    if what == "aggregate":
        return (t.aggregate or bytes(32)).hex()
    if what == "model":
        return render_model(t)
    raise KeyError(what)
