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

Falling traffic is not an incident. A visit is observed when the visitor
leaves the page, or, for the last page of an abandoned session, when the
session times out (``session_timeout_ms`` later, 30 min by default). When
arrivals thin out (the night, the end of a replayed file), the leaves fall
at once while the timeouts of the earlier sessions keep coming for one
timeout more, so every page's problem rate rises with no fault on the page.
So a change is confirmed only while the key's traffic holds: the confirming
visits must arrive at least :data:`MIN_TRAFFIC_RATIO` times as fast as the
key's usual visits (the peak of its visit rate, see
:data:`PEAK_MEMORY_TIMEOUTS`). A broken page keeps receiving visitors; what
rises is their abandonment.

References
----------
Bifet and Gavaldà (2007), "Learning from time-changing data with adaptive
windowing", SDM (ADWIN); River's ``drift.ADWIN``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
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
#: Smallest traffic, as a share of the key's usual visits per unit of event
#: time, at which a rise may be confirmed. Half: at unchanged Poisson traffic
#: the :data:`CONFIRM_VISITS` visits (9 gaps) come more than twice as slowly
#: as usual with probability P(Gamma(9) > 18) ~ 0.007; the peak sits up to
#: ~20% above the mean (see :data:`PEAK_MIN_VISITS`), which makes it
#: P(Gamma(9) > 15) ~ 0.04. The check is re-tried on every further visit of
#: the armed window (after 30 visits: P(Gamma(29) > 48) ~ 0.001), so a real
#: incident under steady traffic is hardly delayed. When only the timeouts
#: of earlier sessions are left, a page sees a fraction of its usual visits
#: (0.05 to 0.3 in the simulator: the share of its visits that end a session).
MIN_TRAFFIC_RATIO = 0.5
#: A key's usual traffic is the highest rate of its visits (visits per ms,
#: each visit's weight decaying over one session timeout), and that peak
#: decays over this many session timeouts. The timeouts of the visits before
#: a fall keep coming for one timeout; a peak remembered over two still holds
#: exp(-1/2) ~ 60% of the level before the fall at the end of that stretch,
#: while a day's traffic curve changes far more slowly.
PEAK_MEMORY_TIMEOUTS = 2.0
#: Decayed visits a key needs before its rate may set the peak (the rate of
#: 20 visits is known to about 1/sqrt(20) ~ 22%).
PEAK_MIN_VISITS = 20.0


@dataclass(frozen=True, slots=True)
class HotspotFinding:
    """A newly opened incident: the rate before the change and now (0-1),
    visits seen, and the incident's episode number for this key."""

    key: str
    rate_before: float
    rate_now: float
    visits: int
    episode: int


@dataclass(frozen=True, slots=True)
class PageVisit:
    """One finished visit to a page type (and step), the monitor's input:
    its hotspot ``key``, whether it had friction or ended its session
    unconverted (``problem``), the event that ended it (``None`` at a
    session's close) and when (event time, epoch ms). No session or user
    identity: what a shared hotspot agent receives from every partition.

    >>> PageVisit.from_json(PageVisit("checkout/2", True, "e1", 5).to_json())
    PageVisit(key='checkout/2', problem=True, event_id='e1', ts=5)
    """

    key: str
    problem: bool
    event_id: str | None
    ts: int

    def to_json(self) -> bytes:
        return json.dumps(
            [self.key, self.problem, self.event_id, self.ts], separators=(",", ":")
        ).encode()

    @staticmethod
    def from_json(blob: bytes | str) -> PageVisit:
        """Inverse of :meth:`to_json`; ``ValueError`` on anything else."""
        try:
            key, problem, event_id, ts = json.loads(blob)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a page visit: {exc}") from None
        if not (
            isinstance(key, str)
            and isinstance(problem, bool)
            and (event_id is None or isinstance(event_id, str))
            and isinstance(ts, int)
            and not isinstance(ts, bool)
        ):
            raise ValueError("not a page visit: wrong field types")
        return PageVisit(key, problem, event_id, ts)



def visits_to_json(visits: Sequence[PageVisit]) -> bytes:
    """Several visits as one JSON array of :meth:`PageVisit.to_json` arrays
    (the worker sends one record per hotspot key and batch).

    >>> visits_from_json(visits_to_json([PageVisit("home", False, None, 1)]))
    [PageVisit(key='home', problem=False, event_id=None, ts=1)]
    """
    return b"[" + b",".join(v.to_json() for v in visits) + b"]"


def visits_from_json(blob: bytes | str) -> list[PageVisit]:
    """Inverse of :func:`visits_to_json`; ``ValueError`` on anything else
    (an empty array included: a record carries at least one visit)."""
    try:
        items = json.loads(blob)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a list of page visits: {exc}") from None
    if not isinstance(items, list) or not items:
        raise ValueError("not a list of page visits: expected a non-empty JSON array")
    return [PageVisit.from_json(json.dumps(item)) for item in items]

class _KeyState:
    __slots__ = (
        "adwin",
        "armed_peak",
        "armed_ts",
        "armed_until",
        "episode",
        "fast",
        "first_ts",
        "incident",
        "last_alert",
        "last_ts",
        "level_before",
        "peak",
        "recent",
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
        self._no_traffic_yet()

    def _no_traffic_yet(self) -> None:
        self.first_ts = self.last_ts = 0
        self.recent = 0.0  # visits, each decayed over one session timeout
        self.peak = 0.0  # usual visits per ms (see PEAK_MEMORY_TIMEOUTS)
        self.armed_ts = 0
        self.armed_peak = 0.0  # ``peak`` when the change was detected

    def __setstate__(self, state: tuple[None, dict[str, object]]) -> None:
        # checkpoints written before the traffic fields existed load without
        # traffic history (the traffic check then passes, as it did before)
        self._no_traffic_yet()
        for name, value in state[1].items():
            setattr(self, name, value)

    def count_visit(self, ts: int, timeout_ms: float) -> None:
        """Add a visit at ``ts`` (ms) to the traffic figures; event time
        never runs backwards here."""
        if self.visits == 0:
            self.first_ts = self.last_ts = ts
        elif ts > self.last_ts:
            gap = ts - self.last_ts
            self.recent *= math.exp(-gap / timeout_ms)
            self.peak *= math.exp(-gap / (PEAK_MEMORY_TIMEOUTS * timeout_ms))
            self.last_ts = ts
        self.recent += 1.0
        if self.recent >= PEAK_MIN_VISITS:
            # a steady rate r gives a decayed count of r * T * (1 - exp(-t/T))
            # after t ms: divide that out
            span = timeout_ms * -math.expm1((self.first_ts - self.last_ts) / timeout_ms)
            if span > 0.0:
                self.peak = max(self.peak, self.recent / span)

    def traffic_holds(self) -> bool:
        """Whether the visits since the detection came at least
        :data:`MIN_TRAFFIC_RATIO` times as fast as the usual traffic then."""
        elapsed = self.last_ts - self.armed_ts
        if elapsed <= 0:
            return True
        return self.since_n - 1 >= MIN_TRAFFIC_RATIO * self.armed_peak * elapsed


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
        self.timeout_ms = float(config.session_timeout_ms)
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
        state.count_visit(ts, self.timeout_ms)
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
                state.armed_ts, state.armed_peak = state.last_ts, state.peak
        if state.visits > state.armed_until or state.since_n < CONFIRM_VISITS:
            return None
        rate_since = state.since_sum / state.since_n
        if (
            state.visits >= self.min_visits
            and rate_since - state.level_before >= self.min_increase
            and (state.episode == 0 or ts - state.last_alert >= self.cooldown)
            and state.traffic_holds()
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
