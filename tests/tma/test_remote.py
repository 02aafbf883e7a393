"""RemoteTMA against a real TMA server over a Unix socket and over mutual TLS.

The same trajectory modeled in-process and through the wire must give
byte-identical points, measurement, state and model files.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from semtrust.events.jsonexport import format_event
from semtrust.events.reader import read_records
from semtrust.events.record import Aggregate, Event
from semtrust.model.modelfile import parse_model, render_model
from semtrust.model.tma import TMA, Mode
from semtrust.tma.client import Connection, RemoteTMA, TMALost
from semtrust.tma.protocol import Address, RemoteError, encode, read_frame
from semtrust.tma.server import TMAServer
from tests.tma.certs import Pki

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
SEMTRUST = str(Path(sys.executable).parent / "semtrust")
Server = tuple[TMAServer, Address, Address]


def records(name: str) -> list[Event | Aggregate]:
    out: list[Event | Aggregate] = []
    for _n, rec in read_records(VECTORS / name):
        assert isinstance(rec, Event | Aggregate)
        out.append(rec)
    return out


def feed(tma: TMA | RemoteTMA, recs: list[Event | Aggregate]) -> list[bool]:
    verdicts = []
    for rec in recs:
        if isinstance(rec, Aggregate):
            tma.set_aggregate(rec.value)
        else:
            verdicts.append(tma.update(rec).trusted)
    return verdicts


def remote(server: Server, kind: str, name: str, pki: Pki) -> RemoteTMA:
    _srv, unix, tcp = server
    if kind == "unix":
        return RemoteTMA(unix, name)
    if kind == "json":  # the JSON export verb instead of compact frames
        r = RemoteTMA(unix, name)
        r._conn.compact = False
        return r
    return RemoteTMA(tcp, name, tls=pki.client)


@pytest.mark.parametrize("kind", ["unix", "tls", "json"])
@pytest.mark.parametrize("vector", ["test-trajectory.json", "events18.json"])
def test_same_answers_as_in_process(server: Server, pki: Pki, kind: str, vector: str,
                                    tmp_path: Path) -> None:
    recs = records(vector)
    local = TMA()
    feed(local, recs)
    r = remote(server, kind, f"v-{kind}-{vector}", pki)
    feed(r, recs)
    r.sync()
    assert r.points() == local.points()
    assert r.counts() == local.counts()
    assert r.measurement == local.measurement
    assert r.state() == local.state()
    assert render_model(r) == render_model(local)
    # and the reference replay writes the same model file, byte for byte
    out = tmp_path / "replay.model"
    p = subprocess.run([SEMTRUST, "replay", str(VECTORS / vector), "--output-model", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert out.read_text() == render_model(r)
    if vector == "test-trajectory.json":
        summary = dict(line.split() for line in
                       (VECTORS / f"{vector}.summary").read_text().splitlines())
        assert r.state().hex() == summary["state"]
        assert r.measurement.hex() == summary["measurement"]


@pytest.mark.parametrize("kind", ["unix", "tls", "json"])
def test_sealed_and_enforcing_verdicts_match(server: Server, pki: Pki, kind: str) -> None:
    recs = records("events18.json")
    learn, rest = recs[:10], recs[10:]
    local = TMA()
    feed(local, learn)
    model = parse_model(render_model(local).encode())
    enf = TMA()
    enf.load_model(model)
    enf.enforce()
    r = remote(server, kind, f"enf-{kind}", pki)
    r.model_bytes[model.digest] = render_model(local).encode()
    r.load_model(model)
    r.enforce()
    assert r.mode is Mode.ENFORCING
    local_v = [v for v in feed(enf, rest)]
    remote_v = feed(r, rest)
    assert remote_v == local_v
    assert False in remote_v, "the vectors outside the model must be disciplined"
    assert r.forensics_count == enf.forensics_count
    assert [format_event(e) for e in r.forensics if isinstance(e, Event)] == \
        [format_event(e) for e in enf.forensics if isinstance(e, Event)]
    assert r.state() == enf.state()
    # the second domain names the model by its digest: the TMA already holds it
    r2 = remote(server, kind, f"enf2-{kind}", pki)
    r2.load_model(model)
    assert r2.point_count == len(model.points)


def test_sequence_gap_and_duplicate_are_trust_events(server: Server) -> None:
    _srv, unix, _tcp = server
    ev = records("events18.json")[0]
    assert isinstance(ev, Event)
    c = Connection(unix, None)
    token = c.call({"op": "open", "domain": "seq"})["token"]
    line = format_event(ev)
    c.call({"op": "export", "domain": "seq", "seq": 1, "record": line, "token": token})
    with pytest.raises(RemoteError, match="sequence duplicate: expected 2, got 1"):
        c.call({"op": "export", "domain": "seq", "seq": 1, "record": line, "token": token})
    with pytest.raises(RemoteError, match="sequence gap: expected 2, got 5"):
        c.call({"op": "export", "domain": "seq", "seq": 5, "record": line, "token": token})
    summary = c.call({"op": "show", "domain": "seq", "what": "summary"})["result"]
    assert summary["events"] == 1, "refused records are never modeled"
    assert summary["unattestable"] is True
    kinds = [t["kind"] for t in
             c.call({"op": "show", "domain": "seq", "what": "trust_events"})["result"]]
    assert kinds == ["duplicate", "gap"]
    with pytest.raises(RemoteError, match="unattestable"):
        c.call({"op": "attest", "domain": "seq", "nonce": "00ff"})
    c.close()


def _nested(depth: int) -> list[object]:
    v: list[object] = [1]
    for _ in range(depth):
        v = [v]
    return v


def _raw(addr: Address) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(addr.path)
    return s


def test_bad_frames_close_only_their_connection(server: Server) -> None:
    _srv, unix, _tcp = server
    good = RemoteTMA(unix, "survivor")
    recs = records("events18.json")
    feed(good, recs[:3])
    for bad in (struct.pack(">I", 1 << 30),                        # too large
                struct.pack(">I", 5) + b"{nope",                   # not JSON
                encode({"v": 99, "op": "hello"}),                  # other version
                encode({"v": 1, "op": "format-disk"}),             # unknown verb
                encode({"v": 1, "op": "hello", "x": _nested(40)})):  # too deep
        s = _raw(unix)
        s.sendall(bad)
        fp = s.makefile("rb")
        reply = read_frame(fp)
        assert reply is not None and reply["ok"] is False and reply["fatal"] is True
        assert read_frame(fp) is None, "the connection must be closed"
        s.close()
    feed(good, recs[3:6])
    good.sync()
    assert good.events == sum(isinstance(e, Event) for e in recs[:6])


def test_unix_peer_uid_is_checked(short_dir: Path) -> None:
    srv = TMAServer(allow_uids={os.getuid() + 4242})
    try:
        addr = srv.listen(Address("unix", path=str(short_dir / "t.sock")))
        with pytest.raises(Exception, match=f"uid {os.getuid()} .* not allowed"):
            RemoteTMA(addr, "nope")
        assert not srv.domains
    finally:
        srv.close()


def test_tls_needs_a_client_certificate_from_the_ca(server: Server, pki: Pki) -> None:
    srv, _unix, tcp = server
    with pytest.raises(Exception, match=r"cannot connect"):
        RemoteTMA(tcp, "rogue", tls=pki.rogue)
    assert "rogue" not in srv.domains
    ok = RemoteTMA(tcp, "proper", tls=pki.client)
    assert ok.mode is Mode.FREE


def test_domains_belong_to_their_peer(server: Server, pki: Pki) -> None:
    _srv, unix, tcp = server
    RemoteTMA(unix, "mine")
    with pytest.raises(Exception, match="belongs to another peer"):
        RemoteTMA(tcp, "mine", tls=pki.client, resume=True)


def test_reconnect_never_models_an_event_twice(server: Server) -> None:
    srv, unix, _tcp = server
    recs = [r for r in records("test-trajectory.json") if isinstance(r, Event)]
    local = TMA()
    feed(local, recs)
    r = RemoteTMA(unix, "flaky")
    for i, ev in enumerate(recs):
        r.update(ev)
        if i in (10, 40):
            r.sync() if i == 40 else None
            srv.drop_connections()  # the TMA lives on; only the connection is lost
    r.sync()
    assert r.lost is None
    assert r.events == len(recs)
    assert r.state() == local.state() and r.measurement == local.measurement
    # enforcing: a verdict lost with its connection comes back from the TMA
    r.seal()
    srv.drop_connections()
    assert r.update(recs[0]).trusted
    assert r.events == len(recs) + 1


def test_lost_tma_fails_closed_and_stops_the_workload(short_dir: Path) -> None:
    srv = TMAServer()
    addr = srv.listen(Address("unix", path=str(short_dir / "l.sock")))
    recs = [r for r in records("events18.json") if isinstance(r, Event)]
    r = RemoteTMA(addr, "doomed", grace=0.05)
    stopped: list[bool] = []
    r.on_lost.append(lambda: stopped.append(True))
    r.enforce()
    assert r.update(recs[0]).mode is Mode.ENFORCING
    srv.close()
    with pytest.raises(TMALost):
        r.update(recs[1])
    with pytest.raises(TMALost):  # every later call, without trying again
        r.update(recs[2])
    with pytest.raises(OSError):  # nothing can be written as if complete
        render_model(r)  # type: ignore[arg-type]
    import time
    for _ in range(200):
        if stopped:
            break
        time.sleep(0.01)
    assert stopped == [True]


def test_attestation_of_a_remote_tma_verifies(server: Server, tma_key: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    _srv, unix, _tcp = server
    recs = records("events18.json")
    local = TMA()
    feed(local, recs[:10])
    model = tmp_path / "m.model"
    model.write_text(render_model(local))
    r = RemoteTMA(unix, "attested")
    r.load_model(parse_model(model.read_bytes(), source=str(model)))
    r.enforce()
    feed(r, [e for e in recs[:10] if isinstance(e, Event)])
    att = tmp_path / "att.json"
    p = subprocess.run([SEMTRUST, "tma", "attest", str(unix), "attested", "--nonce", "a1b2",
                        "-o", str(att)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    v = subprocess.run([SEMTRUST, "verify", str(att), "--key", str(tma_key[1]), "--model",
                        str(model), "--nonce", "a1b2"], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    # a state that drifted from the model does not verify
    feed(r, [e for e in recs[10:] if isinstance(e, Event)])
    subprocess.run([SEMTRUST, "tma", "attest", str(unix), "attested", "--nonce", "a1b2",
                    "-o", str(att)], check=True, capture_output=True)
    v = subprocess.run([SEMTRUST, "verify", str(att), "--key", str(tma_key[1]), "--model",
                        str(model), "--nonce", "a1b2"], capture_output=True, text=True)
    assert v.returncode == 1


def test_remote_tma_has_the_in_process_interface() -> None:
    public = {n for n in dir(TMA()) if not n.startswith("_")}
    missing = {n for n in public if not hasattr(RemoteTMA, n)}
    # observe: replay's private fast path; load_point: model loading goes through load
    assert missing <= {"observe", "load_point"}, missing


def test_another_process_of_the_same_uid_cannot_feed_a_domain(server: Server) -> None:
    """A root workload on the orchestrator's host has the orchestrator's uid; without the
    session's token it can neither feed, nor seal, nor take over the domain."""
    _srv, unix, _tcp = server
    r = RemoteTMA(unix, "guarded")
    ev = next(e for e in records("events18.json") if isinstance(e, Event))
    r.update(ev)
    intruder = Connection(unix, None)
    for req in ({"op": "export", "domain": "guarded", "seq": 2, "record": format_event(ev)},
                {"op": "seal", "domain": "guarded"},
                {"op": "open", "domain": "guarded", "resume": True},
                {"op": "open", "domain": "guarded", "resume": True, "token": "0" * 32}):
        with pytest.raises(RemoteError, match="another peer or session"):
            intruder.call(dict(req))
    assert intruder.call({"op": "show", "domain": "guarded", "what": "summary"}
                         )["result"]["events"] == 1
    r.update(ev)
    r.sync()
    assert r.events == 2 and r.mode is Mode.FREE
