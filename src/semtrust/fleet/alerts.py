"""Status-change notifications: JSON to an MQTT topic and to webhooks.

Events are queued in memory and sent by one background thread, so a slow
broker or webhook never holds up an appraisal. MQTT messages use QoS 1 and the
paho client's own reconnect and in-flight queue.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Any

from semtrust.errors import InputError

__all__ = ["Alerter", "MqttTarget", "parse_mqtt_url"]

log = logging.getLogger("semtrust.fleet.alerts")
DEFAULT_TOPIC = "semtrust/fleet/status"


class MqttTarget:
    """``mqtt://[user[:password]@]host[:port][/topic]``; the password may come from
    ``$SEMTRUST_MQTT_PASSWORD`` instead of the URL."""

    def __init__(self, host: str, port: int, topic: str, username: str | None,
                 password: str | None) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.username, self.password = username, password


def parse_mqtt_url(url: str) -> MqttTarget:
    u = urllib.parse.urlsplit(url)
    if u.scheme != "mqtt" or not u.hostname:
        raise InputError(f"not an mqtt://host[:port]/topic URL: {url!r}", field="--mqtt")
    try:
        port = u.port or 1883
    except ValueError:
        raise InputError("bad port", field="--mqtt") from None
    topic = urllib.parse.unquote(u.path.lstrip("/")) or DEFAULT_TOPIC
    if "#" in topic or "+" in topic:
        raise InputError("the topic must not contain MQTT wildcards", field="--mqtt")
    password = u.password if u.password is not None else os.environ.get("SEMTRUST_MQTT_PASSWORD")
    user = urllib.parse.unquote(u.username) if u.username else None
    return MqttTarget(u.hostname, port, topic, user,
                      urllib.parse.unquote(password) if password else None)


class Alerter:
    def __init__(self, mqtt: MqttTarget | None = None, webhooks: Sequence[str] = ()) -> None:
        self.mqtt = mqtt
        self.webhooks = list(webhooks)
        self.sent = 0
        self.failed = 0
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=100_000)
        self._client: Any = None
        self._thread = threading.Thread(target=self._run, name="semtrust-alerts", daemon=True)

    def start(self) -> None:
        if self.mqtt is not None:
            import paho.mqtt.client as paho
            from paho.mqtt.enums import CallbackAPIVersion

            c = paho.Client(CallbackAPIVersion.VERSION2,
                            client_id=f"semtrust-verifier-{os.getpid()}")
            if self.mqtt.username is not None:
                c.username_pw_set(self.mqtt.username, self.mqtt.password)
            c.reconnect_delay_set(1, 30)
            c.connect_async(self.mqtt.host, self.mqtt.port, keepalive=30)
            c.loop_start()
            self._client = c
        self._thread.start()

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            self._q.put_nowait(event)
        except queue.Full:
            self.failed += 1
            log.warning("alert queue full; dropped %s", event.get("type"))

    def _run(self) -> None:
        http: Any = None
        if self.webhooks:
            import httpx

            http = httpx.Client(timeout=10.0)
        while True:
            event = self._q.get()
            if event is None:
                break
            payload = json.dumps(event, sort_keys=True, separators=(",", ":"))
            if self._client is not None and self.mqtt is not None:
                info = self._client.publish(self.mqtt.topic, payload, qos=1)
                if info.rc != 0:
                    self.failed += 1
                    log.warning("MQTT publish failed (rc %s)", info.rc)
                else:
                    self.sent += 1
            for url in self.webhooks:
                try:
                    r = http.post(url, content=payload,
                                  headers={"Content-Type": "application/json"})
                    r.raise_for_status()
                    self.sent += 1
                except Exception as exc:  # a dead webhook must not stop the others
                    self.failed += 1
                    log.warning("webhook %s: %s", url, exc)
        if http is not None:
            http.close()
