"""Fleet pieces without services: replica grouping, request signatures, URLs."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from semtrust.errors import InputError
from semtrust.fleet.alerts import parse_mqtt_url
from semtrust.fleet.appraise import group_key, replica_flags
from semtrust.fleet.auth import CLOCK_WINDOW, operator_ok, sign_request, verify_request


def test_replica_majority_and_odd_ones_out() -> None:
    assert replica_flags({1: "a"}) == {1: "alone"}
    assert replica_flags({1: "a", 2: "a", 3: "b"}) == {1: "ok", 2: "ok", 3: "odd"}
    # No strict majority: nobody can be vouched for.
    assert replica_flags({1: "a", 2: "b"}) == {1: "odd", 2: "odd"}
    assert replica_flags({1: "a", 2: "a", 3: "b", 4: "b"}) == dict.fromkeys((1, 2, 3, 4), "odd")


def test_group_key_separates_models_bases_and_learning_names() -> None:
    sealed = {"model_digest": "ab" * 32, "base": "00" * 32}
    assert group_key(sealed, "x") == group_key(sealed, "y")
    assert group_key(sealed, "x") != group_key({**sealed, "base": "11" * 32}, "x")
    learning = {"model_digest": None, "base": "00" * 32}
    assert group_key(learning, "x") != group_key(learning, "y")
    assert group_key(learning, "x") != group_key(sealed, "x")


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_signed_requests_bind_method_path_host_body_and_time(kind: str) -> None:
    key = (ed25519.Ed25519PrivateKey.generate() if kind == "ed25519"
           else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    pub = key.public_key()
    h = sign_request(key, "POST", "/api/v1/attestations", "h1", b"{}", now=1000.0)
    args = ("POST", "/api/v1/attestations", "h1", h["X-Semtrust-Date"],
            h["X-Semtrust-Signature"], b"{}")
    assert verify_request(pub, *args, now=1000.0) is None
    for i, other in ((0, "GET"), (1, "/api/v1/nonce"), (2, "h2"), (5, b"[]")):
        changed = list(args)
        changed[i] = other
        assert "does not verify" in str(verify_request(pub, *changed, now=1000.0))  # type: ignore[arg-type]
    assert "off the verifier's clock" in str(verify_request(pub, *args,
                                                            now=1000.0 + CLOCK_WINDOW + 1))
    bad = list(args)
    bad[4] = "***"
    assert "Base64" in str(verify_request(pub, *bad, now=1000.0))  # type: ignore[arg-type]


def test_operator_token_and_mqtt_urls() -> None:
    assert operator_ok("s" * 20, "s" * 20) and not operator_ok("s" * 20, "t" * 20)
    assert not operator_ok(None, "x") and not operator_ok("s" * 20, None)
    t = parse_mqtt_url("mqtt://u:p%40ss@broker:1884/semtrust/alerts")
    assert (t.host, t.port, t.topic, t.username, t.password) == \
        ("broker", 1884, "semtrust/alerts", "u", "p@ss")
    assert parse_mqtt_url("mqtt://broker").topic == "semtrust/fleet/status"
    for bad in ("http://broker/t", "mqtt:///t", "mqtt://b/t/%23", "mqtt://b/t/+"):
        with pytest.raises(InputError):
            parse_mqtt_url(bad)


def test_systemd_units_use_existing_options() -> None:
    import re
    from pathlib import Path

    from click.testing import CliRunner

    from semtrust.cli import main

    units = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
    for unit in ("semtrust-agent.service", "semtrust-verifier.service"):
        text = (units / unit).read_text()
        exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        words = exec_line.split()[1:]  # after ExecStart=/path/semtrust
        cmd = words[:next(i for i, w in enumerate(words) if w.startswith("-"))]
        help_text = CliRunner().invoke(main, [*cmd, "--help"]).output
        for opt in re.findall(r"(--[a-z-]+)", exec_line):
            assert opt in help_text, (unit, opt)
