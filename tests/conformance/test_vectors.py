"""Byte-for-byte conformance with the reference TMA's published outputs."""

from __future__ import annotations

import hashlib

import pytest

from semtrust.events.reader import read_records
from semtrust.events.record import Aggregate, Event, LegacyEvent
from semtrust.model import coefficient as co
from semtrust.model.modelfile import parse_model
from semtrust.model.tma import TMA
from tests import vectors

TRAJECTORIES = vectors.trajectories()


def _events(name: str) -> list[Event | LegacyEvent]:
    return [r for _, r in read_records(vectors.path(name)) if isinstance(r, Event | LegacyEvent)]


def test_vectors_are_present() -> None:
    assert "test-trajectory.json" in TRAJECTORIES
    assert "test-trajectory.txt" in TRAJECTORIES


@pytest.mark.parametrize("name", TRAJECTORIES)
def test_per_event_coefficients(name: str) -> None:
    got = [co.event_coefficient(ev).hex() for ev in _events(name)]
    assert got == vectors.expected_coefficients(name)


@pytest.mark.parametrize("name", TRAJECTORIES)
def test_measurement_and_state(name: str) -> None:
    tma = TMA()
    for _, rec in read_records(vectors.path(name)):
        if isinstance(rec, Aggregate):
            tma.set_aggregate(rec.value)
        else:
            assert isinstance(rec, Event | LegacyEvent)
            tma.update(rec)
    want = vectors.summary(name)
    assert tma.events == int(want["events"])
    assert len(tma.points()) == int(want["unique_points"])
    assert tma.measurement.hex() == want["measurement"]
    assert tma.state().hex() == want["state"]


# ------------------------------------------------------------------ events18 scenarios
E18 = vectors.scenario_file("events18.expected.txt")
HW = bytes.fromhex("de2b9c37eb1ceefa4bcbc6d8412920693d3272f30eb5ba98d51d2f898d620289")
BASE_C = bytes(range(1, 33))


def _e18() -> list[Event]:
    evs = _events("events18.json")
    assert all(isinstance(e, Event) for e in evs)
    return evs  # type: ignore[return-value]


def test_events18_scenario_a() -> None:
    tma = TMA()
    coeffs = [tma.update(ev).coefficient.hex() for ev in _e18()]
    assert coeffs == [E18[f"A.event{i}"][0] for i in range(1, 19)]
    assert tma.measurement.hex() == E18["A.measurement"][0]
    assert tma.state().hex() == E18["A.state"][0]


def test_events18_scenario_b_aggregate() -> None:
    tma = TMA()
    tma.set_aggregate(HW)
    for ev in _e18()[:3]:
        tma.update(ev)
    assert tma.measurement.hex() == E18["B.measurement"][0]
    assert tma.state().hex() == E18["B.state"][0]


def test_events18_scenario_c_base_from_model() -> None:
    model = parse_model(f"base {BASE_C.hex()}\naggregate {HW.hex()}\nend\n".encode())
    tma = TMA()
    tma.load_model(model)
    for ev in _e18()[:3]:
        tma.update(ev)
    assert tma.measurement.hex() == E18["C.measurement"][0]
    assert tma.state().hex() == E18["C.state"][0]


def test_events18_scenario_d_sealed_forensics() -> None:
    a = E18
    text = f"aggregate {HW.hex()}\nstate {a['A.event1'][0]}\nstate {a['A.event2'][0]}\nseal\nend\n"
    tma = TMA()
    tma.load_model(parse_model(text.encode()))
    verdicts = [tma.update(ev) for ev in _e18()[:3]]
    assert [v.coefficient.hex() for v in verdicts] == a["D.coeff"]
    flags = [f"added={int(v.added)} discipline={int(not v.trusted)} sealed=1" for v in verdicts]
    assert flags == a["D."]
    assert tma.measurement.hex() == a["D.measurement"][0]
    assert tma.state().hex() == a["D.state"][0]
    assert tma.forensic_points() == [verdicts[2].coefficient]
    assert tma.forensics == [_e18()[2]]


def test_events18_scenario_e_pseudonym() -> None:
    p = co.pseudonym("/etc/passwd")
    assert p.hex() == E18["pseudonym(/etc/passwd)"][0]
    tma = TMA()
    tma.load_model(parse_model(f"pseudonym {p.hex()}\nend\n".encode()))
    coeffs = [tma.update(ev).coefficient.hex() for ev in _e18()[:3]]
    assert coeffs == E18["E.coeff"]
    assert tma.measurement.hex() == E18["E.measurement"][0]
    assert tma.state().hex() == E18["E.state"][0]


def test_events18_constants() -> None:
    assert co.aggregate_extension(co.ZERO).hex() == E18["aggregate-extension(0^32"][0].split()[-1]
    want = E18["aggregate-extension(de2b9c..0289,"][0].split()[-1]
    assert co.aggregate_extension(HW).hex() == want


def test_events18_intermediate_digests() -> None:
    evs = _e18()
    for line in vectors.path("events18.expected.txt").read_text().splitlines():
        if " type=" not in line or not line.startswith("event"):
            continue
        label, _type, coe, cell = line.split()
        ev = evs[int(label.removeprefix("event")) - 1]
        assert co.coe_digest(ev.coe).hex() == coe.removeprefix("COE=")
        assert co.cell_digest(ev).hex() == cell.removeprefix("CELL=")


def test_events18_preimages() -> None:
    evs = _e18()
    lines = vectors.path("events18.expected.txt").read_text().splitlines()
    pre = {ln.split()[0] + ln.split()[1]: ln.split()[-1] for ln in lines if "preimage hex:" in ln}
    assert co.cell_preimage(evs[0]).hex() == pre["event1CELL"]
    assert co.cell_preimage(evs[2]).hex() == pre["event3CELL"]
    coe = evs[0].coe
    assert co.coe_digest(coe) == hashlib.sha256(bytes.fromhex(pre["event1COE"])).digest()


# ------------------------------------------------------------ spec worked examples
def test_legacy_worked_example_line1() -> None:
    ev = _events("test-trajectory.txt")[0]
    assert isinstance(ev, LegacyEvent)
    assert ev.coe_id.hex() == "03818299a28b2e9c684aa501d891f1978c4603861672851fa1d930787e5c2674"
    assert ev.cell_id.hex() == "70d63d06c2b6986a8de5d20b94a0612587185d049a2e70adbebf8fe9e8d3954c"
    tma = TMA()
    tma.update(ev)
    assert tma.measurement.hex() == (
        "3acb72af8a654229225e77c59163529fed17195a152e1834536b1408cab6c0f0"
    )


def test_legacy_pseudonym_changes_twelve_coefficients() -> None:
    evs = _events("test-trajectory.txt")
    p = bytes.fromhex("cfff61206166dd5f3ac880dc444ae6ad24165053bf7102d379a3170dcd4edb2a")
    plain = [co.event_coefficient(e) for e in evs]
    pseudo = [co.event_coefficient(e, frozenset({p})) for e in evs]
    assert sum(a != b for a, b in zip(plain, pseudo, strict=True)) == 12


def test_json_worked_example_record1() -> None:
    ev = _e18()[0]
    assert co.event_coefficient(ev).hex() == (
        "3a25046feb172fce0bee9f284af76177c3f5500fe658035b14ad9c10b365b8b6"
    )


def test_default_aggregate_constant() -> None:
    assert TMA().state().hex() == (
        "b62c0bf36d7fee9a6ed49f7529e9fbf6ebc93268f43832b4033eef0ba335ba65"
    )
