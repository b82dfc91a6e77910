"""Friction hotspots: drift detection per page type and step.

Each finished page visit is one observation for its key (``page_type`` or
``page_type/step``): 1 when the visit had friction or the session was
abandoned on it, 0 otherwise. An ADWIN detector per key watches that rate.
When ADWIN reports a change *upwards* of at least
``hotspot_min_rate_increase`` (absolute), the key opens an incident and one
aggregate ``friction_hotspot`` alert is raised. ADWIN's own estimate still
mixes old data right after a cut, so the size of the change is measured as
the mean of the visits *after* the detection (at least
:data:`CONFIRM_VISITS` of them, within :data:`ARM_VISITS`) against the mean
of the old sub-window that ADWIN dropped, which is the rate before the
change. The incident closes (the hysteresis) when a fast exponentially
weighted rate (~10 visits) falls back to halfway between the two levels.

References
----------
Bifet and Gavaldà (2007), "Learning from time-changing data with adaptive
windowing", SDM (ADWIN); River's ``drift.ADWIN``.
"""

from __future__ import annotations

from dataclasses import dataclass

from river import drift

from detectors.config import DetectorConfig

OVERFLOW_KEY = "other"
#: Smoothing of the fast problem rate (~10 visits).
FAST_ALPHA = 0.1
#: Visits after an ADWIN detection during which the increase may be confirmed.
ARM_VISITS = 50
#: Visits after the detection whose mean confirms the increase: with 10
#: visits the standard error of a rate near 0.5 is 0.16/sqrt(10/1) ~ 0.05,
#: a third of the default minimum increase.
CONFIRM_VISITS = 10


@dataclass(frozen=True, slots=True)
class HotspotFinding:
    """A newly opened incident: the rate before the change and now (0-1),
    visits seen, and the incident's episode number for this key."""

    key: str
    rate_before: float
    rate_now: float
    visits: int
    episode: int


class _KeyState:
    __slots__ = (
        "adwin",
        "armed_until",
        "episode",
        "fast",
        "incident",
        "last_alert",
        "level_before",
        "since_n",
        "since_sum",
        "visits",
    )

    def __init__(self, delta: float) -> None:
        self.adwin = drift.ADWIN(delta=delta)
        self.visits = 0
        self.episode = 0
        self.incident = False
        self.level_before = 0.0
        self.last_alert = 0
        self.fast = 0.0
        self.armed_until = 0
        self.since_n = 0
        self.since_sum = 0.0


class HotspotMonitor:
    """ADWIN per key on the problem rate of page visits.

    >>> m = HotspotMonitor(DetectorConfig(hotspot_min_visits=30))
    >>> found = [m.observe("checkout/2", i % 10 == 0, 1000 * i) for i in range(600)]
    >>> found = [m.observe("checkout/2", i % 10 < 6, 1000 * (600 + i)) for i in range(300)]
    >>> hits = [f for f in found if f]
    >>> len(hits), hits[0].rate_before < 0.2 < 0.4 < hits[0].rate_now
    (1, True)
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.delta = config.hotspot_delta
        self.min_increase = config.hotspot_min_rate_increase
        self.min_visits = config.hotspot_min_visits
        self.max_keys = config.hotspot_max_keys
        self.cooldown = config.hotspot_cooldown_ms
        self.keys: dict[str, _KeyState] = {}

    def observe(self, key: str, problem: bool, ts: int) -> HotspotFinding | None:
        """Add one finished visit; return a finding when an incident opens."""
        state = self.keys.get(key)
        if state is None:
            if len(self.keys) >= self.max_keys:
                key = OVERFLOW_KEY
                state = self.keys.get(key)
            if state is None:
                state = self.keys[key] = _KeyState(self.delta)
        x = 1.0 if problem else 0.0
        if state.visits == 0:
            state.fast = x
        adwin = state.adwin
        width_before = adwin.width
        total_before = adwin.estimation * width_before
        adwin.update(x)
        state.visits += 1
        state.fast += FAST_ALPHA * (x - state.fast)
        if state.incident:
            if state.fast <= state.level_before + self.min_increase / 2:
                state.incident = False
            return None
        if state.visits <= state.armed_until:
            state.since_n += 1
            state.since_sum += x
        if adwin.drift_detected and state.armed_until < state.visits:
            dropped = width_before + 1 - adwin.width
            if dropped > 0:
                total_dropped = total_before + x - adwin.estimation * adwin.width
                state.level_before = min(max(total_dropped / dropped, 0.0), 1.0)
                state.armed_until = state.visits + ARM_VISITS
                state.since_n, state.since_sum = 1, x
        if state.visits > state.armed_until or state.since_n < CONFIRM_VISITS:
            return None
        rate_since = state.since_sum / state.since_n
        if (
            state.visits >= self.min_visits
            and rate_since - state.level_before >= self.min_increase
            and (state.episode == 0 or ts - state.last_alert >= self.cooldown)
        ):
            state.incident = True
            state.armed_until = 0
            state.episode += 1
            state.last_alert = ts
            state.fast = rate_since
            return HotspotFinding(key, state.level_before, rate_since, state.visits, state.episode)
        return None

    def rate(self, key: str) -> float | None:
        """Current problem rate of a key, or ``None`` if never seen."""
        state = self.keys.get(key)
        return None if state is None else state.fast

    def open_incidents(self) -> list[str]:
        """Keys with an open incident."""
        return sorted(k for k, s in self.keys.items() if s.incident)
