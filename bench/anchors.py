"""The yardsticks jinmei's end-to-end figures are measured against, on the same broker.

- ``bare``: a bare paho 2 + msgspec subscriber in a process of its own, as an ingestor with
  nothing else to do would be: MQTT 5 with the same Receive Maximum as jinmei, QoS 1 with
  paho's automatic acknowledgement (right after the callback), each payload decoded with
  msgspec into a typed struct and its readings counted. Optionally (``alert_over``) it also
  publishes a JSON alert when a sensor's value first crosses a limit — the least any
  publish → alert path must do.
- ``mosquitto_sub``: the broker's own C client (``mosquitto_sub -q 1 -C N``, output discarded),
  the speed of the socket and the protocol with no Python at all. Found on ``PATH`` or in
  ``$MOSQUITTO_SUB`` (Debian package ``mosquitto-clients``).

Both subscribe before the publishers start and are timed from the same start as jinmei.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from multiprocessing.synchronize import Event as EventType

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.mqtt import TELEMETRY_TOPIC

__all__ = ["bare_subscriber", "mosquitto_sub_command", "start_mosquitto_sub"]


class _Reading(msgspec.Struct):
    sensor: str
    value: float
    status: str = "ok"


class _Telemetry(msgspec.Struct):
    ts: int
    readings: list[_Reading]


def bare_subscriber(port: int, expected_readings: int, ready: EventType, done: EventType,
                    alert_over: float | None = None) -> None:
    """Subscribe, count readings until ``expected_readings`` (0: forever, until killed), then
    set ``done``. With ``alert_over``, publish ``{"state": "firing", "ts": <reading ts>}`` on
    ``jinmei/<mine>/alerts`` when a sensor first goes above it (again after it went below)."""
    decoder = msgspec.json.Decoder(_Telemetry)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-anchor",
                         protocol=mqtt.MQTTv5)
    high: set[str] = set()
    count = [0]

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        doc = decoder.decode(msg.payload)
        count[0] += len(doc.readings)
        if alert_over is not None:
            for r in doc.readings:
                if r.value > alert_over and r.sensor not in high:
                    high.add(r.sensor)
                    mine = msg.topic.split("/")[1]
                    c.publish(f"jinmei/{mine}/alerts",
                              json.dumps({"state": "firing", "ts": doc.ts}), qos=1)
                elif r.value <= alert_over:
                    high.discard(r.sensor)
        if expected_readings and count[0] >= expected_readings:
            done.set()

    client.on_message = on_message
    client.on_subscribe = lambda *a: ready.set()
    client.on_connect = lambda c, *a: c.subscribe(TELEMETRY_TOPIC, qos=1)
    properties = Properties(PacketTypes.CONNECT)
    properties.ReceiveMaximum = 10_000  # jinmei's default in_flight
    client.connect("127.0.0.1", port, properties=properties)
    client.loop_forever()


def mosquitto_sub_command(port: int, messages: int) -> list[str]:
    """The command line of a ``mosquitto_sub`` that takes ``messages`` telemetry messages at
    QoS 1 and exits; raises FileNotFoundError when the client is not installed."""
    binary = os.environ.get("MOSQUITTO_SUB") or shutil.which("mosquitto_sub")
    if not binary:
        raise FileNotFoundError("mosquitto_sub not found: install mosquitto-clients or set "
                                "MOSQUITTO_SUB")
    return [binary, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", TELEMETRY_TOPIC,
            "-C", str(messages), "-V", "mqttv5", "-i", "sub-anchor"]


def start_mosquitto_sub(port: int, messages: int) -> subprocess.Popen[bytes]:
    """Start it and give it a second to subscribe (it prints nothing until a message)."""
    proc = subprocess.Popen(mosquitto_sub_command(port, messages), stdout=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc
