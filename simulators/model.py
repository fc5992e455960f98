"""The physical model behind the synthetic feed: what each sensor reads in a mine at work.

Per sensor kind and location (:data:`KIND_MODELS`): a baseline drawn from a range, the
stationary σ of the sensor's own noise, and the reading's resolution (0.01 % CH4, 1 ppm CO …).
Per mine (:data:`PROFILES`, by mine id; other ids get :data:`DEFAULT_PROFILE`): how gassy the
coal is and how warm its goaf — Dayan is lignite, low in gas but oxidising (spontaneous
combustion), Qipanjing coking coal with a higher gas emission.

Per working area (a face or heading, ``Sensor.area``), two slow AR(1) signals shared by its
sensors: the gas ``emission`` of the coal (relative, ±20 % at most) and the ``airflow`` of the
ventilation (relative, ±5 % at most). Methane downstream of the face reads
baseline × production × (1 + emission) / (1 + airflow); air velocity reads baseline ×
(1 + airflow) — so when ventilation changes, wind and gas move in opposite directions.
``production`` follows the shifts in the mine's local time: cutting shifts 1.0, the 08:00-16:00
maintenance shift (检修班) 0.6, with half-hour ramps. Air carries gas: a sensor at
:data:`DISTANCE_M` metres downstream of the face sees the face's emission later by distance
over the area's mean air velocity (T1 → T0 → T2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

__all__ = ["AIRFLOW_BOUND", "DEFAULT_PROFILE", "DISTANCE_M", "EMISSION_BOUND", "EMITTING",
           "KIND_MODELS", "MAINTENANCE", "PROFILES", "KindModel", "Profile", "area_signal",
           "production"]


@dataclass(frozen=True, slots=True)
class KindModel:
    """Baseline drawn uniformly from [low, high]; sensor noise of stationary σ; resolution."""

    low: float
    high: float
    sigma: float
    resolution: float


@dataclass(frozen=True, slots=True)
class Profile:
    """How a mine's coal behaves: methane baselines × ``ch4_scale``; goaf CO and temperature."""

    ch4_scale: float
    goaf_co: tuple[float, float]
    goaf_temperature: tuple[float, float]


def _steady(value: float) -> KindModel:
    return KindModel(value, value, 0.0, 1.0)


_CH4 = 0.01  # ch4 noise σ and resolution, % by volume
KIND_MODELS: dict[tuple[str, str], KindModel] = {
    ("ch4", "*"): KindModel(0.05, 0.20, _CH4, _CH4),
    **{("ch4", loc): KindModel(0.20, 0.40, _CH4, _CH4)  # the face gives off the gas
       for loc in ("longwall_face", "longwall_upper_corner", "heading_face", "shearer")},
    **{("ch4", loc): KindModel(0.15, 0.35, _CH4, _CH4)
       for loc in ("longwall_return", "heading_return", "district_return")},
    ("ch4", "main_return"): KindModel(0.25, 0.35, _CH4, _CH4),
    **{("ch4", loc): KindModel(0.05, 0.10, _CH4, _CH4)  # fresh air: little methane yet
       for loc in ("longwall_intake", "series_intake", "face_intake")},
    ("co", "*"): KindModel(0.0, 3.0, 0.5, 1.0),
    ("co", "goaf"): KindModel(3.0, 6.0, 0.5, 1.0),  # replaced by the mine's profile
    ("o2", "*"): KindModel(20.6, 20.9, 0.05, 0.1),
    ("o2", "goaf"): KindModel(19.5, 20.5, 0.05, 0.1),
    ("co2", "*"): KindModel(0.05, 0.30, 0.01, 0.01),
    ("h2s", "*"): KindModel(0.0, 0.5, 0.1, 0.1),
    ("temperature", "*"): KindModel(18.0, 24.0, 0.1, 0.1),
    ("temperature", "goaf"): KindModel(20.0, 24.0, 0.1, 0.1),  # replaced by the mine's profile
    ("wind_speed", "*"): KindModel(1.5, 2.5, 0.05, 0.01),
    ("wind_speed", "main_airway"): KindModel(3.0, 5.0, 0.05, 0.01),
    ("wind_speed", "fan_drift"): KindModel(8.0, 10.0, 0.05, 0.01),
    **{(kind, "*"): _steady(1.0)  # running / live / air flowing
       for kind in ("local_fan", "main_fan", "feed", "air_duct")},
    **{(kind, "*"): _steady(0.0)  # closed / no smoke / not tripped
       for kind in ("air_door", "smoke", "power_off_relay")},
}

DEFAULT_PROFILE = Profile(ch4_scale=1.0, goaf_co=(3.0, 6.0), goaf_temperature=(20.0, 24.0))
PROFILES: dict[str, Profile] = {
    "dayan": Profile(ch4_scale=0.5, goaf_co=(4.0, 8.0), goaf_temperature=(22.0, 26.0)),
    "qipanjing": Profile(ch4_scale=1.4, goaf_co=(1.0, 3.0), goaf_temperature=(20.0, 23.0)),
}

# Methane here comes from the coal being cut (intakes and chambers only carry what reaches them).
EMITTING = frozenset({"longwall_face", "longwall_upper_corner", "longwall_return", "shearer",
                      "heading_face", "heading_return", "district_return", "main_return"})
# Metres downstream of the face along the air: T1 at the face, T0 at the corner, T2 in the return.
DISTANCE_M = {"longwall_upper_corner": 20.0, "longwall_return": 60.0, "heading_return": 50.0}
MAINTENANCE = 0.6  # production factor of the maintenance shift: no cutting, less fresh coal face
EMISSION_BOUND = 0.2
AIRFLOW_BOUND = 0.05
_EMISSION = (300.0, 0.08)  # correlation time (s) and σ of the relative emission
_AIRFLOW = (120.0, 0.02)
_HOUR_MS = 3_600_000
# Local hour → production factor: maintenance 08:00-16:00, half-hour ramps at each change.
_SHIFT_HOURS = np.array([0.0, 7.75, 8.25, 15.75, 16.25, 24.0])
_SHIFT_FACTOR = np.array([1.0, 1.0, MAINTENANCE, MAINTENANCE, 1.0, 1.0])


def production(local_ms: np.ndarray) -> np.ndarray:
    """Production factor at each local wall time (epoch ms shifted by the mine's UTC offset)."""
    hours = (local_ms % (24 * _HOUR_MS)) / _HOUR_MS
    return np.interp(hours, _SHIFT_HOURS, _SHIFT_FACTOR)


def area_signal(rng: np.random.Generator, areas: int, seconds: int,
                which: str) -> np.ndarray:
    """``areas`` × ``seconds`` relative fluctuation, one sample a second, AR(1) and bounded.

    ``which`` is ``"emission"`` or ``"airflow"``; each series starts in its stationary state.
    """
    tau_s, sigma = _EMISSION if which == "emission" else _AIRFLOW
    bound = EMISSION_BOUND if which == "emission" else AIRFLOW_BOUND
    phi = math.exp(-1.0 / tau_s)
    shocks = rng.standard_normal((areas, seconds)) * sigma * math.sqrt(1 - phi**2)
    start = rng.standard_normal((areas, 1)) * sigma * phi  # lfilter's state: y[-1] × phi
    series = lfilter([1.0], [1.0, -phi], shocks, axis=1, zi=start)[0]
    return np.clip(series, -bound, bound)
