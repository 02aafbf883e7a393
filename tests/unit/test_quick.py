"""The quick coefficient path (``semtrust.model.quick``) against the full parser.

For every byte string ``raw`` the contract is:

(A) if the full path (``parse_record_bytes`` then ``event_coefficient``) raises an
    InputError or gives an Aggregate or LogRecord, ``of_line(raw)`` is None;
(B) if the full path gives an Event, ``of_line(raw)`` is None or that event's coefficient;
(C) ``of_line`` never raises.

And the fast path must not be dead: ordinary records without a backslash get an
answer. Checked on the vectors, on hypothesis events, on mutated records (with a
fresh instance and with long-lived ones whose caches persist across examples), on
hand-made edge cases, and through ``semtrust points`` / ``semtrust replay``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from collections.abc import Set
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semtrust.cli import main
from semtrust.errors import InputError
from semtrust.events.describe import describe
from semtrust.events.jsonexport import format_event, parse_record_bytes
from semtrust.events.names import EVENT_NAMES, EXPLICIT_CELLS
from semtrust.events.record import Event, FileCell, MmapCell
from semtrust.model.coefficient import event_coefficient, pseudonym
from semtrust.model.quick import QuickCoefficients
from tests import vectors
from tests.jsontree import key_paths, parent_of
from tests.unit.test_properties import events

PASSWD = pseudonym("/etc/passwd")
NO_PSEUDONYMS: frozenset[bytes] = frozenset()
VECTOR_FILES = ("test-trajectory.json", "events18.json")
GENERIC_NAMES = tuple(n for n in EVENT_NAMES if n not in EXPLICIT_CELLS)

# Long-lived instances: their caches (COE and inode digests keyed by raw text, task
# identities) persist across every example of every test in this module.
SHARED = QuickCoefficients()
SHARED_PASSWD = QuickCoefficients(frozenset({PASSWD}))
# The same without the compiled object digests: every COE and inode through orjson
# and the Python number rules. Where the extension is not built both are that.
PYTHON_ONLY = QuickCoefficients(native=False)


# ------------------------------------------------------------------------------ oracle

def _show(raw: bytes) -> str:
    return repr(raw if len(raw) <= 400 else raw[:300] + b"..." + raw[-80:])


def full_path(raw: bytes, pseudonyms: Set[bytes] = NO_PSEUDONYMS) -> bytes | None:
    """The reference answer: the Event's coefficient, or None (InputError, Aggregate,
    LogRecord). Any other exception is a full-parser crash, reported as such."""
    try:
        rec = parse_record_bytes(raw, source="quick", line=1)
    except InputError:
        return None
    except Exception as exc:  # pragma: no cover - a finding about the full parser
        pytest.fail(f"the full parser crashed ({exc!r}) on {_show(raw)}")
    if not isinstance(rec, Event):
        return None
    return event_coefficient(rec, pseudonyms)


def quick_path(q: QuickCoefficients, raw: bytes) -> bytes | None:
    try:
        return q.of_line(raw)
    except Exception as exc:
        pytest.fail(f"(C) of_line raised {exc!r} on {_show(raw)}")


def check(
    raw: bytes, q: QuickCoefficients | None = None, pseudonyms: Set[bytes] = NO_PSEUDONYMS
) -> tuple[bytes | None, bytes | None]:
    """Contract A/B/C on one line; returns (quick, full)."""
    got = quick_path(q if q is not None else QuickCoefficients(pseudonyms), raw)
    want = full_path(raw, pseudonyms)
    if want is None:
        assert got is None, (
            f"(A) quick answered {got.hex()} where the full path gives no event: {_show(raw)}"
        )
    elif got is not None:
        assert got == want, (
            f"(B) quick answered {got.hex()}, the full path {want.hex()}: {_show(raw)}"
        )
        check_description(raw, q)
    return got, want


def check_description(raw: bytes, q: QuickCoefficients | None = None) -> str | None:
    """(D) Where the quick path describes a line it answered for, it says what
    ``describe`` says of the fully parsed event."""
    try:
        text = (q or SHARED).describe_line(raw)
    except Exception as exc:
        pytest.fail(f"(D) describe_line raised {exc!r} on {_show(raw)}")
    if text is not None:
        rec = parse_record_bytes(raw, source="quick", line=1)
        assert isinstance(rec, Event)
        assert text == describe(rec), f"(D) described {text!r}, not {describe(rec)!r}"
    return text


def check_native(raw: bytes) -> None:
    """(E) The compiled object digests change no answer: with and without them, fresh
    instances give the same coefficient or both defer."""
    native = quick_path(QuickCoefficients(), raw)
    python = quick_path(QuickCoefficients(native=False), raw)
    assert native == python, (
        f"(E) compiled {native and native.hex()}, Python {python and python.hex()}: "
        f"{_show(raw)}")


def check_all(raw: bytes) -> tuple[bytes | None, bytes | None]:
    """Fresh instance, the long-lived one, and the long-lived one with a pseudonym;
    the Python-only one, and compiled against Python."""
    check(raw, SHARED)
    check(raw, SHARED_PASSWD, {PASSWD})
    check(raw, None, {PASSWD})
    check(raw, PYTHON_ONLY)
    check_native(raw)
    return check(raw)


def vector_lines(name: str) -> list[bytes]:
    return [ln for ln in vectors.path(name).read_bytes().splitlines() if ln.strip()]


# ----------------------------------------------------------------------------- vectors

@pytest.mark.parametrize("name", VECTOR_FILES)
def test_vectors_agree_and_take_the_fast_path(name: str) -> None:
    lines = vector_lines(name)
    q = QuickCoefficients()
    answers: list[bytes | None] = []
    for n, raw in enumerate(lines, 1):
        got, want = check(raw, q)
        assert want is not None, f"{name}:{n}: every vector line is an event"
        if b"\\" not in raw:
            assert got is not None, f"{name}:{n}: quick deferred on an ordinary record"
        answers.append(got)
    # Warm caches give the same answers.
    assert [q.of_line(raw) for raw in lines] == answers
    assert [SHARED.of_line(raw) for raw in lines] == answers
    if name == "events18.json":
        expected = vectors.scenario_file("events18.expected.txt")
        want_hex = [expected[f"A.event{n}"][0] for n in range(1, len(lines) + 1)]
    else:
        want_hex = vectors.expected_coefficients(name)
    assert [a.hex() if a is not None else None for a in answers] == want_hex


def test_events18_with_the_passwd_pseudonym() -> None:
    pseudonyms = frozenset({PASSWD})
    assert PASSWD.hex() == vectors.scenario_file("events18.expected.txt")[
        "pseudonym(/etc/passwd)"][0]
    q = QuickCoefficients(pseudonyms)
    plain = QuickCoefficients()
    with_p: list[bytes] = []
    without: list[bytes] = []
    for n, raw in enumerate(vector_lines("events18.json"), 1):
        got, want = check(raw, q, pseudonyms)
        assert got is not None and want is not None, f"events18.json:{n}: quick deferred"
        with_p.append(got)
        other = plain.of_line(raw)
        assert other is not None
        without.append(other)
    assert any(a != b for a, b in zip(with_p, without, strict=True))
    # Scenario E of the reference vectors: the first three events under the pseudonym.
    expected = vectors.scenario_file("events18.expected.txt")["E.coeff"]
    assert [c.hex() for c in with_p[:3]] == expected


# -------------------------------------------------------------------- hypothesis events

@settings(max_examples=300, deadline=None)
@given(events(), st.booleans(), st.booleans())
def test_formatted_events_round_trip(ev: Event, wrapped: bool, use_pseudonym: bool) -> None:
    pseudonyms = NO_PSEUDONYMS
    cell = ev.cell
    if use_pseudonym and isinstance(cell, FileCell | MmapCell) and (
        file := cell.file
    ) is not None:
        pseudonyms = frozenset({pseudonym(file.path.pathname)})
    raw = format_event(ev, export=wrapped).encode("utf-8", "surrogateescape")
    got, want = check(raw, None, pseudonyms)
    if not pseudonyms:
        check(raw, SHARED)
    elif pseudonyms == {PASSWD}:
        check(raw, SHARED_PASSWD, pseudonyms)
    assert want == event_coefficient(ev, pseudonyms)
    # The quick path documents that it defers on header numbers (never hashed) over 17
    # characters; the strategy draws them up to 2**63 - 1.
    short = all(v is None or len(str(v)) <= 17 for v in (
        ev.tnum, ev.context, ev.number, ev.ttd, ev.p_ttd, ev.ts))
    if b"\\" not in raw and short:
        assert got is not None, f"quick deferred on a well-formed record: {_show(raw)}"
        assert got == want


# ------------------------------------------------------------------------- seed lines

def _bench(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_semtrust_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _shape(line: str) -> tuple[object, ...]:
    """What makes a generated line different from another, for picking seeds."""
    d = json.loads(line)
    name = d.get("event", {}).get("type", d.get("export", {}).get("type"))
    cell = d.get(name) if isinstance(d.get(name), dict) else {}
    file = cell.get("file", {}) if isinstance(cell, dict) else {}
    path = file.get("path", {})
    sock = cell.get("sock", {}) if name in EXPLICIT_CELLS else {}
    return (name if name in EXPLICIT_CELLS or name == "aggregate" else "generic",
            sock.get("family"), "instance" in path, bool(file), "\\" in line)


@cache
def seed_lines() -> tuple[bytes, ...]:
    """Valid lines of every shape the quick path reads (and a few it defers)."""
    e18 = [json.loads(ln) for ln in vector_lines("events18.json")]
    out: list[bytes] = [*vector_lines("events18.json"), *vector_lines("test-trajectory.json")[:6]]

    def variant(i: int, edit: Any) -> None:
        d = json.loads(json.dumps(e18[i]))
        edit(d)
        out.append(_dumps(d))

    def retype(d: dict[str, Any], old: str, new: str) -> None:
        d["event"]["type"] = new
        d[new] = d.pop(old)

    variant(0, lambda d: d["file_open"]["file"]["path"].pop("dev"))           # no dev
    variant(2, lambda d: d["file_open"]["file"]["path"].update(instance="0"))  # instance 0
    variant(2, lambda d: d["file_open"]["file"]["path"].update(instance="0")
            or d["file_open"]["file"]["path"].pop("owner"))                     # no owner
    variant(7, lambda d: retype(d, "socket_connect", "socket_accept"))        # inet6 accept
    variant(9, lambda d: retype(d, "socket_connect", "socket_accept"))        # other accept
    variant(9, lambda d: retype(d, "socket_connect", "socket_bind"))          # other bind
    variant(8, lambda d: retype(d, "socket_connect", "socket_bind"))          # unix bind
    variant(7, lambda d: retype(d, "socket_connect", "socket_bind"))          # inet6 bind
    variant(5, lambda d: d["export"].update(type="async_event"))
    variant(13, lambda d: d["export"].update(type="log"))
    variant(6, lambda d: d.pop("export"))                                     # no wrapper
    variant(0, lambda d: d.pop("export"))
    variant(14, lambda d: retype(d, "inode_getattr", "capable"))
    variant(15, lambda d: d.pop("sb_statfs"))                                 # no generic CELL
    agg = "ab" * 32
    out.append(_dumps({"export": {"type": "aggregate"}, "aggregate": {"value": agg}}))
    out.append(_dumps({"aggregate": {"value": agg}}))
    out.append(_dumps({"export": {"type": "log"},
                       "log": {"process": "cat", "event": "file_open", "action": "DENY"}}))
    # Generated lines (bench/trajectory_gen.py): one per shape, backslashes included,
    # with repeating and with all-distinct COE and inode values.
    for distinct in (False, True):
        gen = _bench("trajectory_gen").Generator(5, 3000, distinct)
        shapes: set[tuple[object, ...]] = set()
        for line in gen.lines(3000, 3000, True):
            shape = _shape(line)
            if shape not in shapes:
                shapes.add(shape)
                out.append(line.encode())
    return tuple(out)


def test_seed_lines_are_varied_and_valid() -> None:
    seeds = seed_lines()
    assert len(seeds) >= 30
    kinds: set[str] = set()
    for raw in seeds:
        rec = parse_record_bytes(raw)
        kinds.add(type(rec).__name__)
        got, want = check_all(raw)
        if want is not None and b"\\" not in raw:
            assert got is not None, f"quick deferred on a seed line: {_show(raw)}"
        addressed = rec.type in ("socket_connect", "socket_bind", "socket_accept") \
            if isinstance(rec, Event) else True
        if got is not None and not addressed:  # described without the full parser
            assert check_description(raw) is not None, f"not described: {_show(raw)}"
    assert kinds == {"Event", "Aggregate", "LogRecord"}
    assert any(b"\\" in raw for raw in seeds)


# ------------------------------------------------------------------------- mutations

_KEYS = ("type", "pathname", "family", "address", "af_inet", "af_inet6", "af_unix",
         "af_other", "port", "flow", "scope", "instance", "owner", "dev", "file", "inode",
         "digest", "flags", "prot", "COE", "uid", "capeff", "event", "export", "task_id",
         "p_task_id", "pid", "ts", "sock", "addr", "target", "sig", "cross_ns", "kern",
         "aggregate", "log", "s_id", "s_uuid", "mode", "file_open", "capable")
_STRINGS = ("", "x" * 200, "0x10", "-1", "0777", "99999999999999999999", "1e3", "0",
            "not hex at all", "4294967296", "4294967295", "18446744073709551615",
            "-9223372036854775809", " 12", "0x", "08", "+5", "１２", "/", "/etc/passwd", "a",
            "0" * 17, "9" * 18, "é" * 60, "\t", "\x00")
_SCALARS: tuple[Any, ...] = (None, 0, 7, -1, 1.5, 1e300, True, False, [], ["1"], {}, {"a": "1"},
                             *_STRINGS)
_FAMILIES = ("1", "2", "10", "16", "38", "0", "0x2", "02", "012", "-2", "4294967298", "2 ", "")
# Raw JSON text substituted for a placeholder after serialising (what orjson cannot emit).
_RAW_VALUES: tuple[bytes, ...] = (
    b"[" * 300 + b"{}" + b"]" * 300,
    b"{\"a\":" * 199 + b"1" + b"}" * 199,
    b"[" * 1500 + b"]" * 1500,
    b"[" * 5000 + b"]" * 5000,  # deeper than the recursion limit hypothesis raises
    b"1" * 5000,
    b"-" + b"9" * 4400,
    b"123456789012345678901234567890",
    b"1e999",
    b"-0",
    b"NaN",
    b"Infinity",
    b"\"\xff\"",
    b"\"\xed\xa0\x80\"",
)
_PLACEHOLDER = "@@raw:{}@@"


@st.composite
def hex_texts(draw: st.DrawFn) -> str:
    size = draw(st.sampled_from([0, 1, 15, 16, 17, 31, 32, 33, 64]))
    value = draw(st.binary(min_size=size, max_size=size)).hex()
    how = draw(st.sampled_from(["plain", "upper", "space", "odd", "junk"]))
    if how == "upper":
        return value.upper()
    if how == "space" and value:
        i = draw(st.integers(0, len(value) // 2)) * 2
        return value[:i] + " " + value[i:]
    if how == "odd":
        return value + "a"
    if how == "junk" and value:
        i = draw(st.integers(0, len(value) - 1))
        return value[:i] + draw(st.sampled_from("gx-+ ")) + value[i + 1:]
    return value




def _mutate_object(draw: st.DrawFn, obj: Any, raws: list[bytes]) -> None:
    """One structural change to a decoded record, in place."""
    op = draw(st.sampled_from(["delete", "replace", "replace", "hex", "rename", "add",
                               "event_type", "export_type", "family", "raw"]))
    if not isinstance(obj, dict):
        return
    if op == "event_type":
        ev = obj.get("event")
        if isinstance(ev, dict):
            new = draw(st.sampled_from([*EVENT_NAMES, "bogus", "", "File_open"]))
            ev["type"] = new
            if draw(st.booleans()):  # move the CELL along with the name
                old = next((k for k in obj if k in EXPLICIT_CELLS or k in GENERIC_NAMES), None)
                if old is not None:
                    obj[new] = obj.pop(old)
        return
    if op == "export_type":
        kind = draw(st.sampled_from(["aggregate", "log", "bogus", "event", "async_event", None]))
        if kind is None:
            obj.pop("export", None)
        else:
            obj["export"] = {"type": kind}
        return
    if op == "family":
        for path in key_paths(obj):
            if path[-1] == "family":
                parent_of(obj, path)["family"] = draw(st.sampled_from(_FAMILIES))
        return
    paths = key_paths(obj)
    if not paths:
        return
    path = draw(st.sampled_from(paths))
    parent = parent_of(obj, path)
    key = path[-1]
    if op == "delete":
        del parent[key]
    elif op == "replace":
        parent[key] = copy.deepcopy(draw(st.sampled_from(_SCALARS)))  # later ops edit it
    elif op == "hex":
        parent[key] = draw(hex_texts())
    elif op == "rename":
        new_key = draw(st.one_of(st.sampled_from(_KEYS), st.text(max_size=8),
                                 st.just(key + "x"), st.just(key.upper())))
        parent[new_key] = parent.pop(key)
    elif op == "add":
        new_key = draw(st.one_of(st.sampled_from(_KEYS), st.text(max_size=8)))
        parent[new_key] = copy.deepcopy(draw(st.one_of(st.sampled_from(_SCALARS), hex_texts())))
    else:  # raw JSON text in place of the value (deep nesting, huge numbers, bad UTF-8)
        if draw(st.booleans()):
            parent, key = obj, draw(st.sampled_from([*GENERIC_NAMES[:4], "zzz", key]))
        raws.append(draw(st.sampled_from(_RAW_VALUES)))
        parent[key] = _PLACEHOLDER.format(len(raws) - 1)


_ESCAPES = (b"\\t", b"\\u0041", b"\\n", b'\\"', b"\\\\", b"\\/", b"\\0", b"\\x", b"\\",
            b"\\\xc3\xa9", b"\\ud800", b"\\u00e9", b"\\\x00")
_SPACE = (b" ", b"\t", b"\r", b"\n", b"\x0c", b"\xc2\xa0", b"\x00", b"\xef\xbb\xbf", b"  \r\n")
_DUP_VALUES = (b'"file_open"', b'"capable"', b'"0"', b'"1"', b"{}", b"null", b'"/etc/passwd"',
               b'"' + b"ab" * 32 + b'"', b'"4294967296"', b'{"type": "event"}', b"[]")


def _mutate_text(draw: st.DrawFn, raw: bytes) -> bytes:
    op = draw(st.sampled_from(["dup_key", "dup_key", "escape", "escape", "space", "truncate",
                               "bad_utf8", "nest_cell"]))
    if op == "dup_key":  # a key that may already exist in that object, before or after it
        opens = [i for i in range(len(raw)) if raw[i:i + 2] == b'{"']
        if opens:
            i = draw(st.sampled_from(opens)) + 1
            pair = b'"' + draw(st.sampled_from(_KEYS)).encode() + b'": ' + draw(
                st.sampled_from(_DUP_VALUES))
            if draw(st.booleans()):
                return raw[:i] + pair + b", " + raw[i:]
            close = raw.find(b"}", i)
            if close > 0:
                return raw[:close] + b", " + pair + raw[close:]
        return raw
    if op == "escape":  # inside a string most of the time: right after a quote
        quotes = [i + 1 for i in range(len(raw)) if raw[i:i + 1] == b'"']
        where = draw(st.one_of(st.sampled_from(quotes or [0]), st.integers(0, len(raw))))
        where += draw(st.integers(0, 3))
        return raw[:where] + draw(st.sampled_from(_ESCAPES)) + raw[where:]
    if op == "space":
        return draw(st.sampled_from((b"", *_SPACE))) + raw + draw(st.sampled_from(_SPACE))
    if op == "truncate":
        return raw[:draw(st.integers(0, max(0, len(raw) - 1)))]
    if op == "bad_utf8":
        i = draw(st.integers(0, len(raw)))
        return raw[:i] + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"\x80"])) \
            + raw[i:]
    # A generic CELL nested deep, the event's own name retyped to it.
    name = draw(st.sampled_from(GENERIC_NAMES))
    depth = draw(st.sampled_from([100, 199, 200, 254, 256, 300, 1100]))
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), dict):
        return raw
    obj["event"]["type"] = name
    obj[name] = "@@deep@@"
    try:
        text = orjson.dumps(obj)
    except orjson.JSONEncodeError:  # already deeper than orjson writes
        return raw
    return text.replace(b'"@@deep@@"', b"[" * depth + b"{}" + b"]" * depth)


@st.composite
def mutated_lines(draw: st.DrawFn) -> bytes:
    seed = draw(st.sampled_from(seed_lines()))
    raw = seed
    if draw(st.integers(0, 5)):
        obj = orjson.loads(seed)
        raws: list[bytes] = []
        for _ in range(draw(st.integers(1, 3))):
            _mutate_object(draw, obj, raws)
        if draw(st.booleans()):
            raw = orjson.dumps(obj)
        else:
            raw = json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()
        for i, text in enumerate(raws):
            raw = raw.replace(b'"' + _PLACEHOLDER.format(i).encode() + b'"', text)
    for _ in range(draw(st.integers(0 if raw != seed else 1, 2))):
        raw = _mutate_text(draw, raw)
    return raw


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_lines())
def test_mutated_records(raw: bytes) -> None:
    check_all(raw)


# ------------------------------------------------------------------------- edge cases

def _e18(n: int) -> bytes:
    return vector_lines("events18.json")[n - 1]


def _with(n: int, old: bytes, new: bytes) -> bytes:
    raw = _e18(n)
    assert old in raw, old
    return raw.replace(old, new, 1)


def _extra(n: int, text: bytes) -> bytes:
    """events18 line ``n`` with ``"zzz": text`` added at the top level."""
    return _e18(n)[:-1] + b', "zzz": ' + text + b"}"


def _generic_cell(text: bytes) -> bytes:
    """The sb_statfs line of events18 with ``text`` as its (generic) CELL."""
    raw = _e18(16)
    return raw[:raw.index(b'"sb_statfs": {"dentry"')] + b'"sb_statfs": ' + text + b"}"


EDGE_CASES: dict[str, bytes] = {
    # Nesting: msgspec skips unknown values recursively; json.dumps re-serialises CELLs.
    "deep unknown key 1000": _extra(1, b"[" * 1000 + b"]" * 1000),
    "deep unknown key 5000": _extra(1, b"[" * 5000 + b"]" * 5000),
    "deep unknown key 100000": _extra(6, b"[" * 100_000 + b"]" * 100_000),
    "deep generic cell 150": _generic_cell(b"[" * 150 + b"]" * 150),
    "deep generic cell 300": _generic_cell(b"[" * 300 + b"]" * 300),
    "deep generic cell 1000": _generic_cell(b"[" * 1000 + b"]" * 1000),
    "deep generic cell 5000": _generic_cell(b"[" * 5000 + b"]" * 5000),
    # Numbers json reads but orjson does not (and int() refuses over 4300 digits).
    "huge int in unknown key": _extra(1, b"1" * 5000),
    "huge negative int in unknown key": _extra(6, b"-" + b"9" * 4400),
    "huge int in generic cell": _generic_cell(b'{"x": ' + b"7" * 4301 + b"}"),
    "huge int in dev": _with(1, b'"major": "8"', b'"major": ' + b"8" * 5000),
    "huge int in inet6 port": _with(8, b'"port": "20480"', b'"port": ' + b"2" * 5000),
    "long int in unknown key": _extra(1, b"123456789012345678901234567890"),
    "1e999 in unknown key": _extra(1, b"1e999"),
    # Duplicate keys: the last one counts for orjson and json.
    "dup event.type before": _with(1, b'"type": "file_open"',
                                   b'"type": "capable", "type": "file_open"'),
    "dup event.type after": _with(1, b'"type": "file_open"',
                                  b'"type": "file_open", "type": "capable"'),
    "dup COE invalid last": _e18(1)[:-1] + b', "COE": {"uid": "x"}}',
    "dup COE valid last": _e18(2)[:-1] + b', "COE": ' + _e18(1).split(b'"COE": ')[1].split(
        b"}")[0] + b"}}",
    "dup export aggregate last": _e18(6)[:-1] + b', "export": {"type": "aggregate"}}',
    "dup uid": _with(2, b'"uid": "1000"', b'"uid": "1000", "uid": "4294967296"'),
    "dup pathname": _with(1, b'"pathname": "/etc/passwd"',
                          b'"pathname": "/etc/passwd", "pathname": "/etc/shadow"'),
    # Bytes and white space around and inside.
    "bom": b"\xef\xbb\xbf" + _e18(1),
    "trailing nul": _e18(1) + b"\x00",
    "trailing form feed": _e18(1) + b"\x0c",
    "json white space": b" \t\r\n" + _e18(1) + b"\r\n\t ",
    "nbsp": _e18(1) + b"\xc2\xa0",
    "bad utf-8 in pathname": _with(1, b"/etc/passwd", b"/etc/pa\xffsswd"),
    "surrogate utf-8 in unix address": _with(9, b"/run/dbus", b"/run/\xed\xa0\x80dbus"),
    "bad utf-8 in unknown key": _extra(1, b'"\xff\xfe"'),
    "bad utf-8 in generic cell": _generic_cell(b'{"x": "\xff"}'),
    "bad utf-8 in COE": _with(1, b'"capeff": "0x1ffffffffff"', b'"capeff": "0x1ff\xff"'),
    "tab in pathname": _with(1, b"/etc/passwd", b"/etc/pa\tsswd"),
    "nul in pathname": _with(1, b"/etc/passwd", b"/etc/pa\x00sswd"),
    "truncated": _e18(1)[:-1],
    # The reference's escape rule: \X is X, except \" and \\.
    "escape: letter in pathname": _with(1, b"/etc/passwd", b"/etc/pa\\sswd"),
    "escape: \\u0041 in pathname": _with(1, b"/etc/passwd", b"/etc/\\u0041passwd"),
    "escape: quote in pathname": _with(1, b"/etc/passwd", b'/etc/pa\\"sswd'),
    "escape: backslash in process": _with(1, b'"process": "cat"', b'"process": "c\\\\at"'),
    "escape: tab in process": _with(1, b'"process": "cat"', b'"process": "c\\tat"'),
    "escape: in a key": _with(1, b'"pathname"', b'"path\\name"'),
    "escape: in hex digest": _with(1, b'"digest": "6f', b'"digest": "\\6f'),
    "escape: t in hex digest": _with(1, b'"digest": "6f', b'"digest": "\\t6f'),
    "escape: in a number": _with(1, b'"flags": "32768"', b'"flags": "3\\2768"'),
    "escape: in uid": _with(2, b'"uid": "1000"', b'"uid": "1\\000"'),
    "escape: n in uid": _with(2, b'"uid": "1000"', b'"uid": "\\n1000"'),
    "escape: before a multibyte character": _with(1, b"/etc/passwd", b"/etc/\\\xc3\xa9passwd"),
    "escape: before bad utf-8": _with(1, b"/etc/passwd", b"/etc/\\\xffpasswd"),
    "escape: before nul": _with(1, b"/etc/passwd", b"/etc/\\\x00passwd"),
    "escape: in event type": _with(1, b'"type": "file_open"', b'"type": "file\\_open"'),
    "escape: at the end": _e18(1) + b"\\",
    "escape: in unix address": _with(9, b"/run/dbus", b"/run/\\dbus"),
    "escape: huge int after rewrite": _extra(1, b"1\\" + b"1" * 5000),
    # Unhashed and hashed corners of the full parser.
    "instance 0, junk owner": _with(3, b'"instance": "2"', b'"instance": "0"').replace(
        b'"owner": "b46a', b'"owner": "zz6a', 1),
    "instance, no slash": _with(3, b'"pathname": "/tmp/foo.txt"', b'"pathname": "foo.txt"'),
    "instance, slash only": _with(3, b'"pathname": "/tmp/foo.txt"', b'"pathname": "/"'),
    "instance -1": _with(3, b'"instance": "2"', b'"instance": "-1"'),
    "dev null": _with(1, b'"dev": {"major": "8", "minor": "1"}', b'"dev": null'),
    "dev junk values": _with(1, b'"major": "8"', b'"major": [{}]'),
    "accept port junk": _with(12, b'"port": "20480"', b'"port": [1]'),
    "accept port missing": _with(12, b'"port": "20480", ', b""),
    "inet6 flow missing": _with(8, b'"flow": "0", ', b""),
    "unix address 109 bytes multibyte": _with(
        9, b"/run/dbus/system_bus_socket", b"/" + "é".encode() * 54),
    "unix address 109 bytes": _with(9, b"/run/dbus/system_bus_socket", b"/" + b"u" * 108),
    "unix address 108 bytes": _with(9, b"/run/dbus/system_bus_socket", b"/" + b"u" * 107),
    "unix address 108 bytes multibyte": _with(
        9, b"/run/dbus/system_bus_socket", b"/" + "é".encode() * 53 + b"u"),
    "family 2 with af_unix": _with(7, b'"af_inet": {"port": "20480", "address": "16777343"}',
                                   b'"af_unix": {"address": "/x"}'),
    "family 0x2": _with(7, b'"family": "2"', b'"family": "0x2"'),
    "family 02 (octal)": _with(7, b'"family": "2"', b'"family": "02"'),
    "family 4294967298": _with(7, b'"family": "2"', b'"family": "4294967298"'),
    "header number 18 digits": _with(1, b'"tnum": "567"', b'"tnum": "' + b"9" * 18 + b'"'),
    "header number 19 digits": _with(1, b'"tnum": "567"', b'"tnum": "' + b"9" * 19 + b'"'),
    "header number out of range": _with(1, b'"ts": "123456789"', b'"ts": "' + b"9" * 20 + b'"'),
    "header hex 17 chars": _with(1, b'"ts": "123456789"', b'"ts": "0x' + b"f" * 15 + b'"'),
    "header hex out of range": _with(1, b'"ts": "123456789"', b'"ts": "0x' + b"f" * 16 + b'"'),
    "header number null": _with(1, b'"ts": "123456789"', b'"ts": null'),
    "pid out of range": _with(1, b'"pid": "1234"', b'"pid": "4294967296"'),
    "pid empty": _with(1, b'"pid": "1234"', b'"pid": ""'),
    "p_task_id odd": _with(1, b'"p_task_id": "00', b'"p_task_id": "0'),
    "task_id with a space": _with(1, b'"task_id": "9bfa', b'"task_id": "9b fa'),
    "task_id empty": _with(1, b'"task_id": "9bfaba4da8210d41b2bc5faf6c2c2fce348b9018035bf8d08a8'
                           b'aea721bc302dc"', b'"task_id": ""'),
    "s_id 32 bytes": _with(1, b'"s_id": "sda1"', b'"s_id": "' + b"s" * 32 + b'"'),
    "capeff -1": _with(1, b'"capeff": "0x1ffffffffff"', b'"capeff": "-1"'),
    "capeff over 64 bits": _with(1, b'"capeff": "0x1ffffffffff"', b'"capeff": "0x1' + b"0" * 16
                                 + b'"'),
    "aggregate with event": _e18(6).replace(b'"type": "event"', b'"type": "aggregate"', 1),
    "log export with event": _e18(6).replace(b'"type": "event"', b'"type": "log"', 1),
    "no export, aggregate and event": _e18(6).replace(b'{"export": {"type": "event"}, ',
                                                      b'{"aggregate": {"value": "00"}, ', 1),
    "unknown export": _e18(6).replace(b'"type": "event"', b'"type": "bogus"', 1),
    "export null": _e18(6).replace(b'{"type": "event"}', b"null", 1),
    "not an object": b"[" + _e18(1) + b"]",
    "empty": b"",
    "blank": b"   ",
}


@pytest.mark.parametrize("raw", list(EDGE_CASES.values()), ids=list(EDGE_CASES))
def test_edge_cases(raw: bytes) -> None:
    check_all(raw)


def test_edge_cases_that_must_stay_fast() -> None:
    """Lines the quick path is expected to answer itself (not dead on benign variants)."""
    for name in ("json white space", "pid empty", "unix address 108 bytes",
                 "unix address 108 bytes multibyte", "family 0x2", "header hex 17 chars",
                 "instance, slash only"):
        got, want = check(EDGE_CASES[name])
        assert want is not None and got is not None, name


@pytest.mark.parametrize("limit", [None, 1200, 1500])
def test_nesting_around_the_recursion_limit(limit: int | None) -> None:
    """Unread keys nested around every depth where a parser gives up: orjson at 1024
    levels, json and msgspec at the recursion limit (which hypothesis raises, and so
    may any program embedding semtrust). Both paths run in the same frame."""
    old = sys.getrecursionlimit()
    try:
        if limit is not None:
            sys.setrecursionlimit(limit)
        for depth in range(900, 1700):
            raw = _extra(1, b"[" * depth + b"]" * depth)
            try:
                check(raw)
            except AssertionError as exc:
                raise AssertionError(f"{depth} levels, recursion limit "
                                     f"{sys.getrecursionlimit()}: {exc}") from None
    finally:
        sys.setrecursionlimit(old)


def test_cache_keys_are_the_raw_text() -> None:
    """The same COE and inode objects first inside rejected lines, then valid ones, and
    the other way round, through one instance."""
    q = QuickCoefficients()
    for raw in (EDGE_CASES["dup uid"], _e18(2), EDGE_CASES["capeff -1"], _e18(1),
                EDGE_CASES["s_id 32 bytes"], _e18(1), EDGE_CASES["bad utf-8 in COE"], _e18(1),
                EDGE_CASES["escape: in uid"], _e18(2), EDGE_CASES["escape: n in uid"],
                _e18(2), _e18(3), _e18(17)):
        check(raw, q)


# ------------------------------------------------------------------------------- CLI

def _cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def _mixed_trajectory() -> list[bytes]:
    """Good lines, lines with backslash escapes, aggregate and log records, a blank line
    and a generic CELL too deep for the quick path."""
    agg = b'{"export": {"type": "aggregate"}, "aggregate": {"value": "' + b"cd" * 32 + b'"}}'
    gen = [s for s in seed_lines() if b"\\" in s]
    return [
        agg,
        *vector_lines("events18.json"),
        b'{"export": {"type": "log"}, "log": {"process": "cat", "event": "file_open", '
        b'"action": "DENY"}}',
        EDGE_CASES["escape: letter in pathname"],
        EDGE_CASES["escape: \\u0041 in pathname"],
        EDGE_CASES["escape: quote in pathname"],
        EDGE_CASES["escape: backslash in process"],
        EDGE_CASES["escape: in hex digest"],
        EDGE_CASES["escape: in uid"],
        *gen,
        b"",
        EDGE_CASES["deep generic cell 300"],
        agg.replace(b"cd", b"ef"),
        *vector_lines("test-trajectory.json")[:20],
        EDGE_CASES["dup event.type before"],
    ]


def _full_points(lines: list[bytes], pseudonyms: Set[bytes] = NO_PSEUDONYMS) -> list[str]:
    out = []
    for raw in lines:
        if not raw.strip():
            continue
        rec = parse_record_bytes(raw)
        if isinstance(rec, Event):
            out.append(event_coefficient(rec, pseudonyms).hex())
    return out


def test_cli_points_and_replay_match_the_full_path(tmp_path: Path) -> None:
    lines = _mixed_trajectory()
    assert any(b"\\" in ln for ln in lines)
    traj = tmp_path / "mixed.json"
    traj.write_bytes(b"\n".join(lines) + b"\n")

    code, out, err = _cli("points", str(traj))
    assert code == 0, err
    assert out.split() == _full_points(lines)

    model = tmp_path / "pseudonym.model"
    model.write_text(f"pseudonym {PASSWD.hex()}\nend\n")
    code, out, err = _cli("points", str(traj), "--model", str(model))
    assert code == 0, err
    want = _full_points(lines, {PASSWD})
    assert out.split() == want and want != _full_points(lines)

    code, out, err = _cli("replay", str(traj), "--json")
    assert code == 0, err
    quick = json.loads(out)
    code, out, err = _cli("replay", str(traj), "--json", "--output-model",
                          str(tmp_path / "out.model"))
    assert code == 0, err
    full = json.loads(out)
    keys = ("measurement", "state", "points", "events", "aggregate", "logs", "skipped")
    assert {k: quick[k] for k in keys} == {k: full[k] for k in keys}
    assert quick["events"] == len(_full_points(lines))
    assert quick["aggregate"] == "ef" * 32 and quick["logs"] == 1

    code, out, err = _cli("replay", str(traj), "--json", "--model", str(model), "--allow-empty")
    assert code == 0, err
    quick_p = json.loads(out)
    code, out, err = _cli("replay", str(traj), "--json", "--model", str(model), "--allow-empty",
                          "--output-model", str(tmp_path / "out2.model"))
    assert code == 0, err
    full_p = json.loads(out)
    assert {k: quick_p[k] for k in keys} == {k: full_p[k] for k in keys}
    assert quick_p["state"] != quick["state"]


def test_cli_bad_line(tmp_path: Path) -> None:
    lines = _mixed_trajectory()
    good = tmp_path / "good.json"
    good.write_bytes(b"\n".join(lines) + b"\n")
    bad_line = _with(2, b'"uid": "1000"', b'"uid": "4294967296"')
    assert QuickCoefficients().of_line(bad_line) is None
    at = 8
    bad_lines = [*lines[:at - 1], bad_line, *lines[at - 1:]]
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\n".join(bad_lines) + b"\n")

    code, out, err = _cli("replay", str(good), "--json")
    assert code == 0, err
    want = json.loads(out)
    for extra in ((), ("--output-model", str(tmp_path / "m"))):
        code, out, err = _cli("replay", str(bad), "--skip-invalid", "--json", *extra)
        assert code == 0, err
        got = json.loads(out)
        assert got["skipped"] == 1
        assert {k: got[k] for k in ("state", "measurement", "events", "points")} == {
            k: want[k] for k in ("state", "measurement", "events", "points")}
        assert f"{bad}:{at}:" in err and "COE.uid" in err

    for command in (("replay", "--json"), ("replay",), ("points",)):
        code, out, err = _cli(command[0], str(bad), *command[1:])
        assert code == 2, (command, out, err)
        assert f"{bad}:{at}:" in err and "COE.uid" in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_output_model_describes_first_occurrences(tmp_path: Path) -> None:
    """``replay --output-model`` takes coefficients from the quick path but describes
    each new point from its line's full parse: the comments must name the event that
    first produced each point, whichever path the line took."""
    lines = _mixed_trajectory()
    lines = [*lines, *lines]  # second half: all repeats, none may add a description
    traj = tmp_path / "mixed.json"
    traj.write_bytes(b"\n".join(lines) + b"\n")
    out_model = tmp_path / "out.model"
    code, _out, err = _cli("replay", str(traj), "--json", "--output-model", str(out_model))
    assert code == 0, err

    want: dict[str, str] = {}
    for raw in lines:
        if not raw.strip():
            continue
        rec = parse_record_bytes(raw)
        if isinstance(rec, Event):
            want.setdefault(event_coefficient(rec).hex(), describe(rec))
    text = out_model.read_text()
    got = {}
    for line in text.splitlines():
        if line.startswith("# event "):
            hexpart, _, desc = line[len("# event "):].partition(" ")
            got[hexpart] = desc
    assert got == want
    states = [ln.split()[1] for ln in text.splitlines() if ln.startswith("state ")]
    assert states == list(want)  # first-seen order, every point described
