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
    "BrokerAccount",
    "BrokerConfig",
    "ConsoleConfig",
    "ConsoleUser",
    "Deployment",
    "DetectorConfig",
    "HttpConfig",
    "IngestConfig",
    "InhibitConfig",
    "Limits",
    "Mine",
    "MineNetworking",
    "NetworkingConfig",
    "Receiver",
    "Registry",
    "Route",
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
    code: str = ""  # the substation code networked to the regulator (FZDY, CDDY)


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
    point_code: str = ""  # 测点编码 networked to the regulator (networking/, MT/T 1201.1)

    @property
    def key(self) -> str:
        """``mine/sensor``: unique across all mines."""
        return f"{self.mine}/{self.id}"

    @property
    def is_switch(self) -> bool:
        return self.kind in SWITCH_KINDS


@dataclass(frozen=True, slots=True)
class MineNetworking:
    """The mine as the regulator's platform knows it (``[networking]`` of a mine file):
    矿井编码 and the monitoring system's model, name and manufacturer (MT/T 1201.1 headers)."""

    code: str = ""
    system_model: str = ""
    system_name: str = ""
    manufacturer: str = ""


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
    networking: MineNetworking = MineNetworking()


# Roles of broker accounts (``[[broker.accounts]]``) and what each may do on the broker; the
# ACL that ``jinmei broker config`` generates is the only place these turn into topics.
ACCOUNT_ROLES = ("gateway", "dispatcher", "regulator")


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """A broker account other than jinmei's own (``[[broker.accounts]]``).

    ``gateway``: a mine's substations publish its telemetry (``mines`` holds exactly one mine;
    ``substations`` narrows it to those substations' topics) and read nothing. ``dispatcher``
    and ``regulator``: read the alerts and status of ``mines`` (a regulator with no ``mines``:
    every configured mine) and write nothing. The password is never in the deployment file.
    """

    name: str
    role: str
    mines: tuple[str, ...] = ()
    substations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the MQTT broker is, how every jinmei client authenticates to it (config/broker.py)
    and how the ingestor holds its session (see ingest/mqtt.py).

    ``ca_file`` verifies the broker's certificate (``mqtts://``; empty: the system's CAs);
    ``cert_file`` and ``key_file`` authenticate jinmei by client certificate; ``username`` with
    ``password`` (only ever from ``JINMEI_MQTT_PASSWORD``) by login. ``accounts`` are the other
    accounts of the deployment, for the broker configuration jinmei generates.
    """

    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "jinmei-ingest"
    protocol: str = "5"
    username: str = ""
    password: str = field(default="", repr=False)
    in_flight: int = 10_000
    keepalive_s: int = 30
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    accounts: tuple[BrokerAccount, ...] = ()


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where readings go (``sqlite:///path`` or ``influxdb://host:port?org=..&bucket=..``)."""

    url: str = "sqlite:///var/jinmei/readings.db"
    influx_token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """How the ingest worker batches and what it refuses, and when jinmei calls itself blind.

    ``batch_max_messages``: the most messages one batch (one commit) takes; a batch holds
    what arrived while the worker was busy, so it grows with the load by itself.
    ``batch_wait_ms`` (jinmei's own): how long the worker waits for a first message when none
    has arrived before it does its periodic work; never a wait for a batch to fill.
    ``stall_s`` (jinmei's own): a worker thread that has work and does not come back to its
    loop for this long is stalled, and the service exits to be restarted — three times the
    10 s bound of any one wait in a turn (SQLite busy, webhook, InfluxDB request).
    ``offline_after_s``: broker lost or store failing this long raises ``monitoring_offline``
    — two AQ 6201-2019 patrol periods (≤ 30 s), so a broker restart of seconds does not page.
    ``store_fault_after_s``: a store failing this long raises ``store_fault`` — one patrol
    period, before monitoring_offline.
    ``workers``: how many processes share the mines (:mod:`jinmei.workers`); 0 (the default)
    means one per core, and never more than there are mines; 1 keeps everything in one process.
    """

    state_dir: str = "var/jinmei"
    batch_max_messages: int = 1_000
    batch_wait_ms: int = 50
    max_future_s: float = 300.0
    stall_s: float = 30.0
    offline_after_s: float = 60.0
    store_fault_after_s: float = 30.0
    quarantine_after: int = 3  # deliveries; see the sample configuration
    workers: int = 0  # processes; 0: one per core (jinmei.workers)


