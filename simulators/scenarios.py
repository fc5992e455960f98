"""Named scenarios for the synthetic feed: what happens in the mine on top of normal noise.

A :class:`Scenario` is data, not code: a list of :class:`Excursion` rows, each lifting one
sensor of one working area from its baseline to a peak value along one shared trapezoid
``shape`` (fractions of the feed's duration: rise starts, peak starts, peak ends, back to
baseline). The first row picks the area — the mine's first sensor of that kind at that
location — and every further row follows in that same area, late by ``delay_periods`` of its
own reporting period (the transport delay of air from one sensor to the next). A further row
whose sensor the area lacks is skipped; a missing first row is an error
(:func:`simulators.feed.generate` raises ``ValueError``).

``simulators.feed`` turns a scenario into messages (``generate``) and into the alerts it must
and must not raise (``truth``). Scenarios: ``normal`` and ``methane-rise``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["SCENARIOS", "Excursion", "Scenario", "get_scenario"]


@dataclass(frozen=True, slots=True)
class Excursion:
    """One sensor of the scenario's area rising to ``peak`` (in the sensor's unit) and back."""

    kind: str
    location: str
    peak: float
    delay_periods: int = 0


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named story for the feed; ``shape`` is (rise, peak from, peak to, back) as fractions."""

    name: str
    description: str
    excursions: tuple[Excursion, ...] = ()
    shape: tuple[float, float, float, float] = (0.25, 0.45, 0.55, 0.80)


_SCENARIOS = (
    Scenario(
        name="normal",
        description=(
            "Normal production (正常生产): every sensor reports at its own patrol period, "
            "gases, temperature and air velocity wander around realistic baselines for their "
            "kind and location with autocorrelated noise, switches (fans, feed) hold steady, "
            "and no value comes near any limit — no alert may fire."
        ),
    ),
    Scenario(
        name="methane-rise",
        description=(
            "Methane over limit at a longwall (瓦斯超限, 断电): the working-face sensor T1 climbs "
            "from its baseline past the 1.0 % alarm and the 1.5 % power-off limits to about "
            "1.8 %, holds, then falls back below the 1.0 % restore limit to baseline; the upper "
            "corner T0 (上隅角) follows two readings later to about 1.3 % and the return airway "
            "T2 (回风巷) four readings later to about 0.9 %, just under its 1.0 % limit."
        ),
        excursions=(
            Excursion("ch4", "longwall_face", peak=1.8),
            Excursion("ch4", "longwall_upper_corner", peak=1.3, delay_periods=2),
            Excursion("ch4", "longwall_return", peak=0.9, delay_periods=4),
        ),
    ),
)

SCENARIOS: Mapping[str, Scenario] = MappingProxyType({s.name: s for s in _SCENARIOS})


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; ``ValueError`` naming the known ones otherwise."""
    found = SCENARIOS.get(name)
    if found is None:
        raise ValueError(f"unknown scenario {name!r}: choose one of {', '.join(SCENARIOS)}")
    return found
