"""Event export over MQTT, and the TMA's importer of exported streams.

Each MQTT message holds one or more lines; each line is one JSON object::

    {"domain": NAME, "seq": N, "record": EXPORT_LINE}     one export record
    {"domain": NAME, "seq": N, "end": true}               the stream is complete

``seq`` counts per domain from 1. Messages go at QoS 1 (the reference sends at
QoS 0 and cannot see loss); QoS 1 delivers at least once, so the importer drops
a number it has seen and reports a missing one as a trust event of the domain.
Credentials: the user from the URL (default ``tsem``, as the reference), the
password from ``$TSEM_PASSWORD``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from semtrust.errors import InputError
from semtrust.tma.domains import SequenceError, ServedDomain
from semtrust.tma.protocol import MAX_FRAME

#: Publishes waiting for their PUBACK before ``publish`` blocks (bounded memory).
MAX_INFLIGHT = 1000
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    topic: str
    user: str

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}/{self.topic}"


def parse_mqtt_url(url: str, option: str) -> MqttTarget:
    """``mqtt://[USER@]HOST[:PORT]/TOPIC``; InputError naming ``option`` otherwise."""
    parts = urlsplit(url)
    topic = parts.path.lstrip("/")
    try:
        port = parts.port or 1883
    except ValueError:
        port = -1
    if parts.scheme != "mqtt" or not parts.hostname or not topic or port < 1 or \
            "#" in topic or "+" in topic:
        raise InputError(f"must be mqtt://[USER@]HOST[:PORT]/TOPIC, not {url!r}", field=option)
    return MqttTarget(parts.hostname, port, topic, unquote(parts.username or "tsem"))


def _client(target: MqttTarget, client_id: str, clean: bool) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=clean, protocol=mqtt.MQTTv311)
    c.username_pw_set(target.user, os.environ.get("TSEM_PASSWORD"))
    c.max_inflight_messages_set(MAX_INFLIGHT)
    c.reconnect_delay_set(min_delay=1, max_delay=5)
    return c


class Publisher:
    """Publishes one domain's export records, numbered, at QoS 1."""

    def __init__(self, target: MqttTarget, domain: str) -> None:
        import paho.mqtt.client as mqtt

        self.target = target
        self.domain = domain
        self.seq = 0
        self._connected = threading.Event()
        self._client = _client(target, f"semtrust-export-{uuid.uuid4().hex[:12]}", True)
        self._client.on_connect = self._on_connect
        self._last: Any = None
        try:
            self._client.connect(target.host, target.port, keepalive=60)
        except OSError as exc:
            raise InputError(f"cannot reach the broker: {exc}", source=str(target)) from None
        self._client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT):
            self._client.loop_stop()
            raise InputError("the broker did not accept the connection (user, password?)",
                             source=str(target))
        self._mqtt = mqtt

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if not reason.is_failure:
            self._connected.set()

    def _line(self, record: str | None) -> bytes:
        self.seq += 1
        if record is None:
            return orjson.dumps({"domain": self.domain, "seq": self.seq, "end": True})
        return orjson.dumps({"domain": self.domain, "seq": self.seq, "record": record})

    def publish(self, records: list[str]) -> None:
        """One message with these records, one line each."""
        payload = b"\n".join(self._line(r) for r in records) + b"\n"
        self._send(payload)

    def _send(self, payload: bytes) -> None:
        info = self._client.publish(self.target.topic, payload, qos=1)
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            raise OSError(f"MQTT publish failed: {self._mqtt.error_string(info.rc)}")
        self._last = info

    def close(self, *, complete: bool = True, timeout: float = 60.0) -> bool:
        """Send the end marker (if ``complete``) and wait for every PUBACK; True if all
        were acknowledged."""
        if complete:
            self._send(self._line(None) + b"\n")
        ok = True
        if self._last is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                self._last.wait_for_publish(timeout)
            ok = self._last.is_published()
        self._client.disconnect()
        self._client.loop_stop()
        return bool(ok)


class Importer:
    """Subscribes to a topic and models every domain's stream in a TMA server."""

    def __init__(self, target: MqttTarget, domain_of: Callable[[str], ServedDomain],
                 log: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.domain_of = domain_of
        self.log = log or (lambda m: print(f"semtrust tma: {m}", file=sys.stderr, flush=True))
        self.ended: set[str] = set()
        self.bad = 0
        self.subscribed = threading.Event()
        # A persistent session: the broker keeps our messages while we reconnect.
        self._client = _client(target, f"semtrust-tma-{uuid.uuid4().hex[:12]}", False)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self.subscribed.set()
        self._client.on_message = self._on_message

    def start(self) -> None:
        try:
            self._client.connect(self.target.host, self.target.port, keepalive=60)
        except OSError as exc:
            raise InputError(f"cannot reach the broker: {exc}", source=str(self.target)) \
                from None
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self.log(f"{self.target}: broker refused: {reason}")
            return
        # Again after every reconnect: a restarted broker forgot the subscription.
        client.subscribe(self.target.topic, qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        payload: bytes = msg.payload
        if len(payload) > MAX_FRAME:
            self.bad += 1
            self.log(f"{self.target}: message of {len(payload)} bytes dropped")
            return
        for raw in payload.splitlines():
            if raw.strip():
                self.ingest_line(raw)

    def ingest_line(self, raw: bytes) -> None:
        """Model one exported line; bad lines and gaps are reported, never modeled
        silently."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("domain"), str) or \
                not isinstance(obj.get("seq"), int) or isinstance(obj.get("seq"), bool) or \
                obj["seq"] < 1 or not (isinstance(obj.get("record"), str) or
                                       obj.get("end") is True):
            self.bad += 1
            self.log(f"{self.target}: malformed export line dropped")
            return
        name, seq = obj["domain"], obj["seq"]
        try:
            dom = self.domain_of(name)
        except Exception as exc:
            self.bad += 1
            self.log(f"{self.target}: {exc}")
            return
        with dom.lock:
            before = dom.trust_event_count
            try:
                dom.ingest(seq, obj.get("record"), duplicates_ok=True)
            except SequenceError:
                return  # a duplicate (QoS 1): already modeled
            except InputError as exc:
                self.log(f"{self.target}: domain {name}: {exc}")
            if dom.trust_event_count > before:
                ev = dom.trust_events[-1] if dom.trust_events else {}
                self.log(f"{self.target}: domain {name}: trust event {ev.get('kind')} "
                         f"(expected {ev.get('expected')}, got {ev.get('got')})")
            if obj.get("end") is True:
                self.ended.add(name)
