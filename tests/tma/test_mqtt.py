"""Export over MQTT through a real Mosquitto broker, and the TMA's importer.

A trajectory exported with ``semtrust export`` (the conformance vectors and a
100k-event one) or live with ``semtrust run --export`` gives the TMA the same
points, measurement, state and model as in-process modeling; messages lost on
purpose (the broker restarted without persistence) are detected and reported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from semtrust.events.jsonexport import format_event
from semtrust.events.reader import read_records
from semtrust.events.record import Event
from semtrust.tma.domains import ServedDomain
from semtrust.tma.mqtt import Importer, Publisher, parse_mqtt_url
from tests.tma.broker import Mosquitto
from tests.tma.procs import SEMTRUST, ServeProcess, tma

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path)
    yield b
    b.stop()


@pytest.fixture
def importer_tma(broker: Mosquitto, short_dir: Path) -> Iterator[tuple[ServeProcess, str]]:
    topic = f"tsem/{os.getpid()}"
    with ServeProcess("--listen", f"unix:{short_dir}/tma.sock", "--from", broker.url(topic),
                      env=broker.env) as s:
        yield s, topic


def summary(serve: ServeProcess, domain: str) -> dict[str, object] | None:
    r = tma("show", serve.unix, domain, "summary", "--json")
    return json.loads(r.stdout) if r.returncode == 0 else None


def wait_ended(serve: ServeProcess, domain: str) -> dict[str, object]:
    for _ in range(1200):
        s = summary(serve, domain)
        if s is not None and s["ended"]:
            return s
        time.sleep(0.1)
    raise AssertionError(f"stream {domain} never ended: {summary(serve, domain)}")


def replay(path: Path, out: Path) -> dict[str, object]:
    r = subprocess.run([SEMTRUST, "replay", str(path), "--json", "--output-model", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def export(broker: Mosquitto, topic: str, path: Path, domain: str) -> None:
    r = subprocess.run([SEMTRUST, "export", str(path), "--to", broker.url(topic), "--domain",
                        domain], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **broker.env})
    assert r.returncode == 0, r.stderr


def big_trajectory(path: Path, n: int) -> None:
    """``n`` events: the vectors' events with varied path names (some repeated)."""
    base = [rec for _n, rec in read_records(VECTORS / "test-trajectory.json")
            if isinstance(rec, Event)]
    with path.open("w") as fp:
        for i in range(n):
            ev = base[i % len(base)]
            line = format_event(ev._replace(number=i, ts=i))
            line = line.replace('"pathname": "', f'"pathname": "/v{i % 20000}', 1)
            fp.write(line + "\n")


@pytest.mark.parametrize("vector", ["test-trajectory.json", "events18.json", "big"])
def test_exported_trajectory_gives_the_same_model(broker: Mosquitto,
                                                  importer_tma: tuple[ServeProcess, str],
                                                  vector: str, tmp_path: Path) -> None:
    serve, topic = importer_tma
    path = VECTORS / vector
    if vector == "big":
        path = tmp_path / "big.json"
        big_trajectory(path, 100_000)
    local = replay(path, tmp_path / "local.model")
    export(broker, topic, path, f"x-{vector}")
    s = wait_ended(serve, f"x-{vector}")
    assert s["events"] == local["events"]
    assert s["points"] == local["points"]
    assert s["measurement"] == local["measurement"]
    assert s["state"] == local["state"]
    assert s["trust_events"] == 0 and s["unattestable"] is False
    model = tma("show", serve.unix, f"x-{vector}", "model")
    assert model.stdout == (tmp_path / "local.model").read_text()


def test_live_workload_exported(broker: Mosquitto, importer_tma: tuple[ServeProcess, str],
                                tmp_path: Path) -> None:
    serve, topic = importer_tma
    name = f"live-{os.getpid()}"
    out = tmp_path / "local.model"
    r = subprocess.run([SEMTRUST, "run", "--name", name, "--export", broker.url(topic),
                        "--output", str(out), "--", "sh", "-c", "cat /etc/hostname; ls /"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, **broker.env})
    assert r.returncode == 0, r.stderr
    s = wait_ended(serve, name)
    assert s["trust_events"] == 0
    model = tma("show", serve.unix, name, "model")
    assert model.stdout == out.read_text()


def test_lost_messages_are_a_reported_gap(broker: Mosquitto,
                                          importer_tma: tuple[ServeProcess, str]) -> None:
    serve, topic = importer_tma
    os.environ.update(broker.env)
    lines = [format_event(e) for _n, e in read_records(VECTORS / "test-trajectory.json")
             if isinstance(e, Event)]
    pub = Publisher(parse_mqtt_url(broker.url(topic), "--to"), "gappy")
    for line in lines[:20]:
        pub.publish([line])
    for _ in range(600):
        s = summary(serve, "gappy")
        if s is not None and s["events"] == 20:
            break
        time.sleep(0.05)
    # The TMA stops reading; the broker takes 2000 more messages it can only queue, then
    # restarts without persistence: they are gone.
    serve.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(2000):
            pub.publish([lines[i % len(lines)]])
        pub._last.wait_for_publish(60)
        broker.restart()
    finally:
        serve.proc.send_signal(signal.SIGCONT)
    # Wait until the TMA is subscribed again (a probe stream shows up), then finish.
    probe = Publisher(parse_mqtt_url(broker.url(topic), "--to"), "probe")
    for _ in range(600):
        probe.publish([lines[0]])
        if summary(serve, "probe") is not None:
            break
        time.sleep(0.1)
    probe.close()
    for line in lines[20:30]:
        pub.publish([line])
    assert pub.close()
    s = wait_ended(serve, "gappy")
    assert s["unattestable"] is True
    events = json.loads(tma("show", serve.unix, "gappy", "trust_events", "--json").stdout)
    assert events[0]["kind"] == "gap" and events[0]["got"] > events[0]["expected"]
    assert "trust event gap" in serve.stderr()


def test_importer_drops_duplicates_and_reports_gaps() -> None:
    doms: dict[str, ServedDomain] = {}
    imp = Importer(parse_mqtt_url("mqtt://h/t", "--from"),
                   lambda n: doms.setdefault(n, ServedDomain(n, "test")), log=lambda m: None)
    ev = next(e for _n, e in read_records(VECTORS / "events18.json") if isinstance(e, Event))

    def line(seq: int, **kw: object) -> bytes:
        return orjson.dumps({"domain": "d", "seq": seq, **kw})

    imp.ingest_line(line(1, record=format_event(ev)))
    imp.ingest_line(line(1, record=format_event(ev)))  # QoS 1 redelivery
    d = doms["d"]
    assert d.tma.events == 1 and d.duplicates == 1 and not d.unattestable
    imp.ingest_line(line(4, record=format_event(ev)))
    assert d.unattestable and d.trust_events[0]["expected"] == 2
    assert d.tma.events == 2
    for bad in (b"{", b"[]", line(0, record="x"), line(5), line(5, record=7)):
        imp.ingest_line(bad)
    assert imp.bad == 5
    imp.ingest_line(line(5, record="{not a record"))
    assert d.trust_event_count == 2  # a record that cannot be parsed is a trust event
    imp.ingest_line(line(6, end=True))
    assert d.ended
