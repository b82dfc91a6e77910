"""The store, the model registry and a worker on a real 3-node Redis Cluster.

``deploy/local/infra.py run`` starts the cluster (three ``redis-server
--cluster-enabled yes`` joined by ``redis-cli --cluster create``) and exports
``REDIS_CLUSTER_URL``, one of its nodes. The clients learn the other nodes from it.
A cluster has one database: every test here flushes all of it.

What a cluster changes, and what is checked:

* sessions live on all three nodes (each ``dg:s:{<sid>}`` is its own slot), so a
  batch's load cannot be one MGET: it is one GET per key in a cluster pipeline,
  which must stay one round trip per node;
* a partition's index keys (``dg:seen:{<ns>/p<n>}``, ``dg:outbox:{...}``) share a slot;
* the model registry's ``MULTI``/``EXEC`` covers keys of the one slot ``{<ns>}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import CrossSlotTransactionError

from stream.model_registry import ModelRegistry, ModelVersion, TrainerState, model_key
from stream.redis_store import (
    RedisSessionStore,
    outbox_key,
    redis_from_url,
    seen_key,
    state_key,
)
from tests.builders import stored_state

from .conftest import RULES_ONLY
from .harness import (
    Env,
    Worker,
    consume,
    create_topics,
    event_records,
    expected_counts,
    friction_oracle,
    metric_sum,
    produce,
    simulated,
)

pytestmark = pytest.mark.integration


def cluster_client(url: str) -> RedisCluster:
    client = redis_from_url(url, cluster=True)
    assert isinstance(client, RedisCluster)
    return client


async def flush_cluster(url: str) -> None:
    client = cluster_client(url)
    try:
        await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    finally:
        await client.aclose()


@pytest.fixture
def cluster_env(kafka_bootstrap: str, redis_cluster_url: str) -> Iterator[Env]:
    """A pipeline of the test's own whose workers use the cluster."""
    extra = {**RULES_ONLY, "DISENGAGE_REDIS_CLUSTER": "true"}
    env = Env(kafka_bootstrap, redis_cluster_url, db=0, extra=extra)
    asyncio.run(flush_cluster(redis_cluster_url))
    asyncio.run(create_topics(env))
    yield env
    asyncio.run(flush_cluster(redis_cluster_url))


@pytest.fixture
async def cluster(redis_cluster_url: str) -> Any:
    client = cluster_client(redis_cluster_url)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    await client.aclose()


def _node(client: RedisCluster, key: str) -> str:
    node = client.get_node_from_key(key)
    assert node is not None
    return str(node.name)


