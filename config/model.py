"""The typed configuration model: frozen dataclasses that every package reads.

The loader (``config.loader``) turns TOML files into these values; nothing else parses TOML.
:class:`Registry` is the resolved sensor list of all configured mines, with every sensor's
effective limits laid out as numpy arrays indexed by the sensor's registry index — the shape
the vectorized detectors work on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

__all__ = [
    "AlertsConfig",
    "BrokerConfig",
    "Deployment",
    "IngestConfig",
    "Limits",
    "Mine",
    "Registry",
    "Sensor",
    "StoreConfig",
    "Substation",
]

# Sensor kinds whose value is a 0/1 state rather than a measurement (domain.md §4).
SWITCH_KINDS = frozenset({"local_fan", "main_fan", "feed", "air_door", "air_duct", "smoke",
                          "power_off_relay"})


@dataclass(frozen=True, slots=True)
class Limits:
    """Effective limits of one sensor, each ``None`` where the rule sets no such limit.

    Upper limits fire at ``value >= limit`` and lower limits at ``value <= limit`` when
    ``inclusive`` is true (AQ 1029-2019 states methane limits as "≥"), and strictly
    (``>`` / ``<``) when the regulation gives an allowed range instead (wind speed "0.25–4 m/s"
    allows exactly 4). Each one clears on the other side of its release value: alarm at
    ``alarm_high``, cleared below ``release_high``; power-off (断电) at ``power_off``, power
    restored (复电) below ``restore``.
    """

    alarm_high: float | None = None
    release_high: float | None = None
    power_off: float | None = None
    restore: float | None = None
    warning_high: float | None = None
    alarm_low: float | None = None
    release_low: float | None = None
    inclusive: bool = True
    power_off_area: str = ""
    source: str = ""
    unsure: bool = False


@dataclass(frozen=True, slots=True)
class Substation:
    """A monitoring substation (分站): sensors are wired to it and it reports them together."""

    id: str
    name: str
    place: str = ""


@dataclass(frozen=True, slots=True)
class Sensor:
    """One measuring point (测点) as defined in a mine's configuration.

    ``location`` is a location type from the limits table (``longwall_face``, ``heading_return``
    …); ``place`` is the human description a dispatcher reads (``1101综采工作面回风巷``);
    ``area`` groups the sensors of one working face or heading (its power-off area).
    """

    mine: str
    id: str
    kind: str
    unit: str
    location: str
    place: str
    area: str
    substation: str
    period_s: float
    range_low: float
    range_high: float
    limits: Limits

    @property
    def key(self) -> str:
        """``mine/sensor``: unique across all mines."""
        return f"{self.mine}/{self.id}"

    @property
    def is_switch(self) -> bool:
        return self.kind in SWITCH_KINDS


@dataclass(frozen=True, slots=True)
class Mine:
    """One mine: identity, clock and the substations and sensors it reports."""

    id: str
    name: str
    name_en: str
    timezone: str
    substations: tuple[Substation, ...]
    sensors: tuple[Sensor, ...]
    source_file: str = ""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the MQTT broker is and how the ingestor holds its session (see ingest/mqtt.py)."""

    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "jinmei-ingest"
    protocol: str = "5"
    username: str = ""
    password: str = ""
    in_flight: int = 10_000
    keepalive_s: int = 30


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where readings go (``sqlite:///path`` or ``influxdb://host:port?org=..&bucket=..``)."""

    url: str = "sqlite:///var/jinmei/readings.db"
    influx_token: str = ""


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """How the ingest worker batches and what it refuses."""

    state_dir: str = "var/jinmei"
    batch_max_messages: int = 1_000
    batch_wait_ms: int = 50
    max_future_s: float = 300.0


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Where alert transitions go besides the alert record (always kept)."""

    mqtt: bool = True


@dataclass(frozen=True)
class Deployment:
    """A whole deployment: connections, storage, and the mines it serves."""

    broker: BrokerConfig
    store: StoreConfig
    ingest: IngestConfig
    alerts: AlertsConfig
    mines: tuple[Mine, ...]
    source_file: str = ""
    config_hash: str = ""

    @cached_property
    def registry(self) -> Registry:
        return Registry.build(self.mines)


@dataclass(frozen=True)
class Registry:
    """All sensors of all mines, each with a fixed index, and their limits as arrays.

    Index ``i`` is the same in every array here and in every detector's state, so a batch of
    readings is just arrays of indexes, times, values and statuses. Absent limits are NaN:
    every comparison with NaN is false, so an absent limit never fires.
    """

    sensors: tuple[Sensor, ...]
    mines: tuple[Mine, ...] = ()
    index: dict[str, int] = field(default_factory=dict)
    alarm_high: np.ndarray = field(default_factory=lambda: np.empty(0))
    release_high: np.ndarray = field(default_factory=lambda: np.empty(0))
    power_off: np.ndarray = field(default_factory=lambda: np.empty(0))
    restore: np.ndarray = field(default_factory=lambda: np.empty(0))
    warning_high: np.ndarray = field(default_factory=lambda: np.empty(0))
    alarm_low: np.ndarray = field(default_factory=lambda: np.empty(0))
    release_low: np.ndarray = field(default_factory=lambda: np.empty(0))
    inclusive: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    range_low: np.ndarray = field(default_factory=lambda: np.empty(0))
    range_high: np.ndarray = field(default_factory=lambda: np.empty(0))
    period_s: np.ndarray = field(default_factory=lambda: np.empty(0))

    @classmethod
    def build(cls, mines: tuple[Mine, ...] | list[Mine]) -> Registry:
        sensors = tuple(s for m in mines for s in m.sensors)
        return cls.from_sensors(sensors, tuple(mines))

    @classmethod
    def from_sensors(cls, sensors: tuple[Sensor, ...] | list[Sensor],
                     mines: tuple[Mine, ...] = ()) -> Registry:
        sensors = tuple(sensors)

        def column(name: str) -> np.ndarray:
            values = [getattr(s.limits, name) for s in sensors]
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

        return cls(
            sensors=sensors,
            mines=mines,
            index={s.key: i for i, s in enumerate(sensors)},
            alarm_high=column("alarm_high"),
            release_high=column("release_high"),
            power_off=column("power_off"),
            restore=column("restore"),
            warning_high=column("warning_high"),
            alarm_low=column("alarm_low"),
            release_low=column("release_low"),
            inclusive=np.array([s.limits.inclusive for s in sensors], dtype=bool),
            range_low=np.array([s.range_low for s in sensors], dtype=np.float64),
            range_high=np.array([s.range_high for s in sensors], dtype=np.float64),
            period_s=np.array([s.period_s for s in sensors], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.sensors)

    def mine(self, mine_id: str) -> Mine | None:
        return next((m for m in self.mines if m.id == mine_id), None)

    @cached_property
    def mine_ids(self) -> frozenset[str]:
        return frozenset(s.mine for s in self.sensors) | {m.id for m in self.mines}
