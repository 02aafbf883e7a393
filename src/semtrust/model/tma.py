"""The Trusted Modeling Agent: events in, verdicts out, no I/O.

It keeps what the reference userspace TMA keeps (spec §2.6-2.7, §5): the
hardware aggregate and base, the points with their counts and validity, the
time-ordered measurement, the order-independent state, and the descriptions of
events that added points (trajectory) or fell outside a sealed model
(forensics). Because it never touches a file or socket, the same object runs
under a live sensor, a replay, or behind a socket on another host.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from semtrust.events.record import Event, LegacyEvent
from semtrust.model.coefficient import ZERO, aggregate_extension, event_coefficient
from semtrust.model.digest import sha256

if TYPE_CHECKING:
    from semtrust.model.modelfile import Model

_VALID = 1
_COUNT_ONE = 2
#: Bits of ``TMA.observe``: the task stays trusted; the event added a new point.
TRUSTED = 1
ADDED = 2


class Mode(enum.Enum):
    """Modeling mode. The algorithm is the same sealed or enforcing; only the sensor's
    answer differs (deny with EPERM when enforcing)."""

    FREE = "free"
    SEALED = "sealed"
    ENFORCING = "enforcing"


class Verdict(NamedTuple):
    """The TMA's answer for one event.

    ``trusted`` False means the task is disciplined (marked untrusted); the sensor
    denies the event iff ``mode`` is ENFORCING.
    """

    coefficient: bytes
    added: bool
    trusted: bool
    mode: Mode

    @property
    def deny(self) -> bool:
        return not self.trusted and self.mode is Mode.ENFORCING


ModeledEvent = Event | LegacyEvent


class TMA:
    """Model state of one modeling domain."""

    def __init__(self, *, base: bytes = ZERO, keep_events: bool = True) -> None:
        self._base = base
        self._hw: bytes | None = None
        self._agg_ext = aggregate_extension(ZERO, base)
        self._measurement = self._agg_ext
        # coefficient -> count << 1 | valid (one int per point: memory follows points);
        # dicts keep first-seen order.
        self._points: dict[bytes, int] = {}
        # coefficient -> the event that first produced it (only with keep_events).
        self._events: dict[bytes, ModeledEvent] = {}
        self._pseudonyms: set[bytes] = set()
        # Bumped whenever the pseudonym set changes: sensors that cache coefficients
        # compare it and drop their caches, so no cached value outlives a pseudonym.
        self.pseudonym_epoch = 0
        self._mode = Mode.FREE
        self._state: bytes | None = None
        self._keep = keep_events
        self.trajectory: list[ModeledEvent] = []
        self.forensics: list[ModeledEvent] = []
        self.forensics_count = 0
        self.events = 0

    # ------------------------------------------------------------ configuration
    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def sealed(self) -> bool:
        return self._mode is not Mode.FREE

    @property
    def base(self) -> bytes:
        return self._base

    @property
    def aggregate(self) -> bytes | None:
        """The raw hardware aggregate, as received (None until set or first event)."""
        return self._hw

    @property
    def pseudonyms(self) -> frozenset[bytes]:
        return frozenset(self._pseudonyms)

    def set_base(self, base: bytes) -> None:
        """Set the base nonce; applies to every later extension (spec §2.6)."""
        _check32(base, "base")
        self._base = base
        self._state = None

    def set_aggregate(self, hw: bytes) -> None:
        """(Re)initialise the measurement from the hardware aggregate; ignored once sealed."""
        _check32(hw, "aggregate")
        if self.sealed:
            return
        self._hw = hw
        self._agg_ext = aggregate_extension(hw, self._base)
        self._measurement = self._agg_ext
        self._state = None

    def add_pseudonym(self, value: bytes) -> None:
        _check32(value, "pseudonym")
        if value not in self._pseudonyms:
            self._pseudonyms.add(value)
            self.pseudonym_epoch += 1

    def seal(self) -> None:
        """Freeze the model: new points become forensics."""
        if self._mode is Mode.FREE:
            self._mode = Mode.SEALED

    def enforce(self) -> None:
        """Seal and deny events outside the model."""
        self._mode = Mode.ENFORCING

    def load_point(self, coefficient: bytes) -> None:
        """Add a known-good point (a model ``state`` line)."""
        _check32(coefficient, "state")
        if self.sealed:
            raise ValueError("cannot load a point into a sealed model")
        self._ensure_aggregate()
        if coefficient in self._points:
            return
        self._extend(coefficient)
        self._points[coefficient] = _VALID

    def load_model(
        self, model: Model, *, base: bytes | None = None, aggregate: bytes | None = None
    ) -> None:
        """Apply a parsed model file; ``base``/``aggregate`` override the file's values
        (a verifier's nonce, the platform's measured aggregate)."""
        base = base if base is not None else model.base
        if base is not None:
            self.set_base(base)
        aggregate = aggregate if aggregate is not None else model.aggregate
        if aggregate is not None:
            self.set_aggregate(aggregate)
        for p in model.pseudonyms:
            self.add_pseudonym(p)
        for c in model.points:
            self.load_point(c)
        if model.sealed:
            self.seal()

    # ------------------------------------------------------------------ update
    def coefficient(self, ev: ModeledEvent) -> bytes:
        return event_coefficient(ev, self._pseudonyms)

    def update(self, ev: ModeledEvent) -> Verdict:
        """Model one event and say whether its task stays trusted."""
        return self.update_coefficient(self.coefficient(ev), ev)

    def update_coefficient(self, c: bytes, ev: ModeledEvent | None = None) -> Verdict:
        """Model an already computed coefficient (``ev`` is kept as its description)."""
        outcome = self.observe(c, ev)
        return Verdict(c, bool(outcome & ADDED), bool(outcome & TRUSTED), self._mode)

    def observe(self, c: bytes, ev: ModeledEvent | None = None) -> int:
        """``update_coefficient`` without the Verdict: ``TRUSTED | ADDED`` bits, for
        replay's per-event loop, which needs no verdict object."""
        self.events += 1
        points = self._points
        info = points.get(c)
        if info is not None:
            points[c] = info + _COUNT_ONE
            return info & _VALID  # == TRUSTED for a known point
        if self._hw is None:
            self._ensure_aggregate()
        self._extend(c)
        if self._mode is Mode.FREE:
            points[c] = _COUNT_ONE | _VALID
            outcome = ADDED | TRUSTED
        else:
            points[c] = _COUNT_ONE
            self.forensics_count += 1
            outcome = ADDED
        if self._keep and ev is not None:
            self._events[c] = ev
            (self.trajectory if outcome & TRUSTED else self.forensics).append(ev)
        return outcome

    # ----------------------------------------------------------------- queries
    @property
    def measurement(self) -> bytes:
        return self._measurement

    def state(self) -> bytes:
        """The state value: aggregate first, then the sorted points (spec §2.7)."""
        if self._state is None:
            base = self._base
            state = self._agg_ext
            sha = sha256  # a local: this loop runs once per point
            for p in sorted(self._points):
                state = sha(state, sha(base, p))
            self._state = state
        return self._state

    @property
    def point_count(self) -> int:
        return len(self._points)

    def points(self) -> list[bytes]:
        """Every point in first-seen order, forensic ones included."""
        return list(self._points)

    def counts(self) -> list[int]:
        return [info >> 1 for info in self._points.values()]

    def valid_points(self) -> list[bytes]:
        return [p for p, info in self._points.items() if info & _VALID]

    def forensic_points(self) -> list[bytes]:
        return [p for p, info in self._points.items() if not info & _VALID]

    def event_of(self, c: bytes) -> ModeledEvent | None:
        """The event that first produced point ``c`` (None if loaded or not kept)."""
        return self._events.get(c)

    def is_valid(self, c: bytes) -> bool | None:
        """True for a model point, False for a forensic one, None if unknown."""
        info = self._points.get(c)
        return None if info is None else bool(info & _VALID)

    def point_items(self) -> Iterable[tuple[bytes, int, bool]]:
        """``(coefficient, count, valid)`` in first-seen order."""
        for p, info in self._points.items():
            yield p, info >> 1, bool(info & _VALID)

    # ----------------------------------------------------------------- helpers
    def _ensure_aggregate(self) -> None:
        if self._hw is None:
            self.set_aggregate(ZERO)

    def _extend(self, c: bytes) -> None:
        self._measurement = sha256(self._measurement, sha256(self._base, c))
        self._state = None


def _check32(value: bytes, what: str) -> None:
    if len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(value)}")
