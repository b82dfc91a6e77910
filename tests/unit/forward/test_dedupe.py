"""Delivered ids: the in-memory LRU and the Redis store behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from stream.forward.dedupe import LruSet, MemoryDedupe, RedisDedupe, dedupe_key
from stream.forward.options import option_default
from tests.fakes import FakeClock, FakeRedis


def redis_dedupe(
    group: str,
    redis: FakeRedis,
    clock: FakeClock | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
    pause_s: float = option_default("redis_pause_s"),
) -> RedisDedupe:
    """A RedisDedupe with the options' defaults and a fresh LRU."""
    clock = clock or FakeClock()
    return RedisDedupe(
        group,
        redis,
        memory=MemoryDedupe(option_default("dedupe_capacity")),
        ttl_s=option_default("dedupe_ttl_s"),
        pause_s=pause_s,
        clock=clock,
        monotonic=clock,
        on_error=on_error,
    )


def test_lru_keeps_the_most_recent_ids() -> None:
    lru = LruSet(capacity=3)
    for item in "abcd":
        lru.add(item)
    assert "a" not in lru and all(i in lru for i in "bcd") and len(lru) == 3
    lru.add("b")  # refreshed
    lru.add("e")
    assert "b" in lru and "c" not in lru


def test_memory_dedupe_forgets_the_oldest_ids() -> None:
    async def go() -> list[bool]:
        memory = MemoryDedupe(2)
        await memory.remember("a", "b")
        await memory.remember("c")
        return [await memory.seen(i) for i in "abc"]

    assert asyncio.run(go()) == [False, True, True]


def test_delivered_ids_survive_a_restart_through_redis() -> None:
    redis = FakeRedis()
    clock = FakeClock(1_767_261_600.0)

    async def go() -> tuple[bool, bool, bool]:
        first = redis_dedupe("fwd", redis, clock)
        assert not await first.seen("a1")
        await first.remember("a1")
        restarted = redis_dedupe("fwd", redis)  # empty LRU
        other_group = redis_dedupe("other", redis)
        found = await restarted.seen("a1"), await restarted.seen("a2")
        assert "a1" in restarted.memory.lru  # a Redis hit is kept in memory
        return (*found, await other_group.seen("a1"))

    assert asyncio.run(go()) == (True, False, False)
    assert redis.data[dedupe_key("fwd", "a1")] == ("1767261600", 7 * 24 * 3600)
    assert dedupe_key("fwd", "a1") == "dg:fwd:{fwd}:a1"


def test_delivered_ids_are_recorded_in_one_round_trip() -> None:
    redis = FakeRedis()

    async def go() -> None:
        await redis_dedupe("fwd", redis).remember("a1", "a2", "a3")

    asyncio.run(go())
    assert redis.calls == 1 and len(redis.data) == 3


def test_a_redis_outage_does_not_stop_forwarding() -> None:
    redis = FakeRedis()
    clock = FakeClock()
    errors: list[str] = []

    async def go() -> list[bool]:
        seen = redis_dedupe(
            "fwd", redis, clock, on_error=lambda op, exc: errors.append(op), pause_s=5.0
        )
        await seen.remember("a1")
        redis.down = True
        out = [await seen.seen("a1")]  # the LRU still answers
        out.append(await seen.seen("a2"))  # Redis fails: assume not delivered
        calls = redis.calls
        out.append(await seen.seen("a3"))  # paused: Redis is not even asked
        await seen.remember("a3")
        assert redis.calls == calls
        clock.now += 5.0
        redis.down = False
        await seen.remember("a4")  # back: written again
        out.append(dedupe_key("fwd", "a4") in redis.data)
        return out

    assert asyncio.run(go()) == [True, False, False, True]
    assert errors == ["check"]
