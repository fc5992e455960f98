"""InfluxSink through influxdb-client to a real VictoriaMetrics (InfluxDB v2 write API), and
to a real scripted HTTP server for the answers VictoriaMetrics never gives.

VictoriaMetrics keeps numeric fields only and names a series ``<measurement>_<field>``
(``reading_value``, ``reading_status``, ``alert_value`` …); its tags come back as labels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from alerts.wire import Alert
from config.model import Registry
from config.readings import ReadingBatch
from ingest.deadletter import DeadLetters
from ingest.influx import InfluxSink
from ingest.lineprotocol import reading_lines
from ingest.sink import Sink, open_sink
from ingest.spool import Spool
from tests.servers import (
    VictoriaMetrics,
    free_port,
    sample_sensor,
    scripted_http_server,
    victoria_metrics,
    wait_until,
)

pytestmark = pytest.mark.integration

SENSORS = [sample_sensor("dayan", "T0-1101", "ch4", "longwall_upper_corner"),
           # a space, comma and equals sign in tags must survive the trip through the server
           sample_sensor("dayan", "CO 1102,A=1", "co", "longwall_return"),
           sample_sensor("qipanjing", "T1-2201", "ch4", "heading_face")]
REGISTRY = Registry.from_sensors(SENSORS)
# A day ago, on the hour: VictoriaMetrics exports nothing after now and keeps only a month.
T0 = (time.time_ns() // 3_600_000_000_000 - 24) * 3_600_000 + 500
GOOD = "reading,mine=dayan,sensor=T0 value=0.5,status=0i 1795614332500"


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with victoria_metrics(tmp_path) as server:
        yield server


Closing = Callable[[Sink], Sink]


@pytest.fixture
def closing() -> Iterator[Closing]:
    """Registers sinks to close at teardown, so a failed assertion leaks no forwarder."""
    opened: list[Sink] = []

    def register(sink: Sink) -> Sink:
        opened.append(sink)
        return sink

    yield register
    for sink in opened:
        sink.close()  # a second close is a no-op


def influx_url(port: int) -> str:
    return f"influxdb://127.0.0.1:{port}?org=jinmei&bucket=jinmei"


def make_batch(n: int, start: int = T0) -> ReadingBatch:
    rng = np.random.default_rng(start % 1000 + n)
    # Two decimals, as the sensors resolve them (VictoriaMetrics stores decimals, not doubles).
    return ReadingBatch(np.arange(n, dtype=np.int32) % len(SENSORS),
                        start + np.arange(n, dtype=np.int64) * 500,
                        np.round(rng.random(n) * 4, 2), rng.integers(0, 256, n).astype(np.uint16))


def expected_series(batches: list[ReadingBatch], field: str,
                    mine: str) -> dict[frozenset[tuple[str, str]], list[tuple[int, float]]]:
    """{tags: [(ts, value) …]} the export must return, built one reading at a time."""
    series: dict[frozenset[tuple[str, str]], list[tuple[int, float]]] = {}
    for batch in batches:
        for i, ts, value, status in zip(batch.sensor, batch.ts, batch.value, batch.status,
                                        strict=True):
            sensor = SENSORS[int(i)]
            if sensor.mine != mine:
                continue
            tags = frozenset({"__name__": f"reading_{field}", "mine": sensor.mine,
                              "sensor": sensor.id, "kind": sensor.kind,
                              "location": sensor.location}.items())
            series.setdefault(tags, []).append(
                (int(ts), float(value) if field == "value" else float(status)))
    return {tags: sorted(points) for tags, points in series.items()}


def exported_series(vm: VictoriaMetrics,
                    selector: str) -> dict[frozenset[tuple[str, str]], list[tuple[int, float]]]:
    return {frozenset(s["metric"].items()): sorted(zip(s["timestamps"], s["values"], strict=True))
            for s in vm.export(selector)}


def arrives(vm: VictoriaMetrics, selector: str, expected: dict) -> bool:
    """Poll the export (points appear within a second or two) until it equals ``expected``."""
    return bool(wait_until(lambda: exported_series(vm, selector) == expected, 15.0, 0.2))


def test_readings_arrive_with_every_value_timestamp_and_tag(vm: VictoriaMetrics, tmp_path: Path,
                                                            closing: Closing) -> None:
    sink = closing(open_sink(influx_url(vm.port), REGISTRY, state_dir=tmp_path / "state"))
    batches = [make_batch(300), make_batch(150, start=T0 + 1_000_000)]
    for batch in batches:
        sink.write(batch)
    for field, mine in [("value", "dayan"), ("status", "dayan"), ("value", "qipanjing")]:
        selector = f'{{__name__="reading_{field}",mine="{mine}"}}'
        expected = expected_series(batches, field, mine)
        assert arrives(vm, selector, expected), (exported_series(vm, selector), expected)
    assert wait_until(lambda: sink.stats()["pending"] == 0, 5.0)
    sink.close()
    assert sink.stats() == {"readings": 450, "alerts": 0, "delivered": 450, "pending": 0,
                            "oldest_ms": 0, "dead": 0, "failed_attempts": 0, "failing": 0}


def test_alert_transitions_arrive(vm: VictoriaMetrics, tmp_path: Path,
                                  closing: Closing) -> None:
    alert = Alert(id="dayan/T0-1101/limit_alarm/1", mine="dayan", sensor="T0-1101", kind="ch4",
                  rule="limit_alarm", severity="alarm", state="firing", value=1.23, limit=1.0,
                  started_at=T0, ts=T0, message="甲烷超限 / methane over limit")
    resolved = Alert(**{**{f: getattr(alert, f) for f in alert.__struct_fields__},
                        "state": "resolved", "value": 0.64, "ts": T0 + 90_000})
    sink = closing(open_sink(influx_url(vm.port), REGISTRY, state_dir=tmp_path / "state"))
    sink.write_alerts([alert, resolved])
    tags = {"mine": "dayan", "sensor": "T0-1101", "kind": "ch4", "rule": "limit_alarm",
            "severity": "alarm"}
    expected = {frozenset({**tags, "__name__": "alert_value", "state": state}.items()): [(ts, v)]
                for state, ts, v in [("firing", T0, 1.23), ("resolved", T0 + 90_000, 0.64)]}
    assert arrives(vm, '{__name__="alert_value"}', expected)
    assert arrives(vm, '{__name__="alert_limit",state="firing"}',
                   {frozenset({**tags, "__name__": "alert_limit", "state": "firing"}.items()):
                    [(T0, 1.0)]})
    sink.close()
    assert sink.stats()["alerts"] == 2 and sink.stats()["delivered"] == 2


def test_outage_loses_nothing_and_recovers(tmp_path: Path, closing: Closing) -> None:
    """The database is down when the readings come; they wait in the spool and all arrive
    once it starts on that port."""
    port = free_port()
    sink = closing(InfluxSink(f"http://127.0.0.1:{port}", REGISTRY, org="jinmei",
                              bucket="jinmei", state_dir=tmp_path / "state", retry_cap_s=0.5))
    batches = [make_batch(200, start=T0 + k * 1_000_000) for k in range(5)]
    written_ms = time.time_ns() // 1_000_000
    for batch in batches:
        sink.write(batch)  # returns at once although nothing listens
    assert wait_until(lambda: sink.stats()["failed_attempts"] >= 2, 5.0)
    assert sink.stats()["pending"] == 5 and sink.stats()["delivered"] == 0
    fault = sink.delivery_fault()  # connection refused is transient: held, and said so
    assert fault is not None and "refused" in fault[1].lower()
    assert abs(fault[0] - time.time() * 1000) < 10_000
    down = sink.stats()
    assert down["pending"] == 5 and down["delivered"] == 0 and down["failing"] == 1
    assert written_ms - 1000 <= down["oldest_ms"] <= time.time_ns() // 1_000_000  # /metrics age
    with victoria_metrics(tmp_path, port=port) as vm:
        assert arrives(vm, '{__name__="reading_value",mine="dayan"}',
                       expected_series(batches, "value", "dayan"))
        assert wait_until(lambda: sink.stats()["pending"] == 0, 5.0)
        assert sink.delivery_fault() is None
        assert sink.stats()["failing"] == 0 and sink.stats()["oldest_ms"] == 0
        sink.close()
    assert sink.stats()["delivered"] == 1000 and sink.stats()["dead"] == 0


def test_a_request_victoria_metrics_refuses_for_good_is_dead_lettered(
        vm: VictoriaMetrics, tmp_path: Path, closing: Closing) -> None:
    """A real 4xx from the real server: VictoriaMetrics answers 400 to a path it does not
    serve (it takes even malformed line protocol with 204), so a base URL with a wrong path
    prefix gets a 400 for every write. Each chunk goes to the dead letters, whole, with the
    server's words — it is not retried forever — and the forwarder is not left failing."""
    sink = closing(InfluxSink(f"{vm.url}/not-influx", REGISTRY, org="jinmei", bucket="jinmei",
                              state_dir=tmp_path / "state"))
    sink.write(make_batch(10))
    sink.write(make_batch(10, start=T0 + 1_000_000))
    assert wait_until(lambda: sink.stats()["dead"] == 2, 10.0)
    assert sink.stats()["pending"] == 0 and sink.delivery_fault() is None
    sink.close()
    letters = DeadLetters(tmp_path / "state" / "deadletter.db")
    try:
        dead = letters.list()
    finally:
        letters.close()
    assert [d.origin for d in dead] == ["spool", "spool"]
    assert all("HTTP 400" in d.reason and "unsupported path" in d.reason for d in dead)
    assert dead[0].body.decode() == reading_lines(make_batch(10), REGISTRY)