@dataclass(frozen=True, slots=True)
class Receiver:
    """A named destination of alert notifications (dispatcher desk, safety officer, regulator).

    ``channel`` is ``webhook``, ``email``, ``sms`` or ``mqtt``; ``options`` holds that channel's
    keys as written (checked by the loader); ``secret`` is read from the environment variable
    the file names (``secret_env``), never from the file.
    """

    name: str
    channel: str
    options: tuple[tuple[str, object], ...] = ()
    secret: str = field(default="", repr=False)

    def option(self, key: str, default: object = None) -> object:
        return dict(self.options).get(key, default)


@dataclass(frozen=True, slots=True)
class Route:
    """Alerts matching every non-empty matcher go to ``receivers``; a critical one not
    acknowledged within ``escalate_after_s`` is re-sent and also goes to ``escalate_to``."""

    receivers: tuple[str, ...]
    mines: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    escalate_after_s: float | None = None
    escalate_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InhibitConfig:
    """Which inhibition rules hold back notifications (``[alerts.inhibit]``, all on by
    default; alerts.inhibit says what each does). Inhibited alerts are still recorded and
    published; nothing ever inhibits a methane power-off."""

    power_off_over_alarm: bool = True
    substation_over_points: bool = True
    area_alarm_over_warnings: bool = True


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Where alert transitions go besides the alert record (always kept), and when.

    ``mqtt`` publishes every transition on ``jinmei/<mine>/alerts``; ``receivers`` and
    ``routes`` drive notifications through the durable outbox. Times in seconds.
    ``supersede_warnings``: a point's open limit alarm or power-off ends its trend, level-shift
    and mismatch warnings and keeps new ones from opening; ``supersede_warnings_under_power_off``:
    an area's open power-off keeps the same gas's early warnings at its other points from
    opening; ``supersede_level_shifts``: an open rising warning of a gas in an area keeps a
    further level shift of that gas there from opening (alerts.supersede, all on by default).
    """

    mqtt: bool = True
    group_wait_s: float = 10.0
    group_interval_s: float = 60.0
    repeat_interval_s: float = 3600.0
    resolve_hold_s: float = 30.0
    for_s: tuple[tuple[str, float], ...] = ()
    retry_max_s: float = 300.0
    receivers: tuple[Receiver, ...] = ()
    routes: tuple[Route, ...] = ()
    supersede_warnings: bool = True
    supersede_warnings_under_power_off: bool = True
    supersede_level_shifts: bool = True
    inhibit: InhibitConfig = InhibitConfig()


# Fastest change a sensor of each kind can really show, in its unit per second: a reading that
# implies more is a spike (sensor_fault), not the air. Kinds not named are never checked.
DEFAULT_MAX_RATE: tuple[tuple[str, float], ...] = (
    ("ch4", 1.0), ("co", 100.0), ("co2", 1.0), ("h2s", 20.0), ("o2", 1.0),
    ("temperature", 1.0), ("wind_speed", 3.0))

# Jump of a one-reading spike, in the kind's unit: a reading that leaves its predecessor by more
# and is back at the next reading is a spike (sensor_fault). jinmei's own values, no statute:
# methane 0.25 %, a quarter of the 1.0 % alarm limit and over ten times the feed's reading-to-
# reading noise — a level of air does not leap that far for one 10 s period and straight back
# (the catalytic head's own response smooths a real puff over several readings), while an
# electrical disturbance does. Measured: every spike of the scenarios found, none on real gas
# or clean feeds (bench/RESULTS.md). Kinds not named are never checked (CO may truly blip past
# a passing diesel engine).
DEFAULT_SPIKE_JUMP: tuple[tuple[str, float], ...] = (("ch4", 0.25),)

# Per kind, how long an unchanged value may stand before it is stuck (sensor_fault); kinds not
# named use ``stuck_s``, which also bounds every kind (the shorter of the two applies). Methane
# 900 s: live methane in a working mine moves by a resolution step within minutes, and a frozen
# methane reading hides a power-off (simulators/truth.py: 15 min).
DEFAULT_STUCK_S_BY_KIND: tuple[tuple[str, float], ...] = (("ch4", 900.0),)

# Per kind, how far a sensor may creep away from its air-path neighbours within
# ``drift_window_s`` before it is drifting (sensor_fault/drift), in the kind's unit; kinds not
# named are never judged. jinmei's own, no statute: methane 0.2 %, twice the ±0.1 % basic error
# cited for catalytic sensors in 0-1 % (detectors/drift.py says why).
DEFAULT_DRIFT_BY_KIND: tuple[tuple[str, float], ...] = (("ch4", 0.2),)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Settings of the detectors beyond the statutory limits (``[detectors]``; what each one
    flags is in detectors/suite.py). Times in seconds."""

    history_s: float = 3600.0
    trend_window_s: float = 300.0
    trend_horizon_s: float = 600.0
    trend_short_window_s: float = 90.0
    trend_eval_s: float = 10.0
    level_shift_recent_s: float = 60.0
    level_shift_reference_s: float = 600.0
    level_shift_sigmas: float = 6.0
    level_shift_min_fraction: float = 0.2
    face_return_tolerance: float = 0.5
    stuck_s: float = 3600.0
    stuck_s_by_kind: tuple[tuple[str, float], ...] = DEFAULT_STUCK_S_BY_KIND
    max_rate: tuple[tuple[str, float], ...] = DEFAULT_MAX_RATE
    spike_jump: tuple[tuple[str, float], ...] = DEFAULT_SPIKE_JUMP
    drift_window_s: float = 5400.0  # jinmei's own: the production cycle's ramps are not a creep
    drift_by_kind: tuple[tuple[str, float], ...] = DEFAULT_DRIFT_BY_KIND
    no_data_periods: float = 3.0
    feed_response_s: float = 2.0