async def test_a_batch_is_one_round_trip_per_node(
    cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker batch is one ``load`` and one ``save_many``: each must reach
    every node it touches exactly once (one pipelined write, then the replies),
    with no command sent on its own (a MOVED redirection would be)."""
    store = RedisSessionStore(cluster, ttl_s=3600, namespace="rt")
    states = [
        stored_state(f"rt-{i}", 1_000 + i, outbox=['{"id":"x"}'] if i % 7 == 0 else [])
        for i in range(60)
    ]
    by_partition = {p: states[p::4] for p in range(4)}
    sids = [s.sid for s in states]
    await store.ping()  # the slot map is learned before counting
    nodes_of_states = {_node(cluster, state_key(sid)) for sid in sids}
    assert len(nodes_of_states) == 3, "60 sessions must land on all three nodes"

    pipelines: Counter[str] = Counter()
    alone: list[tuple[Any, ...]] = []
    execute_pipeline, execute_command = ClusterNode.execute_pipeline, RedisCluster.execute_command

    async def counted_pipeline(node: ClusterNode, commands: list[Any]) -> bool:
        pipelines[node.name] += 1
        return await execute_pipeline(node, commands)

    async def counted_command(client: RedisCluster, *args: Any, **kwargs: Any) -> Any:
        alone.append(args)
        return await execute_command(client, *args, **kwargs)

    monkeypatch.setattr(ClusterNode, "execute_pipeline", counted_pipeline)
    monkeypatch.setattr(RedisCluster, "execute_command", counted_command)
    await store.save_many(by_partition)
    saved = dict(pipelines)
    pipelines.clear()
    loaded = await store.load([*sids, "rt-missing"])
    monkeypatch.undo()

    assert saved == {name: 1 for name in nodes_of_states}
    assert dict(pipelines) == {name: 1 for name in nodes_of_states}
    assert alone == []
    assert loaded == {s.sid: s for s in states}
    # a partition's index keys share one slot: ZADD/ZREM/SADD/SREM go with the states
    for p in range(4):
        assert cluster.keyslot(seen_key(p, "rt")) == cluster.keyslot(outbox_key(p, "rt"))
        assert await store.open_sessions(p) == 15
    assert await store.pending(0) == sorted(s.sid for s in by_partition[0] if s.outbox)


async def test_the_model_registry_on_the_cluster(cluster: RedisCluster) -> None:
    ns = "registry-on-cluster"
    registry = ModelRegistry(cluster, ns)
    home = cluster.get_node_from_key(model_key(ns, 1))
    assert home is not None
    before = await cluster.info("commandstats", target_nodes=home)

    def version(n: int) -> ModelVersion:
        return ModelVersion(n, 1_000 * n, 10 * n, 5 * n, 0.7, None, "forest", 3)

    async def publish(n: int, keep: int) -> None:
        await registry.publish(
            version(n),
            serving=f"models-{n}".encode(),
            learned=f"learned-{n}".encode(),
            state=TrainerState(n, 10 * n),
            keep=keep,
        )

    for n in (1, 2, 3):
        await publish(n, keep=2)
    assert await registry.numbers() == [2, 3]  # version 1 pruned in its own transaction
    assert [v.number for v in await registry.versions()] == [2, 3]
    assert await registry.serving() == 3 and await registry.load(3) == b"models-3"
    assert await registry.trainer_state() == TrainerState(3, 30)
    assert await registry.trainer_models() == b"learned-3"
    await registry.pin(2)
    assert await registry.serving() == 2 and await registry.pinned() == 2
    await publish(4, keep=1)
    assert await registry.numbers() == [2, 4]  # the pinned version is kept
    await registry.unpin()
    assert await registry.serving() == 4

    after = await cluster.info("commandstats", target_nodes=home)
    exec_calls = after["cmdstat_exec"]["calls"] - before.get("cmdstat_exec", {"calls": 0})["calls"]
    assert exec_calls == 4 + 2  # every publish and every prune was a MULTI/EXEC on that node
    with pytest.raises(CrossSlotTransactionError):  # a key outside {<ns>} is refused
        async with cluster.pipeline(transaction=True) as pipe:
            pipe.set(model_key(ns, 9), b"x")
            pipe.set(state_key("elsewhere"), b"x")
            await pipe.execute()


async def test_worker_on_the_cluster_equals_the_offline_oracle(
    cluster_env: Env, redis_cluster_url: str
) -> None:
    events, sim = simulated(300, seed=21)
    expected = friction_oracle(events)
    assert expected, "the simulated sessions must contain friction"
    worker = Worker(cluster_env, name="cluster").start()
    try:
        worker.wait_ready(partitions=cluster_env.partitions)
        produced = await produce(
            cluster_env.bootstrap, cluster_env.interactions, event_records(events)
        )

        def done(messages: list[Any]) -> bool:
            return expected <= {json.loads(m.value)["id"] for m in messages}

        messages = await consume(cluster_env.bootstrap, cluster_env.alerts, until=done, timeout=90)
        alerts = [json.loads(m.value) for m in messages]
        assert {a["id"] for a in alerts if a["data"]["rule"] == "friction_pileup"} == expected
        assert {a["data"]["kind"] for a in alerts} == {"trust_loss"}
        deadline = time.time() + 30  # alerts can come before the last events are applied
        while metric_sum(worker.metrics(), "disengage_events_total") < produced:
            assert time.time() < deadline, worker.tail()
            time.sleep(0.5)
        assert worker.get("/healthz")[0] == 200
    finally:
        assert worker.stop() == 0, worker.tail()

    client = cluster_client(redis_cluster_url)
    try:
        store = RedisSessionStore(client, ttl_s=3600)
        counts = expected_counts(events)
        states = await store.load(sorted(counts))
        assert set(states) == set(counts)
        for sid, state in states.items():
            assert state.n_events == counts[sid]
            assert not state.outbox
            if sim.truth[sid].converted:
                assert state.outcome == "converted"
        per_node = Counter(_node(client, state_key(sid)) for sid in states)
        assert len(per_node) == 3, per_node  # the sessions are spread over every node
        sizes = await client.dbsize(target_nodes=RedisCluster.PRIMARIES)
        assert sizes >= len(states)
    finally:
        await client.aclose()
