"""The verifier service as a real process on SQLite and PostgreSQL: enrollment,
model registry, pushes and appraisal, bad input, staleness, replicas, metrics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from semtrust.fleet.client import HostClient, VerifierError
from tests.fleet.material import POINTS, Material
from tests.fleet.services import SEMTRUST, VerifierProcess, verifier, wait_for

TOKEN = "operator-token-0123456789abcdef"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEMTRUST, *args], capture_output=True, text=True, timeout=120)


def setup_fleet(v: VerifierProcess, m: Material, tmp: Path, hosts: tuple[str, ...] = ("h1",)
                ) -> None:
    tf = tmp / "operator-token"
    tf.write_text(TOKEN)
    for h in hosts:
        r = cli("verifier", "enroll", "--verifier", v.url, "--token-file", str(tf),
                "--name", h, "--tma-key", str(m.host(h)))
        assert r.returncode == 0, r.stderr
    r = cli("verifier", "add-workload", "--verifier", v.url, "--token-file", str(tf),
            "--name", "web", "--signing-key", str(tmp / "model.pub"))
    assert r.returncode == 0, r.stderr
    r = cli("verifier", "upload", "--verifier", v.url, "--token-file", str(tf),
            "--workload", "web", str(tmp / "signed.model"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"workload": "web", "version": 1, "digest": m.model_digest}


def client(v: VerifierProcess, m: Material, host: str) -> HostClient:
    return HostClient(v.url, host, m.host_keys[host])


def domain(v: VerifierProcess, host: str, name: str) -> dict[str, Any]:
    r = httpx.get(f"{v.url}/api/v1/domains/{host}/{name}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def status_is(v: VerifierProcess, host: str, name: str, want: str) -> bool:
    r = httpx.get(f"{v.url}/api/v1/domains/{host}/{name}")
    return r.status_code == 200 and r.json()["status"] == want


def n_appraisals(v: VerifierProcess) -> int:
    return sum(len(domain(v, d["host"], d["name"])["history"])
               for d in httpx.get(f"{v.url}/api/v1/domains").json())


def test_push_appraise_history_metrics_and_pages(db_url: str, tmp_path: Path) -> None:
    m = Material(tmp_path)
    with verifier(db_url, tmp_path, token=TOKEN) as v:
        setup_fleet(v, m, tmp_path)
        c = client(v, m, "h1")
        n = c.nonce()
        c.push(n, [m.doc("h1", "web-1", n)])
        wait_for(lambda: status_is(v, "h1", "web-1", "trusted"), "web-1 trusted")
        d = domain(v, "h1", "web-1")
        assert d["model"] == "web v1" and d["forensics"] == 0 and d["reason"] == ""
        checks = {c["name"]: c["status"] for c in d["history"][0]["checks"]}
        assert checks["signature"] == checks["nonce"] == checks["state"] == "PASS"

        # The workload left its model: forensics and another state.
        n = c.nonce()
        c.push(n, [m.doc("h1", "web-1", n, forensics=2, points=[*POINTS, b"x" * 32])],
               {"web-1": {"from": 0, "events": ["event one", "event two"]}})
        wait_for(lambda: status_is(v, "h1", "web-1", "untrusted"), "web-1 untrusted")
        d = domain(v, "h1", "web-1")
        assert "FAIL forensics" in d["reason"] and "FAIL state" in d["reason"]
        assert [e["line"] for e in d["forensic_events"]] == ["event two", "event one"]
        assert [h["result"] for h in d["history"]] == ["untrusted", "trusted"]

        # A model the registry does not know is not trusted.
        other = Material(tmp_path / "other") if (tmp_path / "other").mkdir() is None else None
        assert other is not None
        other.host_keys["h1"] = m.host_keys["h1"]
        n = c.nonce()
        c.push(n, [other.doc("h1", "web-2", n)])
        wait_for(lambda: status_is(v, "h1", "web-2", "untrusted"), "web-2 untrusted")
        assert "not registered" in domain(v, "h1", "web-2")["reason"]

        metrics = httpx.get(v.url + "/metrics").text
        assert 'semtrust_appraisals_total{result="trusted"} 1.0' in metrics
        assert 'semtrust_appraisals_total{result="untrusted"} 2.0' in metrics
        assert 'semtrust_domains{status="untrusted"} 2.0' in metrics
        assert "semtrust_appraisal_queue_depth 0.0" in metrics
        assert "semtrust_appraisal_latency_seconds_count 3.0" in metrics
        api = httpx.get(v.url + "/openapi.json").json()
        assert "/api/v1/attestations" in api["paths"] and "/api/v1/hosts" in api["paths"]
        page = httpx.get(v.url + "/").text
        assert "web-1" in page and "status-untrusted" in page
        assert httpx.get(v.url + "/hosts/h1/domains/web-1").status_code == 200
        assert httpx.get(v.url + "/hosts/h1/domains/nope").status_code == 404


def test_bad_input_is_refused_and_nothing_stored(db_url: str, tmp_path: Path) -> None:
    m = Material(tmp_path)
    with verifier(db_url, tmp_path, token=TOKEN, extra=("--max-body", "65536")) as v:
        setup_fleet(v, m, tmp_path, hosts=("h1", "h2"))
        c1, c2 = client(v, m, "h1"), client(v, m, "h2")
        n = c1.nonce()
        good = m.doc("h1", "web-1", n)
        c1.push(n, [good])
        wait_for(lambda: status_is(v, "h1", "web-1", "trusted"), "web-1 trusted")
        before = n_appraisals(v)

        def refused(fn: Any, status: int, text: str) -> None:
            with pytest.raises(VerifierError) as e:
                fn()
            assert e.value.status == status, e.value
            assert text in str(e.value), e.value

        # Replay: the same document again (its nonce is used up), and under a new nonce.
        refused(lambda: c1.push(n, [good]), 409, "nonce")
        refused(lambda: c1.push(c1.nonce(), [good]), 409, "nonce")
        # Forged: signed by another key; tampered: altered after signing.
        n = c1.nonce()
        refused(lambda: c1.push(n, [m.doc("h2", "web-1", n)]), 403, "signature")
        refused(lambda: c1.push(n, [{**m.doc("h1", "web-1", n), "forensics": 0,
                                     "state": "00" * 32}]), 403, "signature")
        # For another host: h1's nonce and document pushed by h2, and h2 speaking as h1.
        refused(lambda: c2.push(n, [m.doc("h1", "web-1", n)]), 403, "signature")
        n2 = c2.nonce()
        refused(lambda: c2.push(n, [m.doc("h2", "web-1", n)]), 409, "not issued to this host")
        impostor = HostClient(v.url, "h1", m.host_keys["h2"])
        refused(lambda: impostor.push(n2, [m.doc("h2", "web-1", n2)]), 401, "signature")
        # Malformed documents and bodies.
        refused(lambda: c1.push(n, [{"format": "x"}]), 400, "format")
        refused(lambda: c1.push(n, []), 400, "empty")
        refused(lambda: c1.call("POST", "/api/v1/attestations", {"nonce": n}), 422,
                "attestations")
        refused(lambda: c1.call("POST", "/api/v1/attestations", [1, 2]), 422, "dictionary")
        bad_name = m.doc("h1", "../etc", n)
        refused(lambda: c1.push(n, [bad_name]), 400, "domain")
        raw = httpx.post(v.url + "/api/v1/attestations", content=b"{not json",
                         headers=c1_headers(c1, b"{not json"))
        assert raw.status_code == 400 and raw.json()["error"] == "body is not JSON"
        # A decoy copy of a key before the real one (the last would win in a lax reader).
        doc = json.dumps(m.doc("h1", "web-1", n))
        dup = ('{"nonce": "' + "0" * 64 + '", "nonce": "' + n + '", "attestations": ['
               + doc + "]}").encode()
        r = httpx.post(v.url + "/api/v1/attestations", content=dup, headers=c1_headers(c1, dup))
        assert r.status_code == 400 and "duplicate key" in r.json()["error"], r.text
        deep = b'{"nonce": "' + n.encode() + b'", "attestations": [' + b"[" * 50 + b"]" * 50 \
            + b"]}"
        r = httpx.post(v.url + "/api/v1/attestations", content=deep,
                       headers=c1_headers(c1, deep))
        assert r.status_code == 400 and "nested" in r.json()["error"], r.text
        big = b'{"nonce": "' + b"0" * 70000 + b'"}'
        r = httpx.post(v.url + "/api/v1/attestations", content=big,
                       headers=c1_headers(c1, big))
        assert r.status_code == 413 and "larger than" in r.json()["error"]
        # Unauthenticated requests.
        r = httpx.post(v.url + "/api/v1/nonce")
        assert r.status_code == 401 and "unsigned" in r.json()["error"]
        r = httpx.post(v.url + "/api/v1/hosts", json={"name": "h9", "tma_key": "x"})
        assert r.status_code == 401 and "operator token" in r.json()["error"]
        r = httpx.post(v.url + "/api/v1/hosts", json={"name": "h9"},
                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 422 and r.json()["error"].startswith("tma_key")
        r = httpx.post(v.url + "/api/v1/hosts", json={"name": "h9", "tma_key": "x"},
                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 400 and "PEM" in r.json()["error"]
        # Models: unsigned, or signed by a key other than the pinned one.
        unsigned = "state " + "ab" * 32 + "\nseal\nend\n"
        for text in (unsigned, Material(mk(tmp_path / "o2")).model_text):
            r = httpx.post(v.url + "/api/v1/workloads/web/models", json={"model": text},
                           headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 400 and "sign" in r.json()["error"], r.text

        assert n_appraisals(v) == before
        assert httpx.get(v.url + "/healthz").status_code == 200
        n = c1.nonce()
        c1.push(n, [m.doc("h1", "web-1", n)])
        wait_for(lambda: n_appraisals(v) == before + 1, "the next good push")


def mk(p: Path) -> Path:
    p.mkdir()
    return p


def c1_headers(c: HostClient, body: bytes) -> dict[str, str]:
    from semtrust.fleet.auth import sign_request

    return {"Content-Type": "application/json",
            **sign_request(c.key, "POST", "/api/v1/attestations", c.host, body)}


def test_stale_after_the_deadline_and_replicas(db_url: str, tmp_path: Path) -> None:
    m = Material(tmp_path)
    with verifier(db_url, tmp_path, token=TOKEN, stale_after=2.0) as v:
        setup_fleet(v, m, tmp_path, hosts=("h1", "h2", "h3"))
        # Three learning replicas of "batch": one reports another state.
        for h in ("h1", "h2", "h3"):
            c = client(v, m, h)
            n = c.nonce()
            pts = POINTS if h != "h3" else POINTS[:1]
            c.push(n, [m.doc(h, "batch", n, sealed=False, points=pts)])
        for h in ("h1", "h2", "h3"):
            wait_for(lambda h=h: status_is(v, h, "batch", "trusted"), f"{h}/batch appraised")
        groups = wait_for(lambda: [g for g in httpx.get(v.url + "/api/v1/replicas").json()
                                   if g["odd"]], "a replica flagged")
        assert groups[0]["odd"] == ["h3/batch"]
        checks = {c["name"]: c for c in domain(v, "h1", "batch")["history"][0]["checks"]}
        assert checks["state"]["status"] == "SKIP" and "replicas" in checks["state"]["reason"]
        # Nobody pushes any more: stale after the deadline.
        for h in ("h1", "h2", "h3"):
            wait_for(lambda h=h: status_is(v, h, "batch", "stale"), f"{h}/batch stale")
        assert "no fresh attestation" in domain(v, "h1", "batch")["reason"]


def test_serve_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    for args, text in ((("--db", "nosuch://x"), "unsupported database"),
                       (("--db", "::"), "not a database URL"),
                       (("--listen", "nowhere"), "HOST:PORT"),
                       (("--mqtt", "http://x/t"), "mqtt://"),
                       (("--token-file", str(tmp_path / "missing")), "cannot read token")):
        r = cli("verifier", "serve", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert text in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("agent", "--verifier", "ftp://x", "--host", "h", "--key", str(tmp_path / "k"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