@dataclass(frozen=True, slots=True)
class NetworkingConfig:
    """Regulator networking (``[networking]`` of the deployment; see networking/): where the
    data files go (``sftp://user@host[:port]/dir``, ``ftps://…`` — FTP with explicit TLS — or,
    only with ``insecure``, plain ``ftp://…``; the password from the environment variable
    ``password_env``), their text encoding and how often CDSS is written; ``known_hosts``: the
    OpenSSH known_hosts file that verifies an SFTP server's host key (empty:
    ``~/.ssh/known_hosts``); ``ca_file``: the CA that verifies an FTPS server's certificate
    (empty: the system's CAs)."""

    enabled: bool = False
    url: str = ""
    password: str = field(default="", repr=False)
    encoding: str = "utf-8"
    cdss_period_s: float = 10.0
    retry_max_s: float = 300.0
    system_code: str = "01"
    known_hosts: str = ""
    ca_file: str = ""
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The service's HTTP endpoint (``[http]``): health, readiness and Prometheus metrics (see
    jinmei/http.py), and the console (``[console]``). ``listen`` is ``host:port``; empty turns
    it off."""

    listen: str = "127.0.0.1:9108"


ROLES = ("dispatcher", "regulator", "admin")


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """An account of the dispatcher console (``[[console.users]]``; see jinmei/console/).

    ``role``: ``dispatcher`` (acknowledges, notes, cause and action, silences — of ``mines``
    only), ``regulator`` (reads, never writes) or ``admin`` (everything, every mine).
    ``mines``: the mines the account may see; empty means all (not allowed for a dispatcher).
    ``password_hash``: ``scrypt$n=…,r=…,p=…$salt$hash`` as ``jinmei users add`` prints it —
    the password itself is never stored."""

    name: str
    role: str
    password_hash: str
    mines: tuple[str, ...] = ()

    def sees(self, mine: str) -> bool:
        return not self.mines or mine in self.mines

    def acts_on(self, mine: str) -> bool:
        """May acknowledge, note, enter cause and action and silence alerts of ``mine``."""
        return self.role != "regulator" and self.sees(mine)


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The dispatcher console on the ``[http]`` endpoint (``[console]``): its accounts and how
    long a login lasts (``session_max_s``, default 12 h: one shift and its hand-over — jinmei's
    own). No users: no console."""

    session_max_s: float = 43200.0
    users: tuple[ConsoleUser, ...] = ()


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
    detectors: DetectorConfig = field(default_factory=DetectorConfig)
    networking: NetworkingConfig = field(default_factory=NetworkingConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)

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
