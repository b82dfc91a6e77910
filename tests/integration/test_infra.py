"""Smoke test of the local test infrastructure: a real Kafka broker and a real Redis.

Run it under ``deploy/local/infra.py run``, which starts both and exports
KAFKA_BOOTSTRAP_SERVERS and REDIS_URL::

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
