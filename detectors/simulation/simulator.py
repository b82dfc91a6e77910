"""Deterministic traffic simulator with ground truth.

Sessions arrive as a Poisson process and follow one of six personas
(:mod:`detectors.simulation.personas`); :mod:`detectors.simulation.simulated_session` builds each
session's events. Journeys are non-linear: skips (landing straight on a
product), loops, backtracks and repeat visits, with the harmless look-alikes
that naive friction rules fire on.

Whether a session converts is drawn first, from the persona's rate. A
latent *doubt* in [0, 1] then shapes the behaviour: converters draw it from
Beta(2, 5) (mean 0.29), the others from Beta(5, 2) (mean 0.71). More doubt
means more comparison and policy pages, longer dwell, more quick returns and
more second looks at shipping and returns after reaching the basket (Baymard
Institute's checkout studies: extra costs and returns policy are the top
reasons to abandon). This is the simulator's assumption that doubt shows in
behaviour, which is the product's premise; whether it holds for a real site
is what ``evaluate --labels`` on real outcomes checks.

A *hotspot incident* can be switched on: for a stretch of the simulated
time, checkout step 2 (payment) is broken for everyone who reaches it.

Output is in event-time order. The same seed gives the same bytes. What was
injected is typed ground truth (:mod:`detectors.simulation.ground_truth`); writing it to
files is the shell's (``stream/commands/sim_files.py``). Conversion rates per persona
are assumptions of this simulator, stated in
:data:`detectors.simulation.personas.PERSONAS`; real outcomes come from
``evaluate --labels``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from detectors.simulation.ground_truth import GroundTruth, Incident, SessionTruth, SimulationSpan
from detectors.simulation.personas import JOURNEYS, PERSONAS
from detectors.simulation.simulated_session import SimulatedSession


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings. ``arrival_rate`` is new sessions per second of
    simulated time; ``incident`` breaks checkout step 2 between the given
    fractions of the simulated span."""

    sessions: int = 10_000
    seed: int = 7
    start_ts: int = 1_767_261_600_000  # 2026-01-01T10:00:00Z
    arrival_rate: float = 2.0
    incident: bool = True
    incident_window: tuple[float, float] = (0.45, 0.60)
    personas: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(PERSONAS))


class Simulator:
    """Generates events in event-time order and records ground truth.

    >>> sim = Simulator(SimConfig(sessions=50, seed=1))
    >>> events = list(sim.events())
    >>> all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
    True
    >>> [e["event_id"] for e in events[:3]] == [
    ...     e["event_id"] for e in list(Simulator(SimConfig(sessions=50, seed=1)).events())[:3]]
    True
    """

    def __init__(self, config: SimConfig, keep_truth: bool = True) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.keep_truth = keep_truth  # off for endless live traffic
        self.truth: dict[str, SessionTruth] = {}
        span_ms = config.sessions / config.arrival_rate * 1000.0
        lo, hi = config.incident_window
        self.incident_start = config.start_ts + int(span_ms * lo)
        self.incident_end = config.start_ts + int(span_ms * hi)
        names = list(config.personas)
        self._names = names
        self._weights = [config.personas[n][0] for n in names]

    def incident_active(self, ts: int) -> bool:
        c = self.config
        return c.incident and self.incident_start <= ts < self.incident_end

    def incidents(self) -> list[Incident]:
        """Ground truth of the hotspot incident (empty when switched off)."""
        if not self.config.incident:
            return []
        return [
            Incident(
                "checkout/2",
                self.incident_start,
                self.incident_end,
                "payment button broken for everyone",
            )
        ]

    def span(self) -> SimulationSpan:
        """The simulated span: new arrivals stop at ``arrivals_end_ts``
        (returning visits may start later)."""
        c = self.config
        arrivals_end = c.start_ts + int(c.sessions / c.arrival_rate * 1000.0)
        return SimulationSpan(c.seed, c.sessions, c.start_ts, arrivals_end)

    def ground_truth(self) -> GroundTruth:
        """Everything recorded so far (all of it once :meth:`events` is
        exhausted); the sessions are shared, not copied."""
        return GroundTruth(self.truth, self.incidents(), self.span())

    def events(self) -> Iterator[dict[str, Any]]:
        """All events of all sessions, merged in event-time order.

        Arrivals are drawn lazily, so memory holds only the sessions in
        flight, whatever ``sessions`` is.
        """
        cfg = self.config
        rng = self.rng
        revisits: list[tuple[int, int, str | None, int]] = []  # (ts, seq, user, visit)
        pending: list[tuple[int, int, dict[str, Any]]] = []
        arrivals = 0
        next_arrival = float(cfg.start_ts) + rng.expovariate(cfg.arrival_rate) * 1000.0
        seq = 0
        eseq = 0
        while True:
            candidates = []
            if arrivals < cfg.sessions:
                candidates.append(int(next_arrival))
            if revisits:
                candidates.append(revisits[0][0])
            if not candidates and not pending:
                return
            start = min(candidates) if candidates else None
            if pending and (start is None or pending[0][0] < start):
                yield heapq.heappop(pending)[2]
                continue
            assert start is not None
            if revisits and revisits[0][0] == start:
                _, _, user, visit = heapq.heappop(revisits)
                persona = "researcher"
            else:
                persona = rng.choices(self._names, self._weights)[0]
                user, visit = None, 0
                arrivals += 1
                next_arrival += rng.expovariate(cfg.arrival_rate) * 1000.0
            session = self._session(start, persona, user, visit, seq)
            seq += 1
            for ts, event in session.events:
                heapq.heappush(pending, (ts, eseq, event))
                eseq += 1
            comes_back = persona == "researcher" and visit < 3 and not session.truth.converted
            if comes_back and session.rng.random() < 0.6:  # returns after a break
                gap = int(session.rng.uniform(35, 120) * 60_000)
                heapq.heappush(revisits, (session.t + gap, seq, session.user_id, visit + 1))
                seq += 1

    def _session(
        self, start: int, persona: str, user: str | None, visit: int, seq: int
    ) -> SimulatedSession:
        rng = random.Random(f"{self.config.seed}:{seq}")
        sid = f"{rng.getrandbits(64):016x}"
        if user is None and (persona == "researcher" or rng.random() < 0.5):
            user = f"user-{rng.getrandbits(40):010x}@example.com"
        converted = rng.random() < self.config.personas[persona][1]
        truth = SessionTruth(sid, persona, False, user, start)
        s = SimulatedSession(truth, rng, self.incident_active)
        s.doubt = rng.betavariate(2, 5) if converted else rng.betavariate(5, 2)
        bought = JOURNEYS[persona](s, converted, visit)
        truth.converted = bool(bought)
        if not bought:
            s.leave()
        truth.end_ts = s.t
        if self.keep_truth:
            self.truth[sid] = truth
        return s
