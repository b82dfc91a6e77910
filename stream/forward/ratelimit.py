"""The rate limit: a token bucket, and the alerts it holds back until one digest per window.

``--rate-limit N/min`` (also ``N/s``, ``N/h``; ``0`` = unlimited) is a token
bucket of N tokens refilled continuously at N per window. An alert that finds
the bucket empty is held back: not posted on its own, but counted into a digest.
The first held-back alert opens a window of the rate's length; when it has
passed, one digest post says how many alerts were held back, by kind. So a storm
costs at most N alert posts plus one digest per window. Digests spend no token.

Held-back messages stay in memory (their bytes are what a refused digest
dead-letters), at most ``ForwardOptions.held_max`` of them: when that many are
held, the loop reads nothing more until the window's digest went out. Their
offsets stay uncommitted meanwhile anyway.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from detectors.alerts import SEVERITIES

T = TypeVar("T")

_RATE = re.compile(r"^\s*(\d+)\s*(?:/\s*(s|sec|second|m|min|minute|h|hr|hour))?\s*$", re.I)
_WINDOWS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """``count`` alerts per ``window_s`` seconds; ``count`` 0 = unlimited.

    >>> str(RateLimit(30, 60.0)), str(RateLimit(5, 1.0)), str(RateLimit(0, 60.0))
    ('30/min', '5/s', 'unlimited')
    """

    count: int
    window_s: float

    def __str__(self) -> str:
        if self.count == 0:
            return "unlimited"
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.window_s, f"{self.window_s:g}s")
        return f"{self.count}/{unit}"


def parse_rate_limit(text: str) -> RateLimit:
    """``N/min``, ``N/s``, ``N/h`` or ``N`` (per minute); ``0`` = unlimited.

    >>> parse_rate_limit("30/min"), parse_rate_limit("5/s"), str(parse_rate_limit("0"))
    (RateLimit(count=30, window_s=60.0), RateLimit(count=5, window_s=1.0), 'unlimited')
    """
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"rate limit {text!r} is not N/min, N/s, N/h or 0")
    unit = (match.group(2) or "m")[0].lower()
    return RateLimit(int(match.group(1)), _WINDOWS[unit])


class TokenBucket:
    """Token bucket: ``capacity`` tokens, refilled continuously at
    ``capacity / window_s`` tokens per second. ``clock`` returns seconds
    (monotonic). A capacity of 0 means unlimited.

    >>> now = [0.0]
    >>> bucket = TokenBucket(RateLimit(2, 60.0), lambda: now[0])
    >>> [bucket.try_take() for _ in range(3)]
    [True, True, False]
    >>> now[0] = 30.0  # half a window: one token back
    >>> bucket.try_take(), bucket.try_take()
    (True, False)
    """

    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self.capacity = float(limit.count)
        self.per_s = limit.count / limit.window_s if limit.window_s > 0 else 0.0
        self.clock = clock
        self.tokens = self.capacity
        self.at = clock()

    def try_take(self) -> bool:
        """Take one token if there is one."""
        if self.capacity <= 0:
            return True
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.at) * self.per_s)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class Digest:
    """Alerts held back in one window; times are Unix seconds."""

    count: int
    by_kind: dict[str, int]
    by_severity: dict[str, int]
    started: float
    ended: float
    ids: tuple[str, ...]

    @property
    def key(self) -> str:
        """Its idempotency key, from the held-back ids (in any order)."""
        digest = hashlib.sha256("\n".join(sorted(self.ids)).encode()).hexdigest()[:32]
        return f"digest-{digest}"


class HoldBack(Generic[T]):
    """The alerts held back by the rate limit since the current window
    opened (at the first of them). ``clock`` returns Unix seconds; ``T`` is
    whatever the caller needs back with each alert (where its message is)."""

    def __init__(self, window_s: float, clock: Callable[[], float]) -> None:
        self.window_s = window_s
        self.clock = clock
        self.started: float | None = None
        self._items: list[tuple[str, str, str, T]] = []
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._items)

    def hold(self, alert_id: str, kind: str, severity: str, token: T) -> None:
        if self.started is None:
            self.started = self.clock()
        self._items.append((alert_id, kind, severity, token))
        self._ids.add(alert_id)

    def holds(self, alert_id: str) -> bool:
        return alert_id in self._ids

    def due(self) -> bool:
        """True once the window of the first held-back alert has passed."""
        return self.started is not None and self.clock() - self.started >= self.window_s

    def remaining(self) -> float:
        """Seconds until :meth:`due` (0 when due or when nothing is held)."""
        if self.started is None:
            return 0.0
        return max(0.0, self.window_s - (self.clock() - self.started))

    def take(self) -> tuple[Digest, list[T]]:
        """The digest of the window and its tokens; opens a new window."""
        kinds = Counter(kind for _, kind, _, _ in self._items)
        severities = Counter(sev for _, _, sev, _ in self._items)
        digest = Digest(
            count=len(self._items),
            by_kind=dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
            by_severity={s: severities[s] for s in reversed(SEVERITIES) if severities[s]},
            started=self.started if self.started is not None else self.clock(),
            ended=self.clock(),
            ids=tuple(alert_id for alert_id, _, _, _ in self._items),
        )
        tokens = [token for _, _, _, token in self._items]
        self._items, self._ids, self.started = [], set(), None
        return digest, tokens

    def drop(self, gone: Callable[[T], bool]) -> int:
        """Forget held-back alerts whose token is ``gone``; returns how many."""
        keep = [item for item in self._items if not gone(item[3])]
        dropped = len(self._items) - len(keep)
        self._items = keep
        self._ids = {item[0] for item in keep}
        if not keep:
            self.started = None
        return dropped
