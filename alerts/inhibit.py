"""Inhibition: an open alert that explains another one holds back the other's notification.

Three rules, each on by default and switched in ``[alerts.inhibit]``, recorded as the reason
when they apply:

- ``power_off_over_alarm`` (issue 5): a ``limit_power_off`` episode of a sensor inhibits the
  ``limit_alarm`` of the same sensor (the power-off notification already says more);
- ``substation_over_points`` (issue 5): a substation's ``no_data`` episode (condition
  ``substation_silent``, raised on one sensor of the substation) inhibits the per-sensor
  ``no_data`` and ``limit_alarm`` alerts of every sensor wired to that substation (one lost
  substation, one notification);
- ``area_alarm_over_warnings`` (issue 17): an open limit alarm or power-off (severity alarm or
  critical: not the ``warning_high`` pre-warning limit) in an area — a working face or heading,
  ``Sensor.area`` — inhibits the early warnings (:data:`EARLY_WARNINGS`: trend, level shift,
  face/return mismatch) of sensors of the same kind in that area. The dispatcher is told of the
  alarm, which is the story of that gas there; the warnings around it at the other points of
  the area are the same gas moving, and a flood of them teaches people to ignore warnings. Only
  the same kind: a CO or air-velocity alarm does not tell a methane trend's story. Such a
  warning carries ``inhibited_by`` (the alarm's id) in the record and on
  ``jinmei/<mine>/alerts``, and stays held back from receivers for its whole episode, even
  past the alarm's close: it began as part of the alarm's story, and told minutes later it
  would be stale noise after the all-clear. A rise still going on after the close is a new
  firing of the detector (a new episode) or the point's own limit alarm. A warning that fired
  before the alarm but still waited in its group (``group_wait_s``) when the alarm opened is
  held back the same way (alerts.notify): receivers get the alarm, not the warning of a few
  seconds before it. Under an area's open *power-off* the same gas's warnings at its other
  points do not open at all (``[alerts] supersede_warnings_under_power_off``, alerts.supersede),
  so this rule marks those of an alarm without power-off; those a power-off finds already open
  are held back from receivers all the same.

Nothing inhibits a ``limit_power_off``: the safety floor. Inhibited alerts are still recorded and
published; only notifications to receivers are held back.
"""

from __future__ import annotations

from collections.abc import Sequence

from alerts.wire import Alert
from config.model import InhibitConfig, Registry

__all__ = ["EARLY_WARNINGS", "Inhibitor", "is_alarm", "is_early_warning"]

_SUBSTATION_SILENT = "substation_silent"
_BELOW_SUBSTATION = frozenset({"no_data", "limit_alarm"})
# The early warnings of detectors/trend.py: conditions of rule ``trend``.
EARLY_WARNINGS = frozenset({"trend_high", "trend_low", "level_shift", "face_return_mismatch"})
_LIMIT_RULES = frozenset({"limit_alarm", "limit_power_off"})


def is_alarm(rule: str, severity: str) -> bool:
    """A statutory limit alarm or power-off in force (the pre-warning limit is not one)."""
    return rule in _LIMIT_RULES and severity != "warning"


def is_early_warning(rule: str, condition: str) -> bool:
    return rule == "trend" and condition in EARLY_WARNINGS


class Inhibitor:
    """``mutes(alert, open_alerts)``: the reason an open alert inhibits ``alert``, or None."""

    def __init__(self, registry: Registry, rules: InhibitConfig | None = None) -> None:
        self.rules = rules or InhibitConfig()
        self._substation = {(s.mine, s.id): s.substation for s in registry.sensors}
        self._area = {(s.mine, s.id): s.area for s in registry.sensors}

    def mutes(self, alert: Alert, open_alerts: Sequence[Alert]) -> str | None:
        if alert.rule == "limit_power_off":
            return None
        if (alarm := self.area_alarm(alert, open_alerts)) is not None:
            return (f"inhibited by {alarm.rule} {alarm.id} of {alarm.sensor} in area "
                    f"{self._area.get((alert.mine, alert.sensor), '')}")
        substation = self._substation.get((alert.mine, alert.sensor))
        for source in open_alerts:
            if source.id == alert.id or source.mine != alert.mine:
                continue
            if (self.rules.power_off_over_alarm and alert.rule == "limit_alarm"
                    and source.rule == "limit_power_off" and source.sensor == alert.sensor):
                return f"inhibited by power-off {source.id} of the same sensor"
            if (self.rules.substation_over_points and source.rule == "no_data"
                    and source.condition == _SUBSTATION_SILENT
                    and alert.rule in _BELOW_SUBSTATION and alert.condition != _SUBSTATION_SILENT
                    and substation is not None
                    and self._substation.get((source.mine, source.sensor)) == substation):
                return f"inhibited by no_data {source.id} of substation {substation}"
        return None

    def area_alarm(self, alert: Alert, open_alerts: Sequence[Alert]) -> Alert | None:
        """The open alarm or power-off whose area inhibits this firing early warning (the
        earliest one), or None."""
        if (not self.rules.area_alarm_over_warnings or alert.state != "firing"
                or not is_early_warning(alert.rule, alert.condition)):
            return None
        area = self._area.get((alert.mine, alert.sensor))
        if not area:
            return None
        return next((a for a in open_alerts
                     if is_alarm(a.rule, a.severity) and a.mine == alert.mine
                     and a.kind == alert.kind and self._area.get((a.mine, a.sensor)) == area),
                    None)
