"""Security model files in the reference format (spec §4).

A model is a text file of ``aggregate``/``base``/``pseudonym``/``state``/
``seal``/``end`` lines, optionally preceded by a ``key`` line and followed by a
``signature`` line. The signature covers every line before it, each followed by
one NUL byte (the reference encoding, spec §4.3). Unlike the reference loader, a
model that names a key but carries no signature is refused unless the caller
allows unsigned models: a stripped signature must not downgrade a signed model
silently.

Why the signed bytes identify the model. The reference accepts any bytes in a
line, so the lines ``a``, ``b`` and the single line ``a<NUL>b`` sign alike and a
signed model can be rewritten into a comment that hides its points. Here every
line must be printable text (``str.isprintable``: no NUL, no other control
character, no line or paragraph separator, no format character) and valid
UTF-8. UTF-8 puts a zero byte only in the encoding of U+0000, which no accepted
line contains, so the signed bytes ``l1 NUL l2 NUL ... lk NUL`` split at their
NUL bytes give back exactly ``l1 ... lk``: the encoding is injective, two
different accepted line sequences never sign alike, and what a model means is
a function of its lines. The file itself is those lines, each ended by ``\n``
(a missing final newline is refused, which also catches truncated files).

The grammar is exact: one keyword, one space, one value; no leading, trailing
or doubled white space, no CR, at most one ``key``, ``aggregate``, ``base``,
``seal`` and ``end``; after ``end`` only comments and the signature; nothing
after the signature. A ``state`` after ``seal`` is refused (the reference
errors too).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from semtrust.errors import InputError, ModelError, SemtrustError, SignatureError
from semtrust.events import Event
from semtrust.events.describe import describe
from semtrust.events.jsonexport import format_event
from semtrust.events.numbers import hexbytes
from semtrust.model.tma import TMA

MAX_MODEL_BYTES = 64 << 20
#: Longest accepted line: a key line of a 16384-bit RSA key or a described point
#: fits many times over; anything longer is not a model.
MAX_LINE = 64 << 10

#: An ASCII byte that is not printable, other than the line end.
_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_ONCE = ("key", "aggregate", "base", "seal", "end")


@dataclass
class Model:
    """A parsed model file."""

    source: str
    aggregate: bytes | None = None
    base: bytes | None = None
    points: list[bytes] = field(default_factory=list)
    pseudonyms: list[bytes] = field(default_factory=list)
    sealed: bool = False
    ended: bool = False
    comments: list[str] = field(default_factory=list)
    key_pem: bytes | None = None
    signed: bool = False
    digest: bytes = b""
    body_lines: list[str] = field(default_factory=list)
    signed_data: bytes = b""


def signed_bytes(lines: Iterable[str]) -> bytes:
    """The bytes a signature covers: each line as UTF-8 followed by one NUL byte.

    Injective over lines that pass :func:`check_line` (see the module docstring).
    """
    lines = list(lines)
    return ("\0".join(lines) + "\0").encode("utf-8") if lines else b""


def check_line(line: str) -> str | None:
    """Why ``line`` (without its newline) cannot be a model line, or None."""
    if len(line) > MAX_LINE:
        return f"line longer than {MAX_LINE} characters"
    if line.isprintable():
        return None
    for i, ch in enumerate(line):
        if not ch.isprintable():
            what = "a CR (DOS line end)" if ch == "\r" else f"character U+{ord(ch):04X}"
            return f"{what} at column {i + 1}: model lines are printable text only"
    return None  # pragma: no cover - isprintable() was False, so a character failed


def _hex32(text: str, source: str, line: int, what: str) -> bytes:
    if _HEX64.fullmatch(text) is None:
        try:
            hexbytes(text, what, 32)  # its message says what is wrong
        except InputError as exc:
            raise ModelError(exc.message, source=source, line=line, field=what) from None
        raise ModelError("expected 64 hex digits", source=source, line=line, field=what)
    return bytes.fromhex(text)


def _split_lines(data: bytes, source: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ModelError(f"not UTF-8 text (byte {exc.start})", source=source,
                         line=line) from None
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] != "":
        raise ModelError("last line has no newline (truncated file?)", source=source,
                         line=len(lines))
    lines.pop()
    return lines


def parse_model(
    data: bytes,
    *,
    source: str = "<model>",
    key_pem: bytes | None = None,
    allow_unsigned: bool = False,
    allow_empty: bool = True,
) -> Model:
    """Parse and, where signed, verify a model; ``key_pem`` pins the expected signer.

    ``allow_empty=False`` refuses a model without a single ``state`` line.
    """
    model = Model(source=source, digest=hashlib.sha256(data).digest())
    seen: set[str] = set()
    signature_seen = False
    lines = _split_lines(data, source)
    signed_count = len(lines)
    # One pass in C over the whole text when it is clean (the usual case: a model
    # of 10,000 points with its export records is ~10 MB); line by line otherwise,
    # to name the line.
    printable = _CONTROL.search(data) is None if data.isascii() else \
        "".join(lines).isprintable()
    clean = printable and max(map(len, lines), default=0) <= MAX_LINE
    comments, body = model.comments, model.body_lines
    for n, line in enumerate(lines, 1):
        if not clean:
            problem = check_line(line)
            if problem is not None:
                word = line.split(" ", 1)[0][:20]
                raise ModelError(problem, source=source, line=n,
                                 field=word if word.isprintable() and word else None)
        if signature_seen:
            raise ModelError("content after the signature line", source=source, line=n)
        if line[:1] == "#":
            comments.append(line)
            body.append(line)
            continue
        word, sep, value = line.partition(" ")
        if word == "signature" and sep:
            if model.key_pem is None:
                raise ModelError("signature without a key line", source=source, line=n,
                                 field="signature")
            from semtrust.model import signing  # cryptography loads only for signed models

            try:
                signing.verify_model_signature(model.key_pem, signed_bytes(lines[:n - 1]),
                                                value)
            except SignatureError as exc:
                raise SignatureError(exc.message, source=source, line=n,
                                     field="signature") from None
            model.signed = True
            signature_seen = True
            signed_count = n - 1
            continue
        if word in _ONCE:
            if word in seen:
                raise ModelError(f"more than one '{word}' line", source=source, line=n,
                                 field=word)
            seen.add(word)
        if model.ended:
            raise ModelError("content after 'end' (only comments and the signature may "
                             "follow)", source=source, line=n, field=word[:20] or None)
        if word in ("seal", "end"):
            if sep:
                raise ModelError(f"'{word}' takes no value", source=source, line=n,
                                 field=word)
            if word == "seal":
                model.sealed = True
            else:
                model.ended = True
        elif word in ("key", "base", "aggregate", "state", "pseudonym"):
            if not sep or not value or value != value.strip(" ") or "  " in line:
                raise ModelError("expected one space and a value, no other white space",
                                 source=source, line=n, field=word)
            if word == "key":
                from semtrust.model import signing

                try:
                    model.key_pem = signing.decode_key_line(value)
                except SignatureError as exc:
                    raise SignatureError(exc.message, source=source, line=n,
                                         field="key") from None
            elif word == "base":
                model.base = _hex32(value, source, n, "base")
            elif word == "aggregate":
                model.aggregate = _hex32(value, source, n, "aggregate")
            elif word == "state":
                if model.sealed:
                    raise ModelError("state after seal", source=source, line=n, field="state")
                model.points.append(_hex32(value, source, n, "state"))
            else:
                model.pseudonyms.append(_hex32(value, source, n, "pseudonym"))
        else:
            raise ModelError(f"unknown model line {word[:40] or '(empty line)'!r}",
                             source=source, line=n)
        model.body_lines.append(line)
    model.signed_data = signed_bytes(lines[:signed_count])
    if model.key_pem is not None and not model.signed and not allow_unsigned:
        raise SignatureError(
            "model names a signing key but has no signature (use --allow-unsigned to accept)",
            source=source, field="signature",
        )
    if key_pem is not None:
        if not model.signed or model.key_pem is None:
            raise SignatureError("model is not signed, but a signer key was required",
                                 source=source, field="signature")
        from semtrust.model import signing

        if not signing.same_public_key(model.key_pem, key_pem):
            raise SignatureError("model is signed by a different key than the one required",
                                 source=source, field="key")
    if not model.points and not allow_empty:
        raise ModelError("model has no points, so it would deny everything (an empty or "
                         "truncated file?); use --allow-empty to accept it",
                         source=source, field="state")
    return model


def load_model(
    path: str | Path,
    *,
    key: str | Path | None = None,
    allow_unsigned: bool = False,
    allow_empty: bool = False,
) -> Model:
    """Read, parse and verify a model file; ``key`` is a PEM public key pinning the signer.

    A model without points is refused unless ``allow_empty``: enforcing it would deny
    every event, and an empty file is far more often a failed write than an intent.
    """
    source = str(path)
    data = _read_bounded(path, source)
    key_pem = _read_bounded(key, str(key)) if key is not None else None
    return parse_model(data, source=source, key_pem=key_pem, allow_unsigned=allow_unsigned,
                       allow_empty=allow_empty)


def _read_bounded(path: str | Path, source: str) -> bytes:
    try:
        with open(path, "rb") as fp:
            data = fp.read(MAX_MODEL_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"cannot read: {exc.strerror}", source=source) from None
    if len(data) > MAX_MODEL_BYTES:
        raise ModelError(f"larger than {MAX_MODEL_BYTES} bytes", source=source)
    return data


def render_model(
    tma: TMA, *, describe_points: bool = True, descriptions: Mapping[bytes, str] | None = None
) -> str:
    """The model a TMA has learned, as text (see ``write_model``)."""
    out = io.StringIO()
    write_model(out, tma, describe_points=describe_points, descriptions=descriptions)
    return out.getvalue()


def write_model(
    fp: TextIO, tma: TMA, *, describe_points: bool = True,
    descriptions: Mapping[bytes, str] | None = None,
    records: Mapping[bytes, str] | None = None,
) -> None:
    """Write the model a TMA has learned: aggregate, pseudonyms, every point (forensic
    ones included, as the reference does), seal, end. Line by line, so a model of a
    million points never exists as one string.

    Each point whose event is known (kept by the TMA, or in ``descriptions``) is
    preceded by a ``# event HEX description`` comment; the reference loader skips
    comments, and ``model diff`` shows them. Where the TMA kept the event itself (or
    ``records`` holds its line, from ``record_line``), a ``# export HEX RECORD`` comment
    carries it as an export line (pid, number and time
    zeroed, so learning twice writes the same text): ``model refresh`` recomputes
    points from it and denial reports compare against it.
    """
    fp.write(f"aggregate {(tma.aggregate or bytes(32)).hex()}\n")
    fp.writelines(f"pseudonym {p.hex()}\n" for p in sorted(tma.pseudonyms))
    for p, _count, valid in tma.point_items():
        text = None
        if describe_points:
            if descriptions is not None:
                text = descriptions.get(p)
            else:
                ev = tma.event_of(p)
                text = describe(ev) if ev is not None else None
        hexp = p.hex()
        record = None
        if describe_points:
            record = records.get(p) if records is not None else \
                record_line(tma.event_of(p)) if descriptions is None else None
        if text is not None:
            tag = "" if valid else " [forensic]"
            fp.write(f"{EVENT_COMMENT}{hexp} {text}{tag}\n")
        if record is not None:
            fp.write(f"{RECORD_COMMENT}{hexp} {record}\n")
        fp.write(f"state {hexp}\n")
    fp.write("seal\nend\n")


EVENT_COMMENT = "# event "
RECORD_COMMENT = "# export "


def record_line(ev: object) -> str | None:
    """The export line a model keeps for a point's event (None for none or legacy)."""
    if not isinstance(ev, Event):
        return None
    return format_event(ev._replace(pid=0, number=0, ts=0 if ev.ts is not None else None))


