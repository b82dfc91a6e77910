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
import hmac
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

#: One visitor's call: (site id, visitor id, event time in epoch ms).
Visit = tuple[str, str, int]


class VisitorSessions(Protocol):
    async def resolve(self, visits: Sequence[Visit]) -> list[str]:
        """The session id of each call, in order."""
        ...


def visitor_key(site: str, visitor: str, salt: str) -> str:
    """The hashed visitor: 16 hex characters of HMAC-SHA256 over site and id,
    keyed with ``DISENGAGE_USER_SALT`` (a user id cannot be found by hashing guesses)."""
    message = f"{site}\x00{visitor}".encode("utf-8", "surrogateescape")
    return hmac.new(salt.encode(), message, hashlib.sha256).hexdigest()[:16]


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
    >>> sessions = MemoryVisitorSessions(gap_ms=1000, salt="s")
    >>> a, b, c = asyncio.run(sessions.resolve([("s", "anon", 0), ("s", "anon", 900),
    ...                                           ("s", "anon", 5000)]))
    >>> a == b != c
    True
    """

    def __init__(self, gap_ms: int, salt: str, max_visitors: int = 200_000) -> None:
        self.gap_ms = gap_ms
        self.salt = salt
        self.max_visitors = max_visitors
        self.last: OrderedDict[str, tuple[str, int]] = OrderedDict()

    async def resolve(self, visits: Sequence[Visit]) -> list[str]:
        out = []
        for site, visitor, ts in visits:
            key = visitor_key(site, visitor, self.salt)
            state = _next(self.last.get(key), key, ts, self.gap_ms)
            self.last[key] = state
            self.last.move_to_end(key)
            out.append(state[0])
        while len(self.last) > self.max_visitors:
            self.last.popitem(last=False)
        return out


class RedisVisitorSessions:
    """Visitors' sessions in Redis: a read, and a write, round trip per request.

    Two requests of a new visitor can arrive together (analytics.js sends a
    page and a track call at once): a session is started with ``SET NX``, and
    a request that loses the race reads the winner's and resolves again.
    """

    def __init__(self, client: Any, gap_ms: int, salt: str) -> None:
        self.client = client
        self.gap_ms = gap_ms
        self.salt = salt

    def _name(self, site: str, key: str) -> str:
        return f"dg:visitor:{{{site}/{key}}}"

    async def _read(self, names: dict[str, str]) -> dict[str, tuple[str, int]]:
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names.values():
                pipe.get(name)
            stored = await pipe.execute()
        last: dict[str, tuple[str, int]] = {}
        for key, value in zip(names, stored, strict=True):
            if value:
                sid, _, ts = (value.decode() if isinstance(value, bytes) else value).rpartition("|")
                if sid and ts.lstrip("-").isdigit():
                    last[key] = (sid, int(ts))
        return last

    def _resolve(
        self, keys: list[str], visits: Sequence[Visit], last: dict[str, tuple[str, int]]
    ) -> tuple[list[str], dict[str, tuple[str, int]]]:
        state = dict(last)
        out = []
        for key, (_, _, ts) in zip(keys, visits, strict=True):
            state[key] = _next(state.get(key), key, ts, self.gap_ms)
            out.append(state[key][0])
        return out, state

    async def resolve(self, visits: Sequence[Visit]) -> list[str]:
        keys = [visitor_key(site, visitor, self.salt) for site, visitor, _ in visits]
        names = {key: self._name(visit[0], key) for key, visit in zip(keys, visits, strict=True)}
        last = await self._read(names)
        out, state = self._resolve(keys, visits, last)
        ttl = 2 * self.gap_ms
        new = [key for key in names if key not in last]
        if new:  # start sessions only where no other request did meanwhile
            async with self.client.pipeline(transaction=False) as pipe:
                for key in new:
                    sid, ts = state[key]
                    pipe.set(names[key], f"{sid}|{ts}", px=ttl, nx=True)
                won = await pipe.execute()
            if not all(won):
                lost = {k: names[k] for k, ok in zip(new, won, strict=True) if not ok}
                last.update(await self._read(lost))
                out, state = self._resolve(keys, visits, last)
        async with self.client.pipeline(transaction=False) as pipe:
            for key, name in names.items():
                sid, ts = state[key]
                pipe.set(name, f"{sid}|{ts}", px=ttl)
            await pipe.execute()
        return out
