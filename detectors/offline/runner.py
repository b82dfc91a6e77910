"""Run the detector over a stream of events offline, in event order.

:class:`OfflineRunner` is what ``replay``, ``evaluate`` and the embedded demo
use. It keeps session states in memory, reorders input within the allowed
lateness (a bounded heap, so a file does not have to fit in memory), and
closes sessions whose inactivity exceeds the timeout, judged by the stream's
event-time clock (:class:`~detectors.clock.StreamClock`: the newest event
time, which one bad client clock cannot move). Closed sessions stay one more
timeout as tombstones, so late events after a purchase do not open a new
session.

A detector that learns (``learn=True``) learns the closed sessions in the
order they closed, ``(closed_ts, id)`` (:mod:`detectors.learning_order`):
each is held until the clock less the allowed lateness has passed its close,
the order a deployment's trainer learns them in, whatever its workers'
partitions and speeds. Held sessions are learned at :meth:`OfflineRunner.finish`.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from detectors.alerts import Alert
from detectors.clock import StreamClock
from detectors.config import DetectorConfig
from detectors.detector import DEAD_LETTER_STATUSES, Detector, StepResult
from detectors.events import Event, EventParser, InvalidEvent
from detectors.learning_order import CloseOrder
from detectors.session import SessionState

StepHook = Callable[[Event, StepResult], None]
CloseHook = Callable[[SessionState], None]


#: Invalid input lines kept with their line number (the rest are only counted).
BAD_LINES_KEPT = 10


@dataclass(frozen=True)
class BadLine:
    """An input line that is not a valid event.

    ``line`` is 1-based and counts every physical line, blank ones included, so
    it is what an editor shows; ``reason`` and ``detail`` come from
    :class:`InvalidEvent` (the detail never echoes more than 80 input bytes).
    """

    line: int
    reason: str
    detail: str


@dataclass
class RunStats:
    """Counters of a run. ``lines`` counts the non-blank input lines read by
    :func:`parse_lines`; ``invalid`` counts those that were not events, by
    :class:`InvalidEvent` reason, and ``bad_lines`` keeps the first
    :data:`BAD_LINES_KEPT` of them with their line numbers. ``ahead``
    counts events too far ahead of the stream clock to move it (applied all
    the same)."""

    lines: int = 0
    events: int = 0
    applied: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)
    bad_lines: list[BadLine] = field(default_factory=list)
    ahead: int = 0

    @property
    def valid_lines(self) -> int:
        """Input lines that parsed into an event."""
        return self.lines - sum(self.invalid.values())

    @property
    def dead_letters(self) -> Counter[str]:
        """What the worker would dead-letter for the same input, by reason:
        the invalid lines, late events and events after their session's close."""
        out = Counter(self.invalid)
        for status, reason in DEAD_LETTER_STATUSES.items():
            if self.statuses[status]:
                out[reason] += self.statuses[status]
        return out