def point_records(model: Model) -> dict[bytes, Event]:
    """Events a model carries in ``# export HEX RECORD`` comments.

    A record is kept only if it parses and its coefficient under the model's
    pseudonyms is the point it names: a stale or edited comment cannot pass for
    the event behind a point.
    """
    from semtrust.events.jsonexport import parse_record
    from semtrust.model.coefficient import event_coefficient

    pseudonyms = frozenset(model.pseudonyms)
    found: dict[bytes, Event] = {}
    for line in model.comments:
        if not line.startswith(RECORD_COMMENT):
            continue
        hexpart, _, text = line[len(RECORD_COMMENT):].partition(" ")
        try:
            point = bytes.fromhex(hexpart)
            ev = parse_record(text, source=model.source)
        except (ValueError, SemtrustError):
            continue
        if isinstance(ev, Event) and event_coefficient(ev, pseudonyms) == point:
            found[point] = ev
    return found


def point_descriptions(model: Model) -> dict[bytes, str]:
    """Descriptions a model carries in ``# event HEX text`` comments."""
    found: dict[bytes, str] = {}
    for line in model.comments:
        if line.startswith(EVENT_COMMENT):
            hexpart, _, text = line[len(EVENT_COMMENT):].partition(" ")
            try:
                found[bytes.fromhex(hexpart)] = text
            except ValueError:
                continue
    return found


def render_parsed(model: Model) -> str:
    """The model's own lines (without key and signature), as signed content."""
    lines = [line for line in model.body_lines if not line.startswith("key ")]
    return "\n".join(lines) + "\n"
