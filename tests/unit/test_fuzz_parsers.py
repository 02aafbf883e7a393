"""Fuzzing the input parsers: bad input is an InputError, never a crash.

Trajectories, legacy lines and model files come from users and from the
kernel; the CLI turns an :class:`InputError` into one line and exit code 2,
but any other exception is a traceback (and, in a live sensor, a dead TMA).
These tests feed arbitrary text and mutated valid records into every parser
and accept exactly two outcomes: a record, or an InputError. Records that
parse must also have a computable coefficient, since replay computes it next.
A longer seeded run lives in bench/fuzz_parsers.py.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from semtrust.cli import main
from semtrust.errors import InputError
from semtrust.events.jsonexport import parse_record
from semtrust.events.legacy import parse_legacy
from semtrust.events.names import LEGACY_NAMES
from semtrust.events.reader import read_records
from semtrust.events.record import Aggregate, Event, LegacyEvent, LogRecord, Record
from semtrust.model.coefficient import event_coefficient
from semtrust.model.modelfile import Model, parse_model, render_model
from semtrust.model.signing import generate_key, public_pem, sign_model_text
from semtrust.model.tma import TMA
from tests import vectors
from tests.jsontree import key_paths, parent_of

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

JSON_SEEDS: list[str] = [
    line
    for name in ("events18.json", "test-trajectory.json")
    for line in vectors.path(name).read_text().splitlines()
    if line.strip()
]
JSON_OBJS: list[Any] = [json.loads(line) for line in JSON_SEEDS]

LEGACY_SEEDS: list[str] = [
    *vectors.path("test-trajectory.txt").read_text().splitlines(),
    # Cell types the vector file lacks (spec §3.5).
    *(vectors.VECTORS.parent / "legacy-cells.txt").read_text().splitlines(),
]


@cache
def model_seeds() -> tuple[bytes, ...]:
    """A learned model, one with base/pseudonym/comments, and an RSA-signed one."""
    tma = TMA()
    for _, rec in read_records(vectors.path("events18.json")):
        if isinstance(rec, Event | LegacyEvent):
            tma.update(rec)
    plain = render_model(tma)
    extra = (
        "# a comment\nbase " + "11" * 32 + "\npseudonym " + "22" * 32 + "\n" + plain
    ).replace("seal\n", "")
    key = generate_key("rsa")
    signed = sign_model_text(plain, key)
    other = base64.b64encode(public_pem(generate_key("ed25519"))).decode()
    foreign = f"key {other}\n{plain}"
    return plain.encode(), extra.encode(), signed.encode(), foreign.encode()


# --------------------------------------------------------------------------- strategies

def _digits(d: str) -> st.SearchStrategy[str]:
    return st.integers(1, 6000).map(lambda n: d * n)


number_like = st.one_of(
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.integers(0, 1 << 70).map(hex),
    st.integers(0, 1 << 70).map(lambda n: "0" + oct(n)[2:]),
    _digits("9"), _digits("1"), _digits("0"), _digits("7").map(lambda s: "0" + s),
    st.sampled_from(["-1", "-0", "+5", " 12", "0x", "0xg", "0X1F", "08", "1e5", "1.5", "",
                     " ", "٣", "１２", "0x" + "f" * 40, "-9223372036854775809",
                     "18446744073709551616", "4294967296", "65536", "\x00", "nan"]),
)
hexish = st.one_of(
    st.binary(max_size=40).map(bytes.hex),
    st.text("0123456789abcdefABCDEFxg -", max_size=70),
)
scalar = st.one_of(
    st.text(max_size=20), number_like, hexish, st.integers(), st.floats(),
    st.none(), st.booleans(),
)
garbage: st.SearchStrategy[Any] = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


NEST = "@@nest@@"




@st.composite
def mutated_objects(draw: st.DrawFn) -> Any:
    """A valid export record with a few keys deleted, replaced, renamed or added."""
    obj = json.loads(json.dumps(draw(st.sampled_from(JSON_OBJS))))
    for _ in range(draw(st.integers(1, 4))):
        paths = key_paths(obj)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = parent_of(obj, path)
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        op = draw(st.sampled_from(["delete", "replace", "replace", "rename", "add", "nest"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "replace":
            parent[path[-1]] = draw(garbage)
        elif op == "rename":
            parent[draw(st.text(max_size=10))] = parent.pop(path[-1])
        elif op == "add":
            parent[draw(st.text(max_size=10))] = draw(garbage)
        else:
            parent[path[-1]] = NEST  # replaced by deep nesting in the text
    return obj


def _mutate_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "dup", "escape"]))
        i = draw(st.integers(0, n))
        if op == "flip" and n:
            i = min(i, n - 1)
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
        elif op == "truncate":
            data = data[:i]
        elif op == "insert":
            data = data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
        elif op == "delete":
            data = data[:i] + data[i + draw(st.integers(1, 16)):]
        elif op == "dup":
            data = data[:i] + data[i:i + draw(st.integers(1, 64))] + data[i:]
        else:
            data = data[:i] + draw(st.sampled_from([b"\\", b"\\u0000", b'\\"', b"\\\\"])) + data[i:]
    return data


@st.composite
def mutated_json_lines(draw: st.DrawFn) -> str:
    """Structural mutations, then (sometimes) byte-level damage to the text."""
    if draw(st.booleans()):
        text = json.dumps(draw(mutated_objects()), ensure_ascii=draw(st.booleans()))
        depth = draw(st.integers(1, 5000))
        text = text.replace(f'"{NEST}"', "[" * depth + "{}" + "]" * depth)
    else:
        text = draw(st.sampled_from(JSON_SEEDS))
    data = text.encode("utf-8", "surrogateescape")
    if draw(st.booleans()) or text in JSON_SEEDS:
        data = _mutate_bytes(draw, data)
    return data.decode("utf-8", "surrogateescape")


@st.composite
def mutated_legacy_lines(draw: st.DrawFn) -> str:
    line = draw(st.sampled_from(LEGACY_SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["value", "drop_pair", "type", "clause", "bytes"]))
        pairs = line.split(", ")
        if op == "value" and "=" in line:
            i = draw(st.integers(0, len(pairs) - 1))
            key, sep, _ = pairs[i].partition("=")
            new = draw(st.one_of(number_like, hexish, st.text(max_size=12)))
            pairs[i] = key + sep + new if sep else pairs[i] + "=" + new
            line = ", ".join(pairs)
        elif op == "drop_pair" and len(pairs) > 1:
            del pairs[draw(st.integers(0, len(pairs) - 1))]
            line = ", ".join(pairs)
        elif op == "type":
            name = draw(st.sampled_from([*LEGACY_NAMES, "", "bogus"]))
            line = line.replace("type=", f"type={name}, x=", 1) if draw(st.booleans()) \
                else line.replace(line.split("type=", 1)[-1].split(",")[0], name, 1)
        elif op == "clause":
            clauses = line.split("} ")
            i = draw(st.integers(0, len(clauses) - 1))
            if draw(st.booleans()):
                del clauses[i]
            else:
                clauses.insert(i, clauses[i])
            line = "} ".join(clauses)
        else:
            line = _mutate_bytes(draw, line.encode("utf-8", "surrogateescape")).decode(
                "utf-8", "surrogateescape")
    return line


@st.composite
def mutated_models(draw: st.DrawFn) -> bytes:
    lines = draw(st.sampled_from(model_seeds())).split(b"\n")
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        op = draw(st.sampled_from(["delete", "dup", "replace", "hex", "key", "sig", "bytes"]))
        if op == "delete" and lines:
            del lines[i]
        elif op == "dup" and lines:
            lines.insert(i, lines[i])
        elif op == "replace":
            word = draw(st.sampled_from([b"state ", b"base ", b"aggregate ", b"pseudonym ",
                                         b"key ", b"signature ", b"seal", b"end", b"# ", b""]))
            lines.insert(i, word + draw(st.one_of(hexish, st.text(max_size=40))).encode(
                "utf-8", "surrogatepass"))
        elif op == "hex" and lines:
            head, _, _ = lines[i].partition(b" ")
            lines[i] = head + b" " + draw(hexish).encode()
        elif op in ("key", "sig"):
            blob = base64.b64encode(draw(st.binary(max_size=300)))
            if op == "key" and draw(st.booleans()):
                pem = b"-----BEGIN PUBLIC KEY-----\n" + blob + b"\n-----END PUBLIC KEY-----\n"
                blob = base64.b64encode(pem)
            lines.insert(0 if op == "key" else len(lines), (b"key " if op == "key"
                                                            else b"signature ") + blob)
        else:
            joined = _mutate_bytes(draw, b"\n".join(lines))
            lines = joined.split(b"\n")
    return b"\n".join(lines)


arbitrary_lines = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.text("{}[]\":, \\0123456789abcdefx-+.eE", max_size=200),
)


# ------------------------------------------------------------------------------- checks

def _json(text: str) -> Record | None:
    try:
        rec = parse_record(text, source="fuzz", line=7)
    except InputError as exc:
        assert exc.source == "fuzz" and exc.line == 7
        return None
    if isinstance(rec, Event):
        assert len(event_coefficient(rec)) == 32
    else:
        assert isinstance(rec, Aggregate | LogRecord)
    return rec


def _legacy(text: str) -> LegacyEvent | None:
    try:
        ev = parse_legacy(text, source="fuzz", lineno=7)
    except InputError as exc:
        assert exc.source == "fuzz" and exc.line == 7
        return None
    assert len(event_coefficient(ev)) == 32
    return ev


def _model(data: bytes, **kw: Any) -> Model | None:
    try:
        return parse_model(data, source="fuzz.model", **kw)
    except InputError as exc:
        # A bad pinned key (key_pem) is the caller's input, not the model's.
        assert exc.source == "fuzz.model" or kw.get("key_pem") is not None, exc
        return None


def test_seeds_are_valid() -> None:
    """The mutations start from inputs that parse; otherwise they test nothing."""
    assert all(_json(line) is not None for line in JSON_SEEDS)
    assert all(_legacy(line) is not None for line in LEGACY_SEEDS)
    plain, extra, signed, _ = model_seeds()
    assert _model(plain) is not None and _model(extra) is not None
    m = _model(signed)
    assert m is not None and m.signed


@FUZZ
@given(arbitrary_lines)
def test_json_arbitrary_text(text: str) -> None:
    _json(text)


def _set(seed: int, path: str, value: Any) -> str:
    obj = json.loads(JSON_SEEDS[seed])
    *parents, key = path.split(".")
    node = obj
    for k in parents:
        node = node[k]
    node[key] = value
    return json.dumps(obj)


# Crashes the fuzzers found (TypeError from the parse caches, ValueError from int()).
@FUZZ
@example(_set(0, "COE.uid", []))
@example(_set(0, "file_open.file.inode.s_uuid", {"a": ["b"]}))
@example(_set(0, "file_open.file.flags", "9" * 5000))
@example(_set(0, "event.ts", "1" * 5000))
@example(_set(0, "COE.capeff", "-" + "9" * 4400))
# A generic CELL 1000 levels deep: orjson reads it, json.dumps of the body recursed too deep.
@example(_set(15, "sb_statfs", {"x": NEST}).replace(f'"{NEST}"', "[" * 1000 + "]" * 1000))
@given(mutated_json_lines())
def test_json_mutated_records(text: str) -> None:
    _json(text)


@FUZZ
@given(arbitrary_lines)
def test_legacy_arbitrary_text(text: str) -> None:
    _legacy(text)


@FUZZ
@example(LEGACY_SEEDS[0].replace("gid=0,", "gid=" + "9" * 4301 + ",", 1))
@given(mutated_legacy_lines())
def test_legacy_mutated_lines(text: str) -> None:
    _legacy(text)


@FUZZ
@given(st.one_of(st.binary(max_size=400),
                 arbitrary_lines.map(lambda t: t.encode("utf-8", "surrogateescape"))))
def test_model_arbitrary_bytes(data: bytes) -> None:
    _model(data)


# An SPKI PEM with an unknown algorithm OID (1.3.101.127): UnsupportedAlgorithm, not ValueError.
_ODD_KEY = base64.b64encode(
    b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2V/AyEATNiLWtJNdrZ/IYIl4CZr0QyWvcSua+7nANZLTlVsB10=\n"
    b"-----END PUBLIC KEY-----\n")


@settings(FUZZ, max_examples=300)
@example(b"key " + _ODD_KEY + b"\nstate " + b"00" * 32 + b"\n", True, None)
@example(b"state " + b"00" * 32 + b"\n", True, b"-----BEGIN PUBLIC KEY-----\n"
         + base64.b64decode(_ODD_KEY).split(b"\n")[1] + b"\n-----END PUBLIC KEY-----\n")
@given(mutated_models(), st.booleans(), st.sampled_from([None, b"junk", b""]))
def test_model_mutated(data: bytes, allow_unsigned: bool, key_pem: bytes | None) -> None:
    _model(data, allow_unsigned=allow_unsigned, key_pem=key_pem)


# ---------------------------------------------------------------------------------- CLI

def _cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # a crash: show its traceback in the test report
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize("garbage_line", [
    "{not json",
    '{"export": {"type": "event"}}',
    "\udcff\udcfe binary \x00",
    JSON_SEEDS[3].replace('"uid": "0"', '"uid": {"nested": ["x"]}', 1),
    JSON_SEEDS[0].replace('"flags": "32768"', '"flags": "' + "9" * 5000 + '"', 1),
])
@pytest.mark.parametrize("command", ["replay", "points"])
def test_cli_garbage_line_is_one_line_exit_2(
    tmp_path: Path, garbage_line: str, command: str
) -> None:
    path = tmp_path / "traj.json"
    lines = [JSON_SEEDS[0], JSON_SEEDS[1], garbage_line, JSON_SEEDS[2]]
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    code, _, err = _cli(command, str(path))
    assert code == 2, err
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"semtrust: {path}:3: "), err


@settings(FUZZ, max_examples=60)
@given(st.one_of(mutated_json_lines(), arbitrary_lines))
def test_cli_replay_never_tracebacks(tmp_path_factory: pytest.TempPathFactory,
                                     line: str) -> None:
    path = tmp_path_factory.mktemp("cli") / "traj.json"
    line = line.replace("\n", " ")
    path.write_bytes((JSON_SEEDS[0] + "\n" + line + "\n").encode("utf-8", "surrogateescape"))
    code, out, err = _cli("replay", str(path), "--json")
    assert "Traceback" not in err
    try:
        parse_record(line)
        bad = False
    except InputError:
        bad = bool(line.strip(" \t\r\n"))  # blank = JSON white space only
    if bad:
        assert code == 2 and err.count("\n") == 1 and f"{path}:2: " in err, err
    else:
        assert code == 0, err
        assert json.loads(out)["events"] >= 1


def test_cli_skip_invalid_counts_all_keeps_ten(tmp_path: Path) -> None:
    """--skip-invalid reports every bad record but keeps only ten errors in memory."""
    path = tmp_path / "traj.json"
    bad = JSON_SEEDS[0].replace('"uid": "0"', '"uid": "-1"', 1)
    path.write_text("\n".join([JSON_SEEDS[0]] + [bad] * 25 + [JSON_SEEDS[1]]) + "\n")
    code, out, err = _cli("replay", str(path), "--skip-invalid", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["skipped"] == 25 and summary["events"] == 2
    assert err.count("semtrust: skipped: ") == 10
    assert "skipped 15 more invalid records" in err
