"""The database goes away: the verifier answers 503 with a JSON error and keeps
running; the agent backs off, retries, and delivers the domain's newest state
once the database is back."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from semtrust.attest.attestation import load_private_key
from semtrust.fleet.client import HostClient, VerifierUnavailable
from tests.fleet.services import Host, Postgres, verifier, wait_for
from tests.fleet.test_verifier_api import TOKEN

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.close()


def test_database_outage(own_postgres: Postgres, host: Host, tmp_path: Path) -> None:
    h = host
    h.cli("model", "keygen", str(tmp_path / "tma.key"), "--type", "ed25519")
    with verifier(own_postgres.url(), tmp_path, token=TOKEN, stale_after=600) as v:
        tf = tmp_path / "token"
        tf.write_text(TOKEN)
        h.cli("verifier", "enroll", "--verifier", v.url, "--token-file", str(tf),
              "--name", "node-1", "--tma-key", str(tmp_path / "tma.key.pub"))
        h.domain("learner", "--tma-key", str(tmp_path / "tma.key"))
        log = tmp_path / "agent.log"
        agent = h.start("agent", "--verifier", v.url, "--host", "node-1", "--key",
                        str(tmp_path / "tma.key"), "--interval", "1", "-v", log=log)
        api = f"{v.url}/api/v1/domains/node-1/learner"
        wait_for(lambda: httpx.get(api).status_code == 200 and
                 httpx.get(api).json()["status"] == "trusted", "learner trusted")

        own_postgres.stop()
        r = httpx.get(v.url + "/api/v1/domains")
        assert r.status_code == 503 and "database unavailable" in r.json()["error"]
        assert httpx.get(v.url + "/healthz").status_code == 503
        c = HostClient(v.url, "node-1", load_private_key(tmp_path / "tma.key"))
        with pytest.raises(VerifierUnavailable, match="503"):
            c.nonce()
        # The learning workload moves on while the verifier cannot store anything.
        before = _current_state(h)
        (h.ctl / "deviate").touch()
        wait_for(lambda: _current_state(h) != before, "the domain to learn new points")
        wait_for(lambda: "503" in log.read_text() and "retrying in" in log.read_text(),
                 "the agent to back off")
        own_postgres.start()
        wait_for(lambda: httpx.get(api).status_code == 200 and
                 httpx.get(api).json()["state"] == _current_state(h), "the newest state",
                 timeout=120)
        agent.terminate()
        agent.communicate(timeout=30)


def _current_state(h: Host) -> str:
    return h.cli("console", "learner", "show", "state").strip()