class OfflineRunner:
    """In-memory sessions, event-time timeouts and alert collection.

    >>> from detectors.config import DetectorConfig
    >>> cfg = DetectorConfig(session_timeout_ms=60_000)
    >>> runner = OfflineRunner(Detector(cfg))
    >>> p = EventParser(cfg).parse
    >>> _ = runner.feed(p({"session_id": "a", "ts": 1700000000000, "type": "page_view"}))
    >>> _ = runner.feed(p({"session_id": "b", "ts": 1700000300000, "type": "page_view"}))
    >>> dict(runner.stats.closed)
    {'timeout': 1}
    """

    def __init__(
        self,
        detector: Detector,
        on_step: StepHook | None = None,
        on_close: CloseHook | None = None,
    ) -> None:
        self.detector = detector
        self.config = detector.config
        self.sessions: dict[str, SessionState] = {}
        self.on_step = on_step
        self.on_close = on_close
        self.stats = RunStats()
        self.clock = StreamClock.for_config(self.config)
        self._swept = 0  # the clock time of the last sweep
        self._expiry: list[tuple[int, str]] = []  # (due ts, sid), lazy
        self._next_sweep = 0
        # quiet-session checks (Detector.tick): (due ts, sid), at most one
        # entry per session, whose due time is kept in _tick_due
        self._ticks: list[tuple[int, str]] = []
        self._tick_due: dict[str, int] = {}
        # a learning detector's closed sessions, learned in the order they
        # closed once the clock less the allowed lateness passed them
        self._order: CloseOrder | None = None
        if detector.learn:
            detector.learn = False  # it keeps its examples; learned from here
            self._order = CloseOrder(hold_max=2**62)  # (in memory: bounded by the lateness)

    @property
    def held(self) -> int:
        """Closed sessions not learned yet (their turn comes with the clock)."""
        return 0 if self._order is None else len(self._order)

    def _learn_closed(self, watermark: int | None) -> None:
        """Hold the sessions the detector closed since the last call, and learn
        those closed at or before ``watermark`` (``None``: every one)."""
        order = self._order
        if order is None:
            return
        learn = self.detector.models.learn
        for example in self.detector.examples:
            if order.is_late(example):
                learn(example)  # (closed before sessions already learned)
            else:
                order.hold(example)
        self.detector.examples.clear()
        released = order.drain() if watermark is None else order.release(watermark)
        for example, _ in released:
            learn(example)

    @property
    def active_sessions(self) -> int:
        """Sessions open right now (tombstones excluded)."""
        return sum(1 for s in self.sessions.values() if s.outcome is None)

    @property
    def watermark(self) -> int:
        """The stream clock: event time (ms) of the last sweep."""
        return self._swept

    def feed(self, event: Event) -> list[Alert]:
        """Apply one event (already in event order) and sweep timeouts."""
        if self.clock.observe(event.session_id, event.ts):
            self.stats.ahead += 1
        alerts = self.sweep(self.clock.now)
        state = self.sessions.get(event.session_id)
        result = self.detector.process(state, event)
        self.stats.events += 1
        self.stats.statuses[result.status] += 1
        if result.status == "applied":
            self.stats.applied += 1
            self.sessions[event.session_id] = result.state  # new, or reopened
            due = result.state.last_ts + self.config.session_timeout_ms
            heapq.heappush(self._expiry, (due, event.session_id))
            if result.closed:
                self._closed(result.state)
            else:
                self._schedule_tick(result.state)
        if self.on_step is not None:
            self.on_step(event, result)
        alerts += result.alerts
        for alert in result.alerts:
            self.stats.alerts[alert.kind] += 1
        if self._order is not None and self.detector.examples:
            self._learn_closed(self._swept - self.config.allowed_lateness_ms)
        return alerts

    def sweep(self, now: int) -> list[Alert]:
        """Advance the watermark to ``now`` and close sessions idle for longer
        than the timeout; drop tombstones a timeout after their close."""
        self.clock.advance(now)
        if now <= self._swept:
            return []
        self._swept = now
        if now < self._next_sweep:
            return []
        self._next_sweep = now + 1000
        timeout = self.config.session_timeout_ms
        alerts = self._run_ticks(now)
        while self._expiry and self._expiry[0][0] <= now:
            due, sid = heapq.heappop(self._expiry)
            state = self.sessions.get(sid)
            if state is None:
                continue
            if state.outcome is None:
                if state.last_ts + timeout > due:
                    continue  # touched since; a newer entry exists
                alerts += self._timeout(state)
                heapq.heappush(self._expiry, (state.closed_ts + timeout, sid))
            elif state.closed_ts + timeout <= now:
                del self.sessions[sid]
        self._learn_closed(now - self.config.allowed_lateness_ms)
        return alerts

    def _schedule_tick(self, state: SessionState) -> None:
        if state.sid in self._tick_due:
            return
        due = self.detector.tick_due(state)
        if due is not None:
            self._tick_due[state.sid] = due
            heapq.heappush(self._ticks, (due, state.sid))

    def _run_ticks(self, now: int) -> list[Alert]:
        """Check the quiet sessions whose check is due by ``now``."""
        alerts: list[Alert] = []
        ticks = self._ticks
        while ticks and ticks[0][0] <= now:
            due, sid = heapq.heappop(ticks)
            del self._tick_due[sid]
            state = self.sessions.get(sid)
            if state is None:
                continue
            raised = self.detector.tick(state, due)
            for alert in raised:
                self.stats.alerts[alert.kind] += 1
            alerts += raised
            self._schedule_tick(state)
        return alerts

    def _timeout(self, state: SessionState) -> list[Alert]:
        """Close an idle session at its timeout; count its alerts and close."""
        closing = self.detector.close(
            state, "timeout", state.last_ts + self.config.session_timeout_ms
        )
        for alert in closing:
            self.stats.alerts[alert.kind] += 1
        self._closed(state)
        return closing

    def _closed(self, state: SessionState) -> None:
        assert state.outcome is not None
        self.stats.closed[state.outcome] += 1
        if self.on_close is not None:
            self.on_close(state)

    def finish(self) -> list[Alert]:
        """End of input: close every open session as timed out."""
        alerts: list[Alert] = []
        for state in list(self.sessions.values()):
            if state.outcome is None:
                alerts += self._timeout(state)
        self._learn_closed(None)
        return alerts


