"""One contract, every store: the in-memory store of the core, Redis, and a Redis Cluster.

The Redis cases are integration tests (``make test`` runs them under
``deploy/local/infra.py run``, which starts a redis-server and a real 3-node Redis
Cluster); ``make unit`` runs the memory cases alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from detectors.config import DetectorConfig
from detectors.detector import next_check
from detectors.rules import HESITATION_CHECK_MS
from detectors.store import Fenced, MemorySessionStore, SessionStore
from stream.redis_store import RedisSessionStore, open_store, redis_from_url, state_key
from tests.builders import stored_state
from tests.conftest import redis_db_url
from tests.fakes import FakeClock

CONTRACT_DB = 3
CONFIG = DetectorConfig()
#: the worker's schedule of hesitation checks
CHECK_AT = partial(next_check, CONFIG)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("redis-cluster", marks=pytest.mark.integration),
    ]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore(ttl_s=3600, clock=FakeClock(), check_at=CHECK_AT)
        return
    if request.param == "redis-cluster":  # one database only: the whole cluster is flushed
        cluster = redis_from_url(request.getfixturevalue("redis_cluster_url"), cluster=True)
        await cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
        cluster_store = RedisSessionStore(cluster, ttl_s=3600, check_at=CHECK_AT)
        assert cluster_store.cluster
        yield cluster_store
        await cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
        await cluster_store.close()
        return
    url = redis_db_url(request.getfixturevalue("redis_url"), CONTRACT_DB)
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    redis_store = RedisSessionStore(client, ttl_s=3600, check_at=CHECK_AT)
    yield redis_store
    await client.flushdb()
    await redis_store.close()


async def test_round_trip_and_missing(store: SessionStore) -> None:
    a = stored_state("a", 5_000, n_events=3, stage="evaluate", dedup={123: 4_000})
    await store.save(0, [a])
    loaded = await store.load(["a", "missing"])
    assert set(loaded) == {"a"}
    assert loaded["a"] == a
    assert await store.load([]) == {}


async def test_save_many_indexes_each_partition_apart(store: SessionStore) -> None:
    open_a, open_b = stored_state("m1", 2_000), stored_state("m2", 4_000)
    await store.save_many({3: [open_a], 4: [open_b, stored_state("m3", 1_000)]})
    assert set(await store.load(["m1", "m2", "m3"])) == {"m1", "m2", "m3"}
    assert (await store.open_sessions(3), await store.open_sessions(4)) == (1, 2)
    assert await store.due(3, 10_000, 10) == ["m1"]
    assert await store.due(4, 10_000, 10) == ["m3", "m2"]


async def test_each_claim_of_a_partition_is_a_new_greater_epoch(store: SessionStore) -> None:
    first, second = await store.claim(5), await store.claim(5)
    assert second > first
    other = await store.claim(6)  # partitions are claimed apart
    assert await store.claim(6) > other
    assert await store.claim(5) > second


async def test_a_save_with_a_superseded_epoch_writes_nothing_of_that_partition(
    store: SessionStore,
) -> None:
    """Fencing: the old owner's save is refused whole for the partition the
    new owner claimed (state, expiry, check and outbox indexes all as the new
    owner left them), while its other partition in the same call is written."""
    old_epoch = await store.claim(1)
    other_epoch = await store.claim(2)
    await store.save_many({1: [stored_state("s", 1_000, stage="evaluate")]}, {1: old_epoch})
    new_epoch = await store.claim(1)  # the group gave partition 1 to another worker
    owners = stored_state("s", 9_000, stage="evaluate", n_events=7)
    await store.save_many({1: [owners]}, {1: new_epoch})

    stale = stored_state("s", 5_000, n_events=4, outcome="abandoned", outbox=['{"id":"x"}'])
    with pytest.raises(Fenced) as refused:
        await store.save_many(
            {1: [stale, stored_state("t", 5_000)], 2: [stored_state("u", 5_000)]},
            {1: old_epoch, 2: other_epoch},
        )
    assert refused.value.partitions == {1}
    assert (await store.load(["s", "t", "u"])) == {"s": owners, "u": stored_state("u", 5_000)}
    assert await store.due(1, 10**12, 10) == ["s"]  # still open, at the owner's time
    assert await store.checks_due(1, 10**12, 10) == ["s"]
    assert await store.pending(1) == []
    assert await store.due(2, 10**12, 10) == ["u"]
    # the new owner writes on; a save without epochs is not fenced (tools, tests)
    await store.save_many({1: [stored_state("s", 9_500, n_events=8)]}, {1: new_epoch})
    await store.save_many({1: [stored_state("v", 1)]})
    assert set(await store.load(["s", "v"])) == {"s", "v"}


async def test_due_orders_by_last_seen_and_respects_limit(store: SessionStore) -> None:
    await store.save(
        1, [stored_state("x", 3_000), stored_state("y", 1_000), stored_state("z", 9_000)]
    )
    assert await store.open_sessions(1) == 3
    assert await store.open_sessions(2) == 0
    assert await store.due(1, before_ts=5_000, limit=10) == ["y", "x"]
    assert await store.due(1, before_ts=5_000, limit=1) == ["y"]
    assert await store.due(2, before_ts=5_000, limit=10) == []  # another partition


async def test_checks_due_reads_the_quiet_sessions_a_check_is_due_for(store: SessionStore) -> None:
    """The check sweep reads only the sessions whose next hesitation check
    (:func:`next_check`) is due, earliest first; a session outside evaluate
    and decide, or closed, is not indexed; a save moves a session to its
    next check, and out once it has been quiet too long."""
    await store.save(
        1,
        [
            stored_state("e", 1_000, stage="evaluate"),
            stored_state("d", 3_000, stage="decide"),
            stored_state("c", 1_000, stage="consider"),
            stored_state("x", 1_000, stage="evaluate", outcome="abandoned"),
        ],
    )
    step = HESITATION_CHECK_MS
    assert await store.checks_due(1, 1_000 + step - 1, 10) == []
    assert await store.checks_due(1, 1_000 + step, 10) == ["e"]
    assert await store.checks_due(1, 3_000 + step, 10) == ["e", "d"]
    assert await store.checks_due(1, 3_000 + step, 1) == ["e"]
    assert await store.checks_due(2, 3_000 + step, 10) == []  # another partition
    # checked at 31 s: due again 30 s later
    await store.save(1, [stored_state("e", 1_000, stage="evaluate", hes_checked=1_000 + step)])
    assert await store.checks_due(1, 3_000 + step, 10) == ["d"]
    assert await store.checks_due(1, 1_000 + 2 * step, 10) == ["d", "e"]
    # quiet for longer than hesitation_quiet_max_ms by its next check: out
    quiet_max = CONFIG.hesitation_quiet_max_ms
    await store.save(1, [stored_state("e", 1_000, stage="evaluate", hes_checked=1_000 + quiet_max)])
    assert await store.checks_due(1, 10**12, 10) == ["d"]
    # closed: out
    await store.save(1, [stored_state("d", 3_000, stage="decide", outcome="converted")])
    assert await store.checks_due(1, 10**12, 10) == []


async def test_a_store_without_a_check_schedule_finds_no_check_due() -> None:
    store = MemorySessionStore(ttl_s=3600, clock=FakeClock())
    await store.save(1, [stored_state("e", 1_000, stage="evaluate")])
    assert await store.checks_due(1, 10**12, 10) == []


async def test_saving_again_moves_last_seen_and_closing_untracks(store: SessionStore) -> None:
    await store.save(0, [stored_state("s", 1_000)])
    await store.save(0, [stored_state("s", 8_000)])
    assert await store.due(0, before_ts=5_000, limit=10) == []
    closed = stored_state("s", 8_000, outcome="timeout")
    await store.save(0, [closed])
    assert await store.due(0, before_ts=10_000, limit=10) == []
    assert (await store.load(["s"]))["s"].outcome == "timeout"  # tombstone kept


async def test_outbox_tracking(store: SessionStore) -> None:
    await store.save(4, [stored_state("p", 1_000, outbox=['{"id":"1"}']), stored_state("q", 1_000)])
    assert await store.pending(4) == ["p"]
    await store.save(4, [stored_state("p", 1_000)])
    assert await store.pending(4) == []


async def test_blobs(store: SessionStore) -> None:
    assert await store.load_blob("models") is None
    await store.save_blob("models", b"\x00\x01binary")
    assert await store.load_blob("models") == b"\x00\x01binary"
    await store.ping()


async def test_memory_store_expires_by_injected_clock() -> None:
    clock = FakeClock()
    store = MemorySessionStore(ttl_s=10, clock=clock)
    await store.save(0, [stored_state("t", 1_000)])
    clock.now += 9.9
    assert "t" in await store.load(["t"])
    clock.now += 0.2
    assert await store.load(["t"]) == {}


@pytest.mark.integration
async def test_redis_store_sets_ttl_and_hash_tagged_keys(redis_url: str) -> None:
    url = redis_db_url(redis_url, CONTRACT_DB + 1)
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    try:
        store = RedisSessionStore(client, ttl_s=1900)
        await store.save(0, [stored_state("tagged", 1_000)])
        ttl_ms = await client.pttl(state_key("tagged"))
        assert 1_890_000 < ttl_ms <= 1_900_000
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await client.keys("*"))
        assert keys == ["dg:s:{tagged}", "dg:seen:{/p0}"]
        # compact: a fresh state is a few hundred bytes at most
        assert await client.strlen(state_key("tagged")) < 400
    finally:
        await client.flushdb()
        await client.aclose()


def test_open_store_by_url() -> None:
    assert isinstance(open_store("memory://", 60, clock=FakeClock()), MemorySessionStore)
    single = open_store("redis://127.0.0.1:6379/0", 60, clock=FakeClock())
    cluster = open_store("redis://127.0.0.1:7000/0", 60, cluster=True, clock=FakeClock())
    assert isinstance(single, RedisSessionStore) and not single.cluster
    assert isinstance(cluster, RedisSessionStore) and isinstance(cluster.client, RedisCluster)
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_store("postgres://x", 60, clock=FakeClock())


@pytest.mark.integration
async def test_redis_store_saves_again_after_the_server_forgot_its_script(redis_url: str) -> None:
    """A batch's states go in one script call; a server that restarted or
    flushed its scripts gets the script again, and the save is not lost."""
    url = redis_db_url(redis_url, CONTRACT_DB + 1)
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    try:
        store = RedisSessionStore(client, ttl_s=1900)
        first = [stored_state(f"s{i}", 1_000 + i, n_events=i) for i in range(40)]
        await store.save_many({0: first[:25], 1: first[25:]})
        await client.script_flush()
        again = stored_state("s1", 9_000, n_events=99)
        await store.save(0, [again, stored_state("late", 9_500)])
        loaded = await store.load([s.sid for s in first] + ["late"])
        assert len(loaded) == 41
        assert loaded["s1"] == again
        assert loaded["s30"] == first[30]
        assert 1_890_000 < await client.pttl(state_key("late")) <= 1_900_000
        assert await client.zcard("dg:seen:{/p1}") == 15
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.mark.integration
async def test_an_unreadable_state_starts_its_session_over(redis_url: str) -> None:
    """A blob no codec reads (a newer release's, or damaged) is a missing
    state with a warning, not a batch failing for ever."""
    url = redis_db_url(redis_url, CONTRACT_DB + 1)
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    try:
        store = RedisSessionStore(client, ttl_s=1900)
        await store.save(0, [stored_state("good", 1_000)])
        await client.set(state_key("bad"), b"\xd5\x05 from a later release")
        loaded = await store.load(["good", "bad"])
        assert set(loaded) == {"good"}
    finally:
        await client.flushdb()
        await client.aclose()
