"""Named scenarios for the synthetic feed: what happens in the mine on top of normal production.

A :class:`Scenario` is data, not code. Its rows say what to do to which sensors; every time is a
fraction of the feed's duration, so one scenario plays at any ``--duration``:

- :class:`Excursion` — sensors of one kind and location move from their modelled value to
  ``peak`` (in the sensor's unit) and back along a trapezoid ``shape`` (rise starts, peak
  starts, peak ends, back; a fraction > 1 holds to the end). A gas excursion is carried by the
  air: a sensor downstream of the face sees it later by its distance over the area's air velocity
  (``simulators.model``). ``calibrating`` marks the readings ``status: calibrating`` (标校,
  standard gas on the sensor head only: not carried downstream, never an alarm). ``warns``: the
  trend early warning must fire on it.
- :class:`Fault` — one sensor misbehaves from ``at`` on: ``stuck`` (the value freezes),
  ``drift`` (the value creeps by ``value`` until the end; below the range it is negative drift,
  负漂), ``spike`` (one reading jumps to ``value``) or ``device_fault`` (until ``until``, the
  device reports ``status: fault`` and reads ``value``; a methane sensor guarding power-off
  makes the substation cut its area's power meanwhile: 故障闭锁).
- :class:`Outage` — the substation of the matched sensor sends nothing from ``at`` to ``until``.

The first row of a scenario picks the area: the mine's first sensor of that kind and location.
Every further row acts on the sensors of that same area (a row the area lacks is skipped); a
missing first row is an error (:func:`simulators.feed.generate` raises ``ValueError``).
``lockout_fails``: the area's feed sensor (馈电) stays live when power-off is required (the
interlock failed; otherwise the simulated substation cuts the feed). ``malformed``: that many
refused payloads (bad JSON, unknown sensor, unknown mine, …) are mixed into the feed.
``may_fire``: rules that may fire beyond what the ground truth lists (a trend warning on a
real rise of gas is no false alarm); every other rule must stay silent where it is not listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["SCENARIOS", "Excursion", "Fault", "Outage", "Scenario", "get_scenario"]

Shape = tuple[float, float, float, float]
HOLD = 9.0  # a shape fraction past the end of any feed: the change holds to the end


@dataclass(frozen=True, slots=True)
class Excursion:
    """Sensors of the area at ``kind``/``location`` moving to ``peak`` and back (module doc)."""

    kind: str
    location: str
    peak: float
    shape: Shape | None = None  # None: the scenario's shape
    calibrating: bool = False
    warns: bool = False


@dataclass(frozen=True, slots=True)
class Fault:
    """One sensor of the area misbehaving from ``at``: ``stuck``, ``drift``, ``spike`` or
    ``device_fault`` (the last until ``until``)."""

    kind: str
    location: str
    condition: str
    at: float
    value: float = 0.0
    until: float = HOLD

    def __post_init__(self) -> None:
        if self.condition not in ("stuck", "drift", "spike", "device_fault"):
            raise ValueError("fault condition must be stuck, drift, spike or device_fault: "
                             f"{self.condition!r}")


@dataclass(frozen=True, slots=True)
class Outage:
    """The substation of the area's sensor at ``kind``/``location`` silent over [at, until)."""

    kind: str
    location: str
    at: float
    until: float


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named story for the feed (module docstring); ``duration_s`` is its natural length."""

    name: str
    description: str
    duration_s: float = 600.0
    excursions: tuple[Excursion, ...] = ()
    faults: tuple[Fault, ...] = ()
    outages: tuple[Outage, ...] = ()
    shape: Shape = (0.25, 0.45, 0.55, 0.80)
    lockout_fails: bool = False
    malformed: int = 0
    may_fire: frozenset[str] = frozenset()


_RISE = frozenset({"trend"})  # a real rise of gas: an early warning is welcome, not required
_SCENARIOS = (
    Scenario(
        name="normal",
        description=(
            "Normal production (正常生产): every sensor reports at its own patrol period; "
            "methane follows the production cycle (cutting shifts raise it, the "
            "08:00-16:00 maintenance shift lowers it) and the area's ventilation, "
            "carried from T1 to T0 to T2; switches hold steady and no value comes near "
            "a limit — no alert may fire."),
    ),
    Scenario(
        name="methane-rise",
        description=(
            "Methane over limit at a longwall (瓦斯超限, 断电, 复电): T1 climbs past the 1.0 % "
            "alarm and the 1.5 % power-off limits to about 1.8 %, holds, and falls back"
            " below the 1.0 % restore limit; the air carries the gas to the upper "
            "corner T0 (about 1.3 %) and the return T2 (about 0.9 %, just under its 1.0"
            " % limit). The substation cuts the area's power: its feed sensor goes dead"
            " until methane is restored."),
        excursions=(Excursion("ch4", "longwall_face", 1.8),
                    Excursion("ch4", "longwall_upper_corner", 1.3),
                    Excursion("ch4", "longwall_return", 0.9)),
        may_fire=_RISE,
    ),
    Scenario(
        name="local-fan-stop",
        description=(
            "Local fan stop in a heading (局扇停风, 风电闭锁 failed): both local fans stop at "
            "25 % of the feed and restart at 75 %; air velocity in the heading falls to"
            " 0.1 m/s (below its minimum) and gas accumulates — T1 to about 2.2 %, T2 "
            "to about 1.8 % — but the heading's feed sensor stays live: feed "
            "abnormality (馈电异常) for as long as power-off is required."),
        excursions=(Excursion("local_fan", "heading_fan", 0.0, shape=(0.25, 0.2501, 0.75, 0.7501)),
                    Excursion("wind_speed", "heading_coal", 0.1, shape=(0.25, 0.27, 0.75, 0.77)),
                    Excursion("wind_speed", "heading_rock", 0.1, shape=(0.25, 0.27, 0.75, 0.77)),
                    Excursion("ch4", "heading_face", 2.2, shape=(0.25, 0.50, 0.75, 0.85)),
                    Excursion("ch4", "heading_return", 1.8, shape=(0.25, 0.50, 0.75, 0.85))),
        lockout_fails=True,
        may_fire=_RISE,
    ),
    Scenario(
        name="gas-outburst",
        description=(
            "Gas outburst at a heading face (煤与瓦斯突出): within seconds T1 jumps to about "
            "3.5 % and the heading's air velocity collapses to 0.4 m/s, then the gas "
            "decays over about two minutes (at the default 600 s); T2 sees the plume a "
            "little later at about 2.6 %."),
        excursions=(Excursion("ch4", "heading_face", 3.5),
                    Excursion("ch4", "heading_return", 2.6),
                    Excursion("wind_speed", "heading_coal", 0.4),
                    Excursion("wind_speed", "heading_rock", 0.4)),
        shape=(0.30, 0.305, 0.32, 0.50),
        may_fire=_RISE,
    ),
    Scenario(
        name="emission-increase",
        description=(
            "Slow gas emission increase at a longwall (瓦斯涌出异常, 4 h): T1 creeps from its"
            " baseline to about 1.2 % between 10 % and 90 % of the feed, crossing the "
            "1.0 % alarm late; T0 and T2 follow. The trend early warning on T1 must "
            "come at least 5 minutes before its alarm."),
        duration_s=4 * 3600.0,
        excursions=(Excursion("ch4", "longwall_face", 1.2, warns=True),
                    Excursion("ch4", "longwall_upper_corner", 0.95),
                    Excursion("ch4", "longwall_return", 0.85)),
        shape=(0.10, 0.90, HOLD, HOLD),
        may_fire=_RISE,
    ),
    Scenario(
        name="spontaneous-combustion",
        description=(
            "Spontaneous combustion in a longwall goaf (采空区自然发火, lignite: Dayan, 6 h): "
            "goaf CO creeps from a few ppm to about 60 ppm and goaf temperature from "
            "about 22 °C to 38 °C while goaf O2 falls to about 17 %; the upper corner "
            "and return CO follow to about 30 ppm. Trend warnings on the CO points must"
            " come at least 5 minutes before the 24 ppm alarm. Needs goaf points (the "
            "Qipanjing configuration has none)."),
        duration_s=6 * 3600.0,
        excursions=(Excursion("co", "goaf", 60.0, warns=True),
                    Excursion("temperature", "goaf", 38.0),
                    Excursion("o2", "goaf", 17.0),
                    Excursion("co", "longwall_upper_corner", 32.0, warns=True),
                    Excursion("co", "longwall_return", 28.0, warns=True)),
        shape=(0.10, 0.90, HOLD, HOLD),
        may_fire=_RISE,
    ),
    Scenario(
        name="sensor-drift",
        description=(
            "Sensor drift at a longwall (传感器漂移, 2 h): from 20 % of the feed the return "
            "sensor T2 creeps up by 0.35 % while T1 and T0 stay put, and the upper-"
            "corner sensor T0 drifts negative (负漂) by 0.6 %, below the bottom of its "
            "range."),
        duration_s=2 * 3600.0,
        faults=(Fault("ch4", "longwall_return", "drift", at=0.2, value=0.35),
                Fault("ch4", "longwall_upper_corner", "drift", at=0.2, value=-0.6)),
        may_fire=_RISE,
    ),
    Scenario(
        name="sensor-stuck",
        description=(
            "Stuck sensor (传感器死值): from 30 % of the feed the working-face sensor T1 "
            "repeats its last value while its neighbours keep moving."),
        duration_s=1800.0,
        faults=(Fault("ch4", "longwall_face", "stuck", at=0.3),),
    ),
    Scenario(
        name="sensor-spikes",
        description=(
            "Spikes (尖峰干扰): the upper-corner sensor T0 reads 3.2 %, 2.1 % and 0.95 % "
            "for one reading each at 30 %, 50 % and 70 % of the feed. The first two "
            "must raise the limit alerts as well as the sensor fault (fail-safe); the "
            "third only the fault."),
        faults=(Fault("ch4", "longwall_upper_corner", "spike", at=0.3, value=3.2),
                Fault("ch4", "longwall_upper_corner", "spike", at=0.5, value=2.1),
                Fault("ch4", "longwall_upper_corner", "spike", at=0.7, value=0.95)),
    ),
    Scenario(
        name="device-fault",
        description=(
            "A sensor reports its own fault (传感器故障, 故障闭锁): the working-face methane "
            "sensor T1 sends status fault, reading 0, from 40 % to 60 % of the feed. It "
            "guards the area's power, so the substation de-energizes the area (its feed "
            "sensor reads 0) until T1 reports clean again; the sensor fault is critical, "
            "and no limit alarm may fire."),
        faults=(Fault("ch4", "longwall_face", "device_fault", at=0.4, until=0.6),),
    ),
    Scenario(
        name="over-range",
        description=(
            "Over-range (超量程) at a heading face: methane climbs past the 4 % top of the"
            " catalytic sensor's range to about 4.6 % and back; every reading above the"
            " range is a sensor fault and counts as over the power-off limit. T2 "
            "follows to about 3 %."),
        excursions=(Excursion("ch4", "heading_face", 4.6),
                    Excursion("ch4", "heading_return", 3.0)),
        shape=(0.30, 0.40, 0.50, 0.60),
        may_fire=_RISE,
    ),
    Scenario(
        name="substation-silent",
        description=(
            "A substation goes silent (分站通讯中断): the substation of the first heading "
            "sends nothing from 30 % to 70 % of the feed, then reports again; every "
            "sensor on it is no-data for that time, the rest of the mine reports as "
            "usual."),
        outages=(Outage("ch4", "heading_face", at=0.3, until=0.7),),
    ),
    Scenario(
        name="calibration",
        description=(
            "A calibration session (标校) at a longwall face: standard gas of 2 % on T1 "
            "from 40 % to 52 % of the feed, every reading in it marked status "
            "calibrating; the value crosses the alarm and power-off limits but nothing "
            "may alarm, and the power stays on."),
        excursions=(Excursion("ch4", "longwall_face", 2.0, shape=(0.40, 0.42, 0.50, 0.52),
                              calibrating=True),),
    ),
    Scenario(
        name="malformed-payloads",
        description=(
            "A clean feed with 24 refused payloads mixed in: bad JSON, a wrong shape, "
            "unknown sensors, an unknown mine, string and overflowing values, a bad "
            "status, epoch-seconds timestamps — each must be rejected with its reason, "
            "and no alert may fire."),
        malformed=24,
    ),
)

SCENARIOS: Mapping[str, Scenario] = MappingProxyType({s.name: s for s in _SCENARIOS})


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; ``ValueError`` naming the known ones otherwise."""
    found = SCENARIOS.get(name)
    if found is None:
        raise ValueError(f"unknown scenario {name!r}: choose one of {', '.join(SCENARIOS)}")
    return found
