"""JSON export records: shapes, reference quirks, formatting."""

from __future__ import annotations

import json

import pytest

from semtrust.errors import InputError
from semtrust.events.jsonexport import format_event, parse_record
from semtrust.events.record import Aggregate, Event, FileCell, GenericCell, LogRecord
from semtrust.model.coefficient import event_coefficient
from tests import vectors

LINES = vectors.path("events18.json").read_text().splitlines()


def _rec(i: int) -> dict:  # type: ignore[type-arg]
    return json.loads(LINES[i])  # type: ignore[no-any-return]


def test_wrapper_is_optional() -> None:
    d = _rec(0)
    del d["export"]
    a, b = parse_record(LINES[0]), parse_record(json.dumps(d))
    assert isinstance(a, Event) and isinstance(b, Event)
    assert event_coefficient(a) == event_coefficient(b)


def test_aggregate_and_log_records() -> None:
    agg = parse_record(
        '{"export": {"type": "aggregate"}, "aggregate": {"value": "' + "ab" * 32 + '"}}'
    )
    assert agg == Aggregate(bytes([0xAB]) * 32)
    log = parse_record('{"export": {"type": "log"}, "log": {"process": "cat", "event": '
                       '"file_open", "action": "DENY"}}')
    assert log == LogRecord("cat", "file_open", "DENY")


def test_async_event_models_like_event() -> None:
    ev = parse_record(LINES[0].replace('"type": "event"', '"type": "async_event"', 1))
    assert isinstance(ev, Event) and ev.export == "async_event"
    assert event_coefficient(ev) == event_coefficient(parse_record(LINES[0]))  # type: ignore[arg-type]


def test_backslash_rule_is_c_not_json() -> None:
    # \n is "n" for the reference, not a newline; \" and \\ are the same under both rules.
    line = LINES[0].replace('"/etc/passwd"', '"/etc/pa\\ss\\"w\\\\d\\n"')
    ev = parse_record(line)
    assert isinstance(ev, Event) and isinstance(ev.cell, FileCell)
    assert ev.cell.file.path.pathname == '/etc/pass"w\\dn'


def test_generic_cell_content_is_not_hashed() -> None:
    d = _rec(14)
    d["inode_getattr"]["path"]["pathname"] = "/somewhere/else"
    a, b = parse_record(LINES[14]), parse_record(json.dumps(d))
    assert isinstance(a, Event) and isinstance(a.cell, GenericCell)
    assert event_coefficient(a) == event_coefficient(b)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["event"].__setitem__("type", "file_opened"), "event.type"),
        (lambda d: d["COE"].pop("euid"), "COE.euid"),
        (lambda d: d["COE"].__setitem__("uid", "4294967296"), "COE.uid"),
        (lambda d: d["COE"].__setitem__("uid", 0), "COE.uid"),
        (lambda d: d["event"].__setitem__("task_id", "xyz"), "event.task_id"),
        (lambda d: d["file_open"]["file"]["inode"].__setitem__("mode", "0200000"),
         "file_open.file.inode.mode"),
        (lambda d: d["file_open"]["file"]["inode"].__setitem__("s_id", "x" * 32),
         "file_open.file.inode.s_id"),
        (lambda d: d["file_open"]["file"].__setitem__("digest", "00" * 31),
         "file_open.file.digest"),
        (lambda d: d["file_open"]["file"].pop("path"), "file_open.file.path"),
    ],
)
def test_bad_fields_are_named(mutate, field) -> None:  # type: ignore[no-untyped-def]
    d = _rec(0)
    mutate(d)
    with pytest.raises(InputError) as err:
        parse_record(json.dumps(d), source="t.json", line=7)
    assert err.value.field == field
    assert str(err.value).startswith("t.json:7: ")


def test_not_json_is_an_input_error() -> None:
    with pytest.raises(InputError, match="not a JSON record"):
        parse_record('{"export": ', source="x", line=1)
    with pytest.raises(InputError, match="JSON object"):
        parse_record("[1, 2]")


@pytest.mark.parametrize("i", range(len(LINES)))
def test_format_round_trip_vectors(i: int) -> None:
    ev = parse_record(LINES[i])
    assert isinstance(ev, Event)
    again = parse_record(format_event(ev))
    assert again == ev
    assert json.loads(format_event(ev))  # well-formed JSON


def test_pseudonym_record_round_trip_and_bad_value() -> None:
    from semtrust.events.jsonexport import format_pseudonym
    from semtrust.events.record import PseudonymRecord

    p = bytes(range(32))
    assert parse_record(format_pseudonym(p)) == PseudonymRecord(p)
    with pytest.raises(InputError, match=r"pseudonym\.value"):
        parse_record('{"export": {"type": "pseudonym"}, "pseudonym": {"value": "00"}}')


def test_pseudonym_record_applies_to_later_events(tmp_path: object) -> None:
    """A stream that declares a pseudonym gives the coefficients a model with it gives
    (points and replay, quick path and full parser alike)."""
    import subprocess
    import sys
    from pathlib import Path

    from semtrust.events.jsonexport import format_pseudonym
    from semtrust.model.coefficient import pseudonym

    assert isinstance(tmp_path, Path)
    p = pseudonym("/etc/passwd")
    plain = tmp_path / "plain.json"
    plain.write_text("\n".join(LINES) + "\n")
    declared = tmp_path / "declared.json"
    declared.write_text(format_pseudonym(p) + "\n" + "\n".join(LINES) + "\n")
    model = tmp_path / "m"
    model.write_text(f"pseudonym {p.hex()}\nend\n")
    cli = [str(Path(sys.executable).parent / "semtrust")]

    def out(*args: str) -> str:
        r = subprocess.run([*cli, *args], capture_output=True, text=True, check=True)
        return r.stdout

    with_model = out("points", str(plain), "--model", str(model))
    assert out("points", str(declared)) == with_model
    assert with_model != out("points", str(plain))
    replayed = out("replay", "--json", str(declared))
    assert replayed == out("replay", "--json", str(plain), "--model", str(model), "--allow-empty")
