"""Sessions for visitors whose calls name none (Segment without ``context.sessionId``).

A visitor's session goes on while its calls come less than the inactivity
gap apart (the detector's ``DISENGAGE_SESSION_TIMEOUT_MS``, 30 minutes by
default, as Segment's and Google Analytics' session definitions); a longer
silence starts a new one. The session id is the site and visitor hashed
(the anonymous id never leaves the collector) plus the session's start
time: ``v-<16 hex>-<start ms>``. Calls of one request are resolved in order.

:class:`RedisVisitorSessions` keeps the last call of each visitor in Redis
(``dg:visitor:{<site>/<hash>}``, expiring after the gap), so any replica of
the collector continues a session; :class:`MemoryVisitorSessions` keeps a
bounded LRU map in the process (one collector, or ``memory://``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

#: One visitor's call: (site id, visitor id, event time in epoch ms).
Visit = tuple[str, str, int]


class VisitorSessions(Protocol):
    async def resolve(self, visits: Sequence[Visit]) -> list[str]:
        """The session id of each call, in order."""
        ...


def visitor_key(site: str, visitor: str) -> str:
    """The hashed visitor: 16 hex characters of SHA-256 over site and id."""
    return hashlib.sha256(f"{site}\x00{visitor}".encode()).hexdigest()[:16]


def _next(last: tuple[str, int] | None, key: str, ts: int, gap_ms: int) -> tuple[str, int]:
    """The (session id, last call time) after a call at ``ts``."""
    if last is not None:
        sid, last_ts = last
        if abs(ts - last_ts) <= gap_ms:
            return sid, max(ts, last_ts)
    return f"v-{key}-{ts}", ts


class MemoryVisitorSessions:
    """Visitors' sessions in this process, the ``max_visitors`` most recent kept.

    >>> import asyncio
    >>> sessions = MemoryVisitorSessions(gap_ms=1000)
    >>> a, b, c = asyncio.run(sessions.resolve([("s", "anon", 0), ("s", "anon", 900),
    ...                                           ("s", "anon", 5000)]))
    >>> a == b != c
    True
    """

    def __init__(self, gap_ms: int, max_visitors: int = 200_000) -> None:
        self.gap_ms = gap_ms
        self.max_visitors = max_visitors
        self.last: OrderedDict[str, tuple[str, int]] = OrderedDict()

    async def resolve(self, visits: Sequence[Visit]) -> list[str]:
        out = []
        for site, visitor, ts in visits:
            key = visitor_key(site, visitor)
            state = _next(self.last.get(key), key, ts, self.gap_ms)
            self.last[key] = state
            self.last.move_to_end(key)
            out.append(state[0])
        while len(self.last) > self.max_visitors:
            self.last.popitem(last=False)
        return out


class RedisVisitorSessions:
    """Visitors' sessions in Redis: one read and one write round trip per request."""

    def __init__(self, client: Any, gap_ms: int) -> None:
        self.client = client
        self.gap_ms = gap_ms

    async def resolve(self, visits: Sequence[Visit]) -> list[str]:
        keys = [visitor_key(site, visitor) for site, visitor, _ in visits]
        names = {
            key: f"dg:visitor:{{{visit[0]}/{key}}}"
            for key, visit in zip(keys, visits, strict=True)
        }
        unique = list(dict.fromkeys(keys))
        async with self.client.pipeline(transaction=False) as pipe:
            for key in unique:
                pipe.get(names[key])
            stored = await pipe.execute()
        last: dict[str, tuple[str, int]] = {}
        for key, value in zip(unique, stored, strict=True):
            if value:
                sid, _, ts = (value.decode() if isinstance(value, bytes) else value).rpartition("|")
                if sid and ts.lstrip("-").isdigit():
                    last[key] = (sid, int(ts))
        out = []
        for key, (_, _, ts) in zip(keys, visits, strict=True):
            state = _next(last.get(key), key, ts, self.gap_ms)
            last[key] = state
            out.append(state[0])
        async with self.client.pipeline(transaction=False) as pipe:
            for key in unique:
                sid, ts = last[key]
                pipe.set(names[key], f"{sid}|{ts}", px=2 * self.gap_ms)
            await pipe.execute()
        return out
