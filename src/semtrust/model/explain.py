"""Why an event is outside a model: compare it with the events the model's points came from.

Pure functions over events (no I/O), used by the end-of-run denial report, the
live ``console follow`` stream and ``model diff``. The model's events come from
its ``# export`` comments (``point_records``); a model without them can only
say that an event is not in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from semtrust.events.record import Event, FileCell, FileDesc, LegacyEvent, MmapCell

NEW_OBJECT = "new object"
CONTENT_CHANGED = "content changed"
ATTRIBUTES_CHANGED = "attributes changed"
NEW_PROGRAM = "new program identity"
UNTRUSTED = "process already untrusted"
FMODE_EXEC = 0x20
NOT_IN_MODEL = "not in the model"


@dataclass(frozen=True)
class Explanation:
    """One reason: ``kind`` is one of the constants above; ``path`` names the file."""

    kind: str
    detail: str
    path: str | None = None
    model_digest: str | None = None
    digest: str | None = None

    def text(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind

    def as_json(self) -> dict[str, str]:
        out = {"reason": self.kind, "detail": self.detail}
        if self.path is not None:
            out["path"] = self.path
        if self.model_digest is not None and self.digest is not None:
            out["model_digest"] = self.model_digest
            out["digest"] = self.digest
        return out


def file_of(ev: Event | LegacyEvent) -> FileDesc | None:
    """The file a file_open or file-backed mmap_file event is about."""
    if isinstance(ev, LegacyEvent):
        return None
    cell = ev.cell
    if isinstance(cell, FileCell):
        return cell.file
    if isinstance(cell, MmapCell):
        return cell.file
    return None


def object_key(ev: Event) -> tuple[str, bytes, str] | None:
    """(event type, program identity, path) of a file event whose path is its own name.

    Files the domain created are named by their directory only: they have no key.
    """
    f = file_of(ev)
    if f is None or f.path.instance:
        return None
    return ev.type, ev.task_id, f.path.pathname


def _hashed(f: FileDesc) -> tuple[object, ...]:
    """What of a file description enters a coefficient (device numbers do not)."""
    p = f.path
    return f.flags, f.inode, p.pathname, p.type, p.instance, p.owner


def _same_but_digest(a: FileDesc, b: FileDesc) -> bool:
    return _hashed(a) == _hashed(b)


def _same_mapping(a: Event, b: Event) -> bool:
    if isinstance(a.cell, MmapCell) and isinstance(b.cell, MmapCell):
        return (a.cell.prot, a.cell.flags) == (b.cell.prot, b.cell.flags)
    return True


class Explainer:
    """Answers "why is this event not in the model?" for one model's recorded events."""

    def __init__(self, records: Mapping[bytes, Event | LegacyEvent]) -> None:
        self.known = bool(records)
        self._objects: dict[tuple[str, bytes, str], list[Event]] = {}
        self._tasks: set[bytes] = set()
        for ev in records.values():
            if not isinstance(ev, Event):
                continue
            self._tasks.add(ev.task_id)
            key = object_key(ev)
            if key is not None:
                self._objects.setdefault(key, []).append(ev)

    def explain(self, ev: Event | LegacyEvent | None) -> Explanation:
        if ev is None or isinstance(ev, LegacyEvent) or not self.known:
            return Explanation(NOT_IN_MODEL, "the model carries no event records"
                               if not self.known else "")
        key = object_key(ev)
        f = file_of(ev)
        if key is not None and f is not None:
            same = self._objects.get(key, [])
            if same:
                for m in same:
                    mf = file_of(m)
                    if mf is not None and mf.digest != f.digest and _same_but_digest(mf, f) \
                            and m.coe == ev.coe and _same_mapping(m, ev):
                        return Explanation(
                            CONTENT_CHANGED,
                            f"{f.path.pathname} (same program; sha256 {f.digest.hex()[:16]}… "
                            f"instead of the model's {mf.digest.hex()[:16]}…; {_advice(ev, f)})",
                            path=f.path.pathname, model_digest=mf.digest.hex(),
                            digest=f.digest.hex())
                mf = file_of(same[0])
                what = _differences(mf, f, same[0], ev) if mf is not None else "attributes"
                return Explanation(ATTRIBUTES_CHANGED,
                                   f"{f.path.pathname} ({what} not as in the model)",
                                   path=f.path.pathname)
        if ev.task_id not in self._tasks:
            return Explanation(NEW_PROGRAM, f"{ev.process or '?'} (task identity "
                               f"{ev.task_id.hex()[:16]}… is not in the model: another "
                               "executable, parent chain or credentials)")
        return Explanation(NEW_OBJECT, "")


def is_code(ev: Event, f: FileDesc) -> bool:
    """Is the file run or mapped as code (its content is then always to be measured)?"""
    return isinstance(ev.cell, MmapCell) or bool(f.flags & FMODE_EXEC)


def _advice(ev: Event, f: FileDesc) -> str:
    if is_code(ev, f):
        return "if the change is legitimate, run 'semtrust model refresh'"
    return f"if it may change, learn with --pseudonym {f.path.pathname}"


def _differences(mf: FileDesc, f: FileDesc, mev: Event, ev: Event) -> str:
    parts = []
    if mf.flags != f.flags:
        parts.append("open flags")
    if mf.inode != f.inode:
        parts.append("owner/mode/filesystem")
    if mf.digest != f.digest:
        parts.append("content")
    if mev.coe != ev.coe:
        parts.append("credentials")
    if isinstance(mev.cell, MmapCell) and isinstance(ev.cell, MmapCell) and \
            (mev.cell.prot, mev.cell.flags) != (ev.cell.prot, ev.cell.flags):
        parts.append("mapping protection/flags")
    return ", ".join(parts) or "attributes"


@dataclass(frozen=True)
class Pair:
    """Two points, one from each model, for the same object of the same program."""

    a: bytes
    b: bytes
    event_a: Event
    event_b: Event
    explanation: Explanation


def pair_points(only_a: Iterable[bytes], only_b: Iterable[bytes],
                rec_a: Mapping[bytes, Event], rec_b: Mapping[bytes, Event]) -> list[Pair]:
    """Pair points only in A with points only in B that are the same object of the same
    program; each point is used once."""
    by_key: dict[tuple[str, bytes, str], list[bytes]] = {}
    for p in only_a:
        ev = rec_a.get(p)
        key = object_key(ev) if ev is not None else None
        if key is not None:
            by_key.setdefault(key, []).append(p)
    pairs = []
    for p in only_b:
        ev = rec_b.get(p)
        key = object_key(ev) if ev is not None else None
        cands = by_key.get(key, []) if key is not None else []
        if not cands or ev is None:
            continue
        a = cands.pop(0)
        explanation = Explainer({a: rec_a[a]}).explain(ev)
        pairs.append(Pair(a, p, rec_a[a], ev, explanation))
    return pairs
