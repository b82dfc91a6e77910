"""The event-time clock of a stream, which one bad client clock cannot move.

Timeouts and quiet-session checks run on a stream's clock (the newest event
time seen), not on the wall clock, so that a replay and the live worker agree.
Event times come from clients, and some clients' clocks are wrong: by an hour
(a time-zone bug), a day, a year. If one event two hours fast moved the clock,
the next expiry sweep would time out every open session and every later event
of those sessions would arrive after their close.

:class:`StreamClock` therefore advances with an event only when the event is
at most ``max_skew_ms`` ahead of it. An event further ahead is *ahead*: the
caller still applies it to its own session (a client whose clock is wrong
throughout keeps a consistent session of its own), but it does not move the
clock. The clock jumps forward only when ``quorum`` distinct sessions have
been seen ahead, which is what a real gap in traffic looks like (a replayed
file that skips a night, a partition with little traffic); it then moves to
the latest time that ``quorum`` of them have reached, so one session far
ahead never sets it. Candidates are forgotten after ``forget_after``
in-bound events, so rare bad clocks in a busy stream never add up to a
quorum.

The same class runs in the offline runner (``replay``, ``evaluate``, the demo)
and per input partition in the worker, so both decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detectors.config import DetectorConfig

#: Sessions kept as candidates for a forward jump; more are evicted oldest first.
MAX_CANDIDATES = 64


@dataclass
class StreamClock:
    """A monotone event-time clock (epoch ms; 0 until the first event).

    ``max_skew_ms``: how far one event may move the clock (ms, > 0).
    ``quorum``: distinct sessions that must agree on a time further ahead
    before the clock jumps there (>= 2). ``forget_after``: in-bound events
    after which pending candidates are dropped.

    >>> clock = StreamClock(max_skew_ms=600_000, quorum=3)
    >>> t0 = 1_700_000_000_000
    >>> clock.observe("a", t0), clock.observe("b", t0 + 5_000), clock.now - t0
    (False, False, 5000)
    >>> clock.observe("c", t0 + 7_200_000)  # two hours fast: ahead, clock unmoved
    True
    >>> clock.now - t0, clock.ahead_total
    (5000, 1)
    >>> # a real gap: three sessions a day later, a minute apart
    >>> [clock.observe(s, t0 + 86_400_000 + 60_000 * i) for i, s in enumerate("xyz")]
    [True, True, False]
    >>> clock.now - t0  # where all three have been: the first's time
    86400000
    """

    max_skew_ms: int
    quorum: int = 3
    forget_after: int = 1000
    now: int = 0
    ahead_total: int = 0
    _candidates: dict[str, int] = field(default_factory=dict, repr=False)
    _in_bound: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.max_skew_ms <= 0:
            raise ValueError("max_skew_ms must be > 0")
        if self.quorum < 2:
            raise ValueError("quorum must be at least 2")

    @classmethod
    def for_config(cls, config: DetectorConfig) -> StreamClock:
        """A clock with ``config.max_clock_skew_ms`` and ``config.clock_quorum``."""
        return cls(config.max_clock_skew_ms, config.clock_quorum)

    def observe(self, sid: str, ts: int) -> bool:
        """Take an event of session ``sid`` at ``ts`` (ms); return ``True``
        when it is ahead (it did not move the clock), else ``False``."""
        if self.now == 0:
            self.now = ts
            return False
        if ts <= self.now + self.max_skew_ms:
            if ts > self.now:
                self.now = ts
            if self._candidates:
                self._in_bound += 1
                if self._in_bound >= self.forget_after:
                    self._candidates.clear()
                    self._in_bound = 0
            return False
        earlier = self._candidates.pop(sid, None)
        self._candidates[sid] = ts if earlier is None else min(earlier, ts)
        if len(self._candidates) > MAX_CANDIDATES:
            del self._candidates[next(iter(self._candidates))]
        target = self._quorum_time()
        if target is not None:
            self.now = target
            limit = self.now + self.max_skew_ms
            self._candidates = {s: t for s, t in self._candidates.items() if t > limit}
            self._in_bound = 0
            if ts <= limit:
                return False
        self.ahead_total += 1
        return True

    def advance(self, ts: int) -> None:
        """Move the clock to ``ts`` if that is later (the worker's idle
        partitions follow the wall clock); pending candidates now in bound
        are dropped."""
        if ts > self.now:
            self.now = ts
            limit = ts + self.max_skew_ms
            self._candidates = {s: t for s, t in self._candidates.items() if t > limit}

    def _quorum_time(self) -> int | None:
        """The latest time at or beyond which ``quorum`` candidate sessions
        have been seen (the ``quorum``-th largest), or ``None``."""
        if len(self._candidates) < self.quorum:
            return None
        return sorted(self._candidates.values())[-self.quorum]