def reorder(
    events: Iterable[Event], window_ms: int, clock: StreamClock | None = None
) -> Iterator[Event]:
    """Yield events in event-time order, holding at most ``window_ms`` of
    input: anything later than that relative to the newest event seen comes
    out in arrival position (the detector then judges it late or not).

    With a ``clock`` (:meth:`StreamClock.for_config`), "newest" is the
    stream clock, and an event ahead of it is not held back (it would sit
    in the heap until the stream caught up, hours later): the events held so
    far come out first, then it, which is the order the worker, which does
    not reorder, applies them in.
    """
    heap: list[tuple[int, int, Event]] = []
    newest = 0
    for seq, event in enumerate(events):
        if clock is None:
            newest = max(newest, event.ts)
        elif clock.observe(event.session_id, event.ts):
            while heap:
                yield heapq.heappop(heap)[2]
            yield event
            continue
        else:
            newest = clock.now
        heapq.heappush(heap, (event.ts, seq, event))
        while heap and heap[0][0] < newest - window_ms:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def parse_lines(
    lines: Iterable[bytes | str], parser: EventParser, stats: RunStats | None = None
) -> Iterator[Event]:
    """Parse JSONL lines, skipping blanks. Invalid lines are never raised:
    they are counted in ``stats.invalid`` by reason, and the first
    :data:`BAD_LINES_KEPT` are kept in ``stats.bad_lines`` with their number.

    >>> stats = RunStats()
    >>> lines = [b'{"session_id":"a","ts":1700000000,"type":"page_view"}', b"", b"[1]"]
    >>> list(parse_lines(lines, EventParser(DetectorConfig()), stats))
    []
    >>> stats.lines, stats.valid_lines, dict(stats.invalid)
    (2, 0, {'bad_ts': 1, 'not_object': 1})
    >>> stats.bad_lines[1]
    BadLine(line=3, reason='not_object', detail='top level is list, not an object')
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if stats is not None:
            stats.lines += 1
        try:
            yield parser.parse(line)
        except InvalidEvent as exc:
            if stats is not None:
                stats.invalid[exc.reason] += 1
                if len(stats.bad_lines) < BAD_LINES_KEPT:
                    stats.bad_lines.append(BadLine(number, exc.reason, exc.detail))


def replay_alerts(events: Iterable[dict[str, Any]], config: DetectorConfig) -> list[Alert]:
    """The alerts a fresh detector raises over ``events`` (raw event objects,
    fed in the given order). Raises :class:`InvalidEvent` on bad input.

    >>> t0 = 1700000000000
    >>> events = [{"session_id": "a", "ts": t0, "type": "page_view", "page": "/products/1"}]
    >>> events += [
    ...     {"session_id": "a", "ts": t0 + 1000 + 2000 * i, "type": "click",
    ...      "props": {"x": 50, "y": 50, "target": "button#buy", "dead": True}}
    ...     for i in range(4)
    ... ]
    >>> [(a.kind, a.rule, a.subject) for a in replay_alerts(events, DetectorConfig())]
    [('trust_loss', 'friction_pileup', 'a')]
    >>> replay_alerts(events[:1], DetectorConfig())
    []
    """
    parser = EventParser(config)
    runner = OfflineRunner(Detector(config))
    return [alert for raw in events for alert in runner.feed(parser.parse(raw))]
