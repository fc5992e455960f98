"""The point state a dispatcher reads, decoded from the status bitmask (domain.md §4).

One word per sensor: 断电 power-off, 报警 alarm, 故障 fault, 标校 calibration, 正常 normal —
in that order of precedence, the most urgent bit wins — and 无数据 no data when the sensor sent
nothing recently (the table's status cell is empty). Fault covers a sensor fault (128), a
substation fault (16) and over-range (8: a saturated element's value is not a reading).

Grafana maps cell values to text and colour with value mappings, which match exact values, so
:func:`state_mappings` lists every combination of the bits that decide the state
(:data:`STATE_BITS`, 64 values); queries mask the status with it (``last("status") & 159``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from config.readings import Status

__all__ = ["NO_DATA", "STATES", "STATE_BITS", "PointState", "point_state", "state_mappings"]


@dataclass(frozen=True, slots=True)
class PointState:
    """A state as shown: Chinese and English words and a Grafana colour."""

    name: str
    name_en: str
    color: str


POWER_OFF = PointState("断电", "power-off", "dark-red")
ALARM = PointState("报警", "alarm", "red")
FAULT = PointState("故障", "fault", "purple")
CALIBRATION = PointState("标校", "calibration", "blue")
NORMAL = PointState("正常", "normal", "green")
NO_DATA = PointState("无数据", "no data", "gray")
STATES = (POWER_OFF, ALARM, FAULT, CALIBRATION, NORMAL, NO_DATA)

_FAULT_BITS = Status.SENSOR_FAULT | Status.SUBSTATION_FAULT | Status.OVER_RANGE
# (bits, state) in precedence order: the first whose bits are set names the state.
_PRECEDENCE = ((Status.POWER_OFF, POWER_OFF), (Status.ALARM, ALARM), (_FAULT_BITS, FAULT),
               (Status.CALIBRATION, CALIBRATION))
STATE_BITS = int(Status.POWER_OFF | Status.ALARM | _FAULT_BITS | Status.CALIBRATION)


def point_state(status: int | None) -> PointState:
    """The state of a reading's status bitmask; None (no recent reading) is 无数据."""
    if status is None:
        return NO_DATA
    return next((state for bits, state in _PRECEDENCE if status & bits), NORMAL)


def _label(state: PointState) -> str:
    return f"{state.name} {state.name_en}"


def state_mappings() -> list[dict[str, Any]]:
    """Grafana value mappings: every masked status value, and null, to its state."""
    values = sorted({status & STATE_BITS for status in range(256)})
    options = {str(v): {"text": _label(point_state(v)), "color": point_state(v).color,
                        "index": i} for i, v in enumerate(values)}
    return [{"type": "value", "options": options},
            {"type": "special", "options": {"match": "null", "result": {
                "text": _label(NO_DATA), "color": NO_DATA.color, "index": len(values)}}}]
