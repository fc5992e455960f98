"""A synthetic mine for benchmarks: N methane points on the shipped statutory limits.

The pilot mines have about 50 points each; the performance targets (design.md) speak of
thousands of sensors and 100-reading payloads, so the benchmarks build a larger mine here, with
real limits from config/limits.toml and the codec's own encoder for its payloads.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from config.loader import load_deployment, load_limits
from config.model import (
    BrokerConfig,
    Deployment,
    HttpConfig,
    IngestConfig,
    Mine,
    Sensor,
    StoreConfig,
    Substation,
)
from ingest.codec import encode_telemetry
from jinmei.service import Service
from tests.servers import Mosquitto, victoria_metrics

__all__ = ["payloads", "running_service", "synthetic_deployment", "synthetic_mine"]

PER_SUBSTATION = 100


def synthetic_mine(n_sensors: int, mine_id: str = "bench") -> Mine:
    """``n_sensors`` working-face methane points, 100 per substation."""
    limits = load_limits().resolve("ch4", "longwall_face").limits
    n_sub = -(-n_sensors // PER_SUBSTATION)
    subs = tuple(Substation(f"S{j:03d}", f"分站{j}") for j in range(n_sub))
    sensors = tuple(
        Sensor(mine_id, f"T1-{i:05d}", "ch4", "%", "longwall_face", f"工作面{i}", f"A{i // 10}",
               f"S{i // PER_SUBSTATION:03d}", 10.0, 0.0, 4.0,
               dataclasses.replace(limits, release_high=limits.alarm_high))
        for i in range(n_sensors))
    return Mine(mine_id, "基准矿", "Benchmark mine", "Asia/Shanghai", subs, sensors)


def synthetic_deployment(n_sensors: int, n_mines: int = 1, **overrides: object) -> Deployment:
    """The shipped deployment's settings with synthetic mines only: one ``bench`` mine, or
    ``n_mines`` mines ``bench0``… sharing ``n_sensors`` points."""
    shipped = load_deployment(None)
    overrides.setdefault("http", HttpConfig(listen=""))  # benchmarks run beside a service
    mines = ((synthetic_mine(n_sensors),) if n_mines == 1 else
             tuple(synthetic_mine(n_sensors // n_mines, f"bench{k}") for k in range(n_mines)))
    return dataclasses.replace(shipped, mines=mines, **overrides)  # type: ignore[arg-type]


def payloads(mine: Mine, rounds: int, start_ms: int, per_message: int = PER_SUBSTATION,
             seed: int = 1) -> list[tuple[str, bytes]]:
    """``rounds`` patrol rounds of every sensor, ``per_message`` readings per message, 1 s
    apart; values around 0.3 % with one in 20,000 above the 1.0 % alarm limit (real feeds rarely
    cross; the alert path is measured by its own tests)."""
    rng = np.random.default_rng(seed)
    ids = [s.id for s in mine.sensors]
    out = []
    for r in range(rounds):
        values = np.round(rng.normal(0.3, 0.05, len(ids)), 2)
        values[rng.random(len(ids)) < 0.00005] = 1.2
        ts = start_ms + r * 1000
        for lo in range(0, len(ids), per_message):
            chunk = [(ids[i], float(values[i]), "ok") for i in range(lo, min(lo + per_message,
                                                                              len(ids)))]
            sub = mine.sensors[lo].substation
            out.append((f"jinmei/{mine.id}/telemetry/{sub}", encode_telemetry(ts, chunk)))
    return out


@contextlib.contextmanager
def running_service(work: Path, n_sensors: int, store: str = "sqlite",
                    protocol: str = "5") -> Iterator[tuple[Mosquitto, Service]]:
    """A Mosquitto (deploy/mosquitto.conf limits) and the service on the synthetic mine, storing
    into SQLite or, with ``store="influx"``, through the InfluxDB sink to a VictoriaMetrics;
    ``protocol`` is ``broker.protocol`` ("5" or "3.1.1")."""
    with contextlib.ExitStack() as stack:
        broker = Mosquitto(work)
        broker.start()
        stack.callback(broker.stop)
        if store == "influx":
            vm = stack.enter_context(victoria_metrics(work / "vm"))
            url = f"influxdb://127.0.0.1:{vm.port}?org=jinmei&bucket=jinmei"
        else:
            url = f"sqlite:///{work / 'readings.db'}"
        service = Service(synthetic_deployment(
            n_sensors,
            broker=BrokerConfig(url=broker.url, client_id="bench-ingest", protocol=protocol),
            store=StoreConfig(url=url), ingest=IngestConfig(state_dir=str(work / "state"))))
        assert service.start(wait_subscribed_s=10)
        stack.callback(service.stop)
        yield broker, service
