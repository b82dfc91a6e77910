"""Smoke test of the local test infrastructure: a real Kafka broker, a real Redis and a
real 3-node Redis Cluster.

Run it under ``deploy/local/infra.py run``, which starts them and exports
KAFKA_BOOTSTRAP_SERVERS, REDIS_URL and REDIS_CLUSTER_URL (one node of the cluster)::

    python deploy/local/infra.py run -- python -m pytest tests/integration/test_infra.py

Without those variables the tests fail (they never skip), so a CI job that forgot to
start the services cannot pass silently.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio.cluster import RedisCluster

pytestmark = pytest.mark.integration


def _require_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.fail(
            f"{name} is not set. Integration tests need a real broker and Redis; run them as\n"
            "  python deploy/local/infra.py run -- python -m pytest -m integration",
            pytrace=False,
        )
    return value


async def test_kafka_produce_then_consume() -> None:
    bootstrap = _require_env("KAFKA_BOOTSTRAP_SERVERS")
    suffix = uuid.uuid4().hex
    topic = f"infra-smoke-{suffix}"  # auto-created by the broker on first produce
    key, value = b"session-1", f"hello {suffix}".encode()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = await asyncio.wait_for(producer.send_and_wait(topic, value, key=key), 60)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"infra-smoke-{suffix}",  # exercises the group coordinator as faust does
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received = await asyncio.wait_for(consumer.getone(), 60)
        await consumer.commit()
    finally:
        await consumer.stop()

    assert (received.topic, received.partition, received.offset) == (
        sent.topic,
        sent.partition,
        sent.offset,
    )
    assert received.key == key
    assert received.value == value


async def test_redis_set_then_get() -> None:
    url = _require_env("REDIS_URL")
    client = aioredis.from_url(url)
    key = f"infra-smoke:{uuid.uuid4().hex}"
    try:
        assert await client.ping()
        assert await client.set(key, b"value", ex=60)
        assert await client.get(key) == b"value"
        assert await client.delete(key) == 1
        assert await client.get(key) is None
    finally:
        await client.aclose()


async def test_redis_cluster_of_three_primaries_serves_every_slot() -> None:
    client = RedisCluster.from_url(_require_env("REDIS_CLUSTER_URL"))
    try:
        assert await client.ping()
        primaries = client.get_primaries()
        assert len(primaries) == 3
        for node in primaries:
            info = await client.cluster_info(target_nodes=node)
            assert info["cluster_state"] == "ok", (node.name, info)
            assert int(info["cluster_slots_ok"]) == 16384
            assert int(info["cluster_known_nodes"]) == 3
        # keys spread: three keys whose slots fall in the three default ranges
        homes = {client.get_node_from_key(key) for key in ("{a}", "{b}", "{c}")}
        assert {node.name for node in homes if node} == {n.name for n in primaries}
    finally:
        await client.aclose()
