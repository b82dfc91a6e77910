"""Alert ids already delivered, so that a restart does not post them again.

Kafka delivers at least once, and the forwarder commits an offset only after
the webhook accepted its alert, so a restart after "posted but not yet
committed" reads that alert again. The loop asks a :class:`DedupeStore` first:

* :class:`MemoryDedupe`: a bounded LRU (``--no-redis``, or ``memory://``);
* :class:`RedisDedupe`: the LRU in front of a Redis record
  ``dg:fwd:{<group>}:<id>`` (TTL ``ForwardOptions.dedupe_ttl_s``, 7 days, the
  default retention of a Kafka topic) written after the webhook accepted.

When Redis fails, forwarding goes on (a warning and
``disengage_forward_redis_errors_total``): delivery matters more than dedupe.
A crash between the webhook's answer and the Redis write can repeat one post;
the ``Idempotency-Key`` header covers it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("disengage.forward")


class DedupeStore(Protocol):
    """Delivered alert ids."""

    async def seen(self, alert_id: str) -> bool:
        """True when ``alert_id`` was delivered before."""
        ...

    async def remember(self, *alert_ids: str) -> None:
        """Record delivered ids (after the webhook accepted them)."""
        ...


class LruSet:
    """The ``capacity`` most recently added strings.

    >>> lru = LruSet(2)
    >>> for item in "abc":
    ...     lru.add(item)
    >>> "a" in lru, "c" in lru, len(lru)
    (False, True, 2)
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


def dedupe_key(group: str, alert_id: str) -> str:
    """Redis key of a delivered alert (the group is the cluster hash tag).

    >>> dedupe_key("fwd", "a1")
    'dg:fwd:{fwd}:a1'
    """
    return f"dg:fwd:{{{group}}}:{alert_id}"


class MemoryDedupe:
    """Delivered ids in an LRU of ``capacity`` ids (about 100 bytes each):
    forgotten on restart."""

    def __init__(self, capacity: int) -> None:
        self.lru = LruSet(capacity)

    async def seen(self, alert_id: str) -> bool:
        return alert_id in self.lru

    async def remember(self, *alert_ids: str) -> None:
        for alert_id in alert_ids:
            self.lru.add(alert_id)


class RedisDedupe:
    """Delivered ids: an in-memory LRU in front of Redis (a redis.asyncio
    client, or anything with ``exists`` and ``pipeline``). Redis failures are
    logged once per outage, reported to ``on_error(op, exc)`` and then Redis is
    skipped for ``pause_s`` seconds of ``monotonic``, so an outage costs no
    time per alert. ``clock`` (Unix seconds) stamps the records."""

    def __init__(
        self,
        group: str,
        redis: Any,
        *,
        memory: MemoryDedupe,
        ttl_s: int,
        pause_s: float,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self.group = group
        self.redis = redis
        self.memory = memory
        self.ttl_s = ttl_s
        self.pause_s = pause_s
        self.clock = clock
        self.monotonic = monotonic
        self.on_error = on_error
        self._paused_until = 0.0
        self.failing = False

    def _usable(self) -> bool:
        return self.monotonic() >= self._paused_until

    def _failed(self, op: str, exc: Exception) -> None:
        self._paused_until = self.monotonic() + self.pause_s
        if not self.failing:
            log.warning(
                "Redis %s failed (%s: %s); forwarding on with in-memory de-duplication only",
                op,
                type(exc).__name__,
                exc,
            )
        if self.on_error is not None:
            self.on_error(op, exc)
        self.failing = True

    def _ok(self) -> None:
        if self.failing:
            log.info("Redis is reachable again; de-duplication across restarts resumed")
        self.failing = False

    async def seen(self, alert_id: str) -> bool:
        if await self.memory.seen(alert_id):
            return True
        if not self._usable():
            return False
        try:
            found = bool(await self.redis.exists(dedupe_key(self.group, alert_id)))
        except Exception as exc:  # any Redis failure: forward anyway
            self._failed("check", exc)
            return False
        self._ok()
        if found:
            await self.memory.remember(alert_id)
        return found

    async def remember(self, *alert_ids: str) -> None:
        """Record delivered ids: the LRU, and Redis in one pipelined round trip."""
        await self.memory.remember(*alert_ids)
        if not alert_ids or not self._usable():
            return
        stamp = str(int(self.clock()))
        try:
            pipe = self.redis.pipeline(transaction=False)
            for alert_id in alert_ids:
                pipe.set(dedupe_key(self.group, alert_id), stamp, ex=self.ttl_s)
            await pipe.execute()
        except Exception as exc:
            self._failed("record", exc)
            return
        self._ok()
