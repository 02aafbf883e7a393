"""Streaming trajectory reader: one record at a time, format detected or forced.

A trajectory can have millions of records; nothing here holds more than one
line. Lines are decoded with ``surrogateescape`` so non-UTF-8 bytes in paths
hash exactly as the bytes the kernel reported.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from semtrust.errors import InputError
from semtrust.events.jsonexport import parse_record_bytes
from semtrust.events.legacy import parse_legacy
from semtrust.events.record import Record

FORMATS = ("json", "legacy")
_JSON_SPACE = b" \t\r\n"  # blank lines are skipped; JSON has no other white space
MAX_LINE = 1 << 20  # a record longer than 1 MiB is malformed, not a reason to exhaust memory


def detect_format(first_line: bytes) -> str:
    """JSON export records start with ``{``; legacy lines with a clause name."""
    return "json" if first_line.lstrip().startswith(b"{") else "legacy"


#: Computes a coefficient straight from a JSON line, or None to leave it to the parser.
QuickPath = Callable[[bytes], "bytes | None"]


def iter_records(
    fp: BinaryIO,
    *,
    source: str,
    fmt: str | None = None,
    skip_invalid: bool = False,
    on_skip: Callable[[InputError], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Iterator[tuple[int, Record]]:
    """Yield ``(line number, record)``; with ``skip_invalid`` bad lines go to ``on_skip``."""
    return _iter(fp, source, fmt, skip_invalid, on_skip, on_warning, None)  # type: ignore[return-value]


def iter_points(
    fp: BinaryIO,
    quick: QuickPath,
    *,
    source: str,
    fmt: str | None = None,
    skip_invalid: bool = False,
    on_skip: Callable[[InputError], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Iterator[tuple[int, Record | bytes]]:
    """Like ``iter_records``, but a JSON line ``quick`` answers for yields its coefficient
    (``bytes``) instead of a record."""
    return _iter(fp, source, fmt, skip_invalid, on_skip, on_warning, quick)


def _iter(
    fp: BinaryIO,
    source: str,
    fmt: str | None,
    skip_invalid: bool,
    on_skip: Callable[[InputError], None] | None,
    on_warning: Callable[[str], None] | None,
    quick: QuickPath | None,
) -> Iterator[tuple[int, Record | bytes]]:
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (use json or legacy)", field="--format")
    readline = fp.readline
    lineno = 0
    while True:  # one line at a time, each bounded (readline beats a generator layer here)
        raw = readline(MAX_LINE + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE:
            raise InputError(f"line longer than {MAX_LINE} bytes", source=source, line=lineno)
        terminated = raw[-1:] == b"\n"
        if terminated:
            raw = raw[:-1]
        if fmt is None:
            if not raw.strip(_JSON_SPACE):
                continue
            fmt = detect_format(raw)
        try:
            if fmt == "json":
                if quick is not None:
                    coefficient = quick(raw)
                    if coefficient is not None:
                        yield lineno, coefficient
                        continue
                if not raw.strip(_JSON_SPACE):
                    continue
                yield lineno, parse_record_bytes(raw, source=source, line=lineno)
            else:
                text = raw.decode("utf-8", "surrogateescape")
                if not terminated:
                    # The reference reader drops a final line without a newline.
                    if on_warning is not None:
                        on_warning(f"{source}:{lineno}: final line has no newline; ignored")
                    continue
                yield lineno, parse_legacy(text, source=source, lineno=lineno)
        except InputError as exc:
            if not skip_invalid:
                raise
            if on_skip is not None:
                on_skip(exc)


@contextmanager
def open_trajectory(path: str | Path) -> Iterator[BinaryIO]:
    """The trajectory file (``-`` for stdin), buffered; a clear error if unreadable."""
    source = str(path)
    if source == "-":
        yield sys.stdin.buffer
        return
    try:
        fp = open(path, "rb", buffering=1 << 16)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=source) from None
    with fp:
        yield fp


def source_name(path: str | Path) -> str:
    """How errors name the trajectory."""
    return "<stdin>" if str(path) == "-" else str(path)


def read_records(
    path: str | Path,
    fmt: str | None = None,
    **kwargs: object,
) -> Iterator[tuple[int, Record]]:
    """Open ``path`` (``-`` for stdin) and stream its records."""
    with open_trajectory(path) as fp:
        yield from iter_records(fp, source=source_name(path), fmt=fmt, **kwargs)  # type: ignore[arg-type]
