"""Inhibition: an open alert that explains another one holds back the other's notification.

Two rules (issue 5), both recorded as the reason when they apply:

- a ``limit_power_off`` episode of a sensor inhibits the ``limit_alarm`` of the same sensor
  (the power-off notification already says more);
- a substation's ``no_data`` episode (condition ``substation_silent``, raised on one sensor
  of the substation) inhibits the per-sensor ``no_data`` and ``limit_alarm`` alerts of every
  sensor wired to that substation (one lost substation, one notification).

Nothing inhibits a ``limit_power_off``: the safety floor. Inhibited alerts are still recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

from alerts.wire import Alert
from config.model import Registry

__all__ = ["Inhibitor"]

_SUBSTATION_SILENT = "substation_silent"
_BELOW_SUBSTATION = frozenset({"no_data", "limit_alarm"})


class Inhibitor:
    """``mutes(alert, open_alerts)``: the reason an open alert inhibits ``alert``, or None."""

    def __init__(self, registry: Registry) -> None:
        self._substation = {(s.mine, s.id): s.substation for s in registry.sensors}

    def mutes(self, alert: Alert, open_alerts: Sequence[Alert]) -> str | None:
        if alert.rule == "limit_power_off":
            return None
        substation = self._substation.get((alert.mine, alert.sensor))
        for source in open_alerts:
            if source.id == alert.id or source.mine != alert.mine:
                continue
            if (alert.rule == "limit_alarm" and source.rule == "limit_power_off"
                    and source.sensor == alert.sensor):
                return f"inhibited by power-off {source.id} of the same sensor"
            if (source.rule == "no_data" and source.condition == _SUBSTATION_SILENT
                    and alert.rule in _BELOW_SUBSTATION and alert.condition != _SUBSTATION_SILENT
                    and substation is not None
                    and self._substation.get((source.mine, source.sensor)) == substation):
                return f"inhibited by no_data {source.id} of substation {substation}"
        return None