def test_chunks_left_at_close_go_out_after_restart(tmp_path: Path, closing: Closing) -> None:
    port = free_port()
    state = tmp_path / "state"
    first = closing(InfluxSink(f"http://127.0.0.1:{port}", REGISTRY, org="jinmei",
                               bucket="jinmei", state_dir=state, close_timeout_s=0.5))
    batches = [make_batch(100), make_batch(100, start=T0 + 1_000_000)]
    for batch in batches:
        first.write(batch)
    started = time.monotonic()
    first.close()
    assert time.monotonic() - started < 3.0  # one short last attempt, not a hang
    assert first.stats()["pending"] == 2
    with victoria_metrics(tmp_path, port=port) as vm:
        second = closing(open_sink(influx_url(port), REGISTRY, state_dir=state))
        assert arrives(vm, '{__name__="reading_status",mine="dayan"}',
                       expected_series(batches, "status", "dayan"))
        assert wait_until(lambda: second.stats()["pending"] == 0, 5.0)
        second.close()


def test_refused_chunk_is_dead_lettered_and_the_others_delivered(tmp_path: Path,
                                                                closing: Closing) -> None:
    """VictoriaMetrics answers 204 even to malformed line protocol (it logs and skips the
    line), so the 400 branch is exercised with a real HTTP server on loopback that refuses any
    request containing the bad line, as InfluxDB does. The three chunks are spooled before the
    sink starts, so the forwarder first sends them together and must then find the bad one."""
    bad = "reading,mine=dayan value= 1795614332500"

    def answer(_: int, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if bad.encode() in body:
            return 400, {"Content-Type": "application/json"}, \
                b'{"code":"invalid","message":"unable to parse: missing field value"}'
        return 204, {}, b""

    state = tmp_path / "state"
    dead_letters = DeadLetters(state / "deadletter.db")
    spool = Spool(state / "spool.db", dead_letters)
    for chunk in (GOOD, bad, GOOD.replace("0.5", "0.6")):
        spool.append(chunk)
    spool.close()
    with scripted_http_server(answer) as server:
        sink = closing(InfluxSink(server.url, REGISTRY, org="jinmei", bucket="jinmei",
                                  state_dir=state))
        assert wait_until(lambda: sink.stats()["pending"] == 0, 5.0)
        sink.close()
    assert sink.stats()["dead"] == 1 and sink.stats()["delivered"] == 2
    accepted = [r.body.decode() for r in server.requests if bad.encode() not in r.body]
    assert accepted == [GOOD, GOOD.replace("0.5", "0.6")]
    assert all(r.path.startswith("/api/v2/write") for r in server.requests)
    (letter,) = dead_letters.list()
    dead_letters.close()
    assert (letter.origin, letter.topic, letter.body) == ("spool", "", bad.encode())
    assert "unable to parse: missing field value" in letter.reason


@pytest.mark.parametrize("status, dead", [
    (400, True),   # malformed data
    (413, True),   # one chunk too large: it will never fit
    (422, True),   # unprocessable (e.g. outside retention)
    (401, False),  # token wrong: an operator fix recovers
    (403, False),  # token lacks permission: same
    (404, False),  # org or bucket missing: creating it recovers
    (408, False),  # the server timed out waiting for us
    (500, False),  # server error
    (502, False),  # a proxy in front of it failed
])
def test_each_status_is_dead_lettered_or_retried(status: int, dead: bool, tmp_path: Path,
                                                 closing: Closing) -> None:
    def answer(n: int, _: bytes) -> tuple[int, dict[str, str], bytes]:
        return (status, {}, b'{"message":"scripted"}') if n == 0 else (204, {}, b"")

    with scripted_http_server(answer) as server:
        sink = closing(InfluxSink(server.url, REGISTRY, org="jinmei", bucket="jinmei",
                                  state_dir=tmp_path, retry_cap_s=0.05))
        sink.write(make_batch(10))
        assert wait_until(lambda: sink.stats()["pending"] == 0, 5.0)
        sink.close()
    assert len(server.requests) == (1 if dead else 2)
    assert sink.stats()["dead"] == (1 if dead else 0)
    assert sink.stats()["delivered"] == (0 if dead else 10)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(status: int, tmp_path: Path, closing: Closing) -> None:
    def answer(n: int, _: bytes) -> tuple[int, dict[str, str], bytes]:
        return (status, {"Retry-After": "1"}, b"") if n == 0 else (204, {}, b"")

    with scripted_http_server(answer) as server:
        sink = closing(InfluxSink(server.url, REGISTRY, org="jinmei", bucket="jinmei",
                                  state_dir=tmp_path, retry_cap_s=0.05))  # backoff alone: ≤ 50 ms
        sink.write(make_batch(10))
        assert wait_until(lambda: sink.stats()["pending"] == 0, 5.0)
        sink.close()
    first, second = server.requests
    assert second.at - first.at >= 0.95


@pytest.mark.parametrize("status, level", [(401, logging.ERROR), (500, logging.WARNING)])
def test_a_repeated_failure_is_logged_once(status: int, level: int, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture,
                                           closing: Closing) -> None:
    def answer(n: int, _: bytes) -> tuple[int, dict[str, str], bytes]:
        return (status, {}, b'{"message":"scripted"}') if n < 6 else (204, {}, b"")

    caplog.set_level(logging.INFO, logger="ingest.influx")
    with scripted_http_server(answer) as server:
        sink = closing(InfluxSink(server.url, REGISTRY, org="jinmei", bucket="jinmei",
                                  state_dir=tmp_path, retry_cap_s=0.02))
        sink.write(make_batch(10))
        assert wait_until(lambda: sink.stats()["pending"] == 0, 5.0)
        sink.close()
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "ingest.influx"]
    assert len(server.requests) == 7 and sink.stats()["failed_attempts"] == 6
    assert [lvl for lvl, _ in records] == [level, logging.WARNING]
    assert f"HTTP {status}: scripted" in records[0][1]
    assert "delivering again after 6 failed attempts" in records[1][1]
