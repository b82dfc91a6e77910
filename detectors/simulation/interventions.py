"""Interventions in the simulation: help shown on an alert, and visitors who
respond to it.

The simulator plays each session's journey in advance; whether showing help
changes it can only be decided once the detector has alerted, so this is a
closed loop around the simulator and a detector:

1. the simulated events run, in event-time order, through ``runner`` (an
   :class:`~detectors.offline.runner.OfflineRunner` with the config whose
   holdout groups are being measured);
2. on each admitted session alert of a *treated* session, the page shows
   the suggested help: an ``intervention`` event (the acknowledgement a
   real page sends) follows after ``show_delay_ms``;
3. the visitor *responds* with the probability of its persona in
   :attr:`InterventionEffect.respond`. A responder that was not going to
   buy drops the rest of its planned journey and buys instead: the help
   page, the basket if empty, the three checkout steps and the purchase. A
   responder that was going to buy anyway carries on as planned: help never
   hurts here, and never helps a buyer;
4. control sessions are alerted the same way and nothing is shown.

So the true effect is known: among alerted treated sessions, the share that
was *rescued* (responded and would not have bought). The conversion of
alerted treated against alerted control sessions estimates it
(:class:`~detectors.uplift.UpliftTracker`), and with every probability at 0
there is no effect to find. The response probabilities are assumptions of
this simulation, not measurements; what an intervention is worth on a real
site is what the holdout measures there.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from detectors.alerts import SESSION_KINDS, Alert
from detectors.events import EventParser, InvalidEvent
from detectors.offline.runner import OfflineRunner
from detectors.simulation.simulator import Simulator
from detectors.uplift import TREATED

#: Default probability that a persona's visitor, shown help, buys after all
#: when it was not going to: comparers and the confused lacked an answer the
#: help gives; the frustrated hit a broken step that help only sometimes gets
#: them around; bouncers and researchers (who come back later) rarely
#: change course. Assumptions of the simulation, stated so the demo has an
#: effect to measure.
DEFAULT_RESPONSE: dict[str, float] = {
    "confident": 0.0,
    "comparer": 0.25,
    "confused": 0.35,
    "frustrated": 0.15,
    "bouncer": 0.02,
    "researcher": 0.10,
}


@dataclass(frozen=True)
class InterventionEffect:
    """How simulated visitors respond to help. ``respond``: persona ->
    probability (0-1) that a visitor shown help buys when it was not going
    to (a persona not listed never responds). ``show_delay_ms``: from the
    alert's event time to the help on screen (and its acknowledgement).
    ``seed``: the responses' random draws, separate from the simulator's."""

    respond: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RESPONSE))
    show_delay_ms: int = 500
    seed: int = 17

    def __post_init__(self) -> None:
        for persona, p in self.respond.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"respond[{persona!r}] must be in [0, 1]")
        if self.show_delay_ms < 0:
            raise ValueError("show_delay_ms must be >= 0")

    @classmethod
    def none(cls) -> InterventionEffect:
        """Help that changes nothing: the holdout must find no effect."""
        return cls(respond={})


@dataclass
class LoopTruth:
    """What the loop did: alerted sessions by group, the treated ones shown
    help, and the ones rescued (responded and would not have bought)."""

    alerted: dict[str, str] = field(default_factory=dict)  # session id -> treatment
    shown: set[str] = field(default_factory=set)
    rescued: set[str] = field(default_factory=set)

    @property
    def true_effect(self) -> float | None:
        """The share of alerted treated sessions that help turned into a
        purchase: the uplift the holdout should recover (``None`` before any
        treated session was alerted)."""
        treated = sum(1 for t in self.alerted.values() if t == TREATED)
        return len(self.rescued) / treated if treated else None


class InterventionLoop:
    """Simulated traffic that responds to the alerts of ``runner``.

    :meth:`events` yields the events as JSON-ready dicts (the simulator's,
    minus the rest of each rescued journey, plus acknowledgements and the
    rescued journeys' purchases) after ``runner`` has processed each; the
    simulator's ground truth is updated for the rescued sessions.
    """

    def __init__(
        self, sim: Simulator, runner: OfflineRunner, effect: InterventionEffect
    ) -> None:
        self.sim = sim
        self.runner = runner
        self.effect = effect
        self.parser = EventParser(runner.config)
        self.rng = random.Random(effect.seed)
        self.truth = LoopTruth()
        self.alerts: list[Alert] = []
        self._cut: dict[str, int] = {}  # rescued session -> its alert time
        self._added: list[tuple[int, int, dict[str, Any]]] = []  # (ts, seq, event)
        self._seq = 0

    def forget(self, sids: Iterable[str]) -> None:
        """Drop the record of finished sessions (an endless run keeps only
        recent ones; :attr:`truth` then covers those)."""
        for sid in sids:
            self.truth.alerted.pop(sid, None)
            self.truth.shown.discard(sid)
            self.truth.rescued.discard(sid)
            self._cut.pop(sid, None)

    def events(self) -> Iterator[dict[str, Any]]:
        for planned in self.sim.events():
            while self._added and self._added[0][0] <= planned["ts"]:
                yield self._play(heapq.heappop(self._added)[2])
            cut = self._cut.get(planned["session_id"])
            if cut is not None and planned["ts"] > cut:
                continue  # the rest of a journey help changed
            yield self._play(planned)
        while self._added:
            yield self._play(heapq.heappop(self._added)[2])

    def _play(self, raw: dict[str, Any]) -> dict[str, Any]:
        try:
            event = self.parser.parse(raw)
        except InvalidEvent:  # never: the simulator's events are valid
            return raw
        for alert in self.runner.feed(event):
            self.alerts.append(alert)
            if alert.kind in SESSION_KINDS and alert.session_id is not None:
                self._on_alert(alert, alert.session_id)
        return raw

    def _on_alert(self, alert: Alert, sid: str) -> None:
        treatment = str(alert.extra.get("treatment", TREATED))
        self.truth.alerted.setdefault(sid, treatment)
        if treatment != TREATED or sid in self.truth.shown:
            return
        self.truth.shown.add(sid)
        shown_at = alert.event_time + self.effect.show_delay_ms
        ack = {"kind": alert.kind, "alert_id": alert.id, "action": alert.suggested_action}
        self._add(sid, shown_at, "intervention", "ack", ack)
        truth = self.sim.truth.get(sid)
        if truth is None or truth.converted:
            return
        if self.rng.random() >= self.effect.respond.get(truth.persona, 0.0):
            return
        self.truth.rescued.add(sid)
        self._cut[sid] = alert.event_time
        self._buy(sid, shown_at, truth.user)
        truth.converted = True

    def _buy(self, sid: str, ts: int, user: str | None) -> None:
        """The journey of a visitor help convinced: the help page, the
        basket, the three checkout steps and the purchase."""
        rng = self.rng
        path = [
            ("page_view", "/help", {"load_ms": 700}, "faq"),
            ("add_to_cart", "/help", {"sku": "sku-help", "value": rng.randint(20, 300)}, None),
            ("page_view", "/cart", {"load_ms": 800}, "cart"),
        ]
        for step in (1, 2, 3):
            page = f"/checkout/step-{step}"
            path.append(("page_view", page, {"load_ms": 800, "step": step}, "checkout"))
            path.append(("checkout_step", page, {"step": step}, None))
        path.append(("purchase", "/checkout/step-3", {"value": rng.randint(20, 600)}, None))
        t = ts
        for n, (etype, page, props, page_type) in enumerate(path):
            t += int(rng.uniform(4, 20) * 1000)
            extra = {"page": page, "props": props}
            if page_type is not None:
                extra["page_type"] = page_type
            if user is not None:
                extra["user_id"] = user
            self._add(sid, t, etype, f"r{n}", extra)

    def _add(self, sid: str, ts: int, etype: str, tag: str, fields: dict[str, Any]) -> None:
        event: dict[str, Any] = {
            "session_id": sid,
            "ts": ts,
            "type": etype,
            "event_id": f"{sid}-{tag}",
        }
        if etype == "intervention":
            event["props"] = fields
        else:
            event.update(fields)
        heapq.heappush(self._added, (ts, self._seq, event))
        self._seq += 1

