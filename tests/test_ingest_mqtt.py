"""MqttSource against a real Mosquitto: how it batches what arrives, and ack after commit.

- ``take`` returns at most ``max_messages``, in arrival order, keeping the rest for the next
  batch; it takes what has arrived without waiting for more (a lone message at once), so what
  arrives while the worker is busy makes one batch (one commit for many messages under load);
- an unacknowledged message comes back to the same client id; an acknowledged one does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

from config.model import BrokerConfig
from ingest import mqtt_fast
from ingest.mqtt import Inbound, MqttSource
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

TOPIC = "jinmei/dayan/telemetry"
PAHO_DECODE = mqtt_fast._paho_decode  # paho's own, kept when the fast one is installed


@pytest.fixture
def source(mosquitto: Mosquitto) -> Iterator[MqttSource]:
    started = MqttSource(BrokerConfig(url=mosquitto.url, client_id="ingest-test"))
    started.start()
    assert started.wait_subscribed(10)
    yield started
    started.stop()


def send(broker: Mosquitto, payloads: list[bytes], pause_s: float = 0.0) -> None:
    """Publish QoS 1 from a client of its own and wait until the broker has every message."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sender")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(TOPIC, payload, qos=1).wait_for_publish(10)
            time.sleep(pause_s)
    finally:
        client.disconnect()
        client.loop_stop()


def take_all(source: MqttSource, count: int, max_messages: int) -> list[list[Inbound]]:
    batches: list[list[Inbound]] = []
    deadline = time.monotonic() + 20
    while sum(map(len, batches)) < count and time.monotonic() < deadline:
        batch = source.take(max_messages, 0.5)
        if batch:
            batches.append(batch)
    return batches


def test_batches_keep_arrival_order_and_never_exceed_their_size(
        mosquitto: Mosquitto, source: MqttSource) -> None:
    payloads = [f"m{i}".encode() for i in range(250)]
    send(mosquitto, payloads)
    batches = take_all(source, len(payloads), max_messages=40)
    assert [m.payload for batch in batches for m in batch] == payloads
    assert max(map(len, batches)) == 40
    assert source.counters["received"] == len(payloads)


def test_a_lone_message_is_taken_at_once_not_after_the_wait(
        mosquitto: Mosquitto, source: MqttSource) -> None:
    # The old fixed batching held a first message for wait_s to gather followers: 5 s here.
    sender = threading.Thread(target=send, args=(mosquitto, [b"alone"]))
    started = time.monotonic()
    sender.start()
    try:
        batch = source.take(1000, 5.0)
        took = time.monotonic() - started
    finally:
        sender.join()
    assert [m.payload for m in batch] == [b"alone"]
    assert took < 2.5  # generous: a busy machine, and the sender's own connect


def test_what_arrived_while_the_worker_was_busy_makes_one_batch(
        mosquitto: Mosquitto, source: MqttSource) -> None:
    payloads = [f"m{i}".encode() for i in range(60)]
    send(mosquitto, payloads)
    time.sleep(2.0)  # the worker is "busy" while the broker delivers all 60 to the source
    batch = source.take(1000, 0.5)
    assert [m.payload for m in batch] == payloads
    assert source.take(1000, 0.2) == []


def test_unacknowledged_messages_come_back_and_acknowledged_ones_do_not(
        mosquitto: Mosquitto) -> None:
    config = BrokerConfig(url=mosquitto.url, client_id="ingest-redelivery")
    first = MqttSource(config)
    first.start()
    assert first.wait_subscribed(10)
    send(mosquitto, [b"acked", b"lost"])
    taken = take_all(first, 2, max_messages=1)
    first.ack(taken[0])  # "lost" is taken but never acknowledged: the worker died
    first.stop()
    again = MqttSource(config)
    again.start()
    try:
        assert again.wait_subscribed(10)
        assert [m.payload for m in again.take(1000, 5.0)] == [b"lost"]
    finally:
        again.stop()


@given(topic=st.binary(max_size=40), payload=st.binary(max_size=200), qos=st.integers(0, 2),
       mid=st.integers(1, 65535), dup=st.booleans(), retain=st.booleans(),
       properties=st.sampled_from([b"\x00", b"\x01\x01", b"\x05\x03\x00\x02ab", b""]))
def test_the_fast_publish_decoder_gives_what_paho_gives(
        topic: bytes, payload: bytes, qos: int, mid: int, dup: bool, retain: bool,
        properties: bytes) -> None:
    """Any PUBLISH body, with and without properties (and truncated): the same packet, or the
    same error, as paho's own decoder."""
    header = 0x30 | dup << 3 | qos << 1 | retain
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") \
        + properties + payload
    for protocol in (MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311):
        try:
            assert PAHO_DECODE is not None
            expected = PAHO_DECODE(header, body, protocol)
        except MalformedPacket:
            with pytest.raises(MalformedPacket):
                mqtt_fast.decode_publish(header, body, protocol)
            continue
        got = mqtt_fast.decode_publish(header, body, protocol)
        assert got._replace(properties=None) == expected._replace(properties=None)
        assert type(got.payload) is type(expected.payload)
        if protocol == MQTTProtocolVersion.MQTTv5:
            assert got.properties.pack() == expected.properties.pack()
