"""Kafka plumbing shared by the worker, the CLI and the benchmarks (aiokafka).

* :func:`client_options` turns settings into aiokafka security options;
* :func:`ensure_topics` creates missing topics with the configured partitions;
* :class:`KafkaSink` produces alerts and dead letters through the producer it
  is given and waits for the acks, and can list the alert ids already on the
  alerts topic (outbox recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from stream.records import Record
from stream.retry import cancelled_by_caller
from stream.settings import Settings

log = logging.getLogger("disengage.kafka")


def client_options(settings: Settings) -> dict[str, Any]:
    """Bootstrap and security options for any aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


#: Largest record the trainer produces to the models topic (bytes).
MODELS_MAX_BYTES = 64 * 1024 * 1024
#: The models topic: compacted (the newest version per pipeline is kept),
#: records up to :data:`MODELS_MAX_BYTES`, and segments twice that: a broker
#: refuses a record larger than its topic's segment (``RecordListTooLarge``),
#: and brokers set up with small segments exist (the local one's are 16 MB).
#: A trainer's record (learned models and trainer state, compressed) reached
#: 14 MB after 3,700 sessions of live simulated traffic (``bench_worker
#: --latency-seconds 420``, 2026-11-30); over 16 MB, it stopped publishing.
MODELS_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(MODELS_MAX_BYTES),
    "segment.bytes": str(2 * MODELS_MAX_BYTES),
}


async def ensure_topics(settings: Settings, extra: Sequence[str] = ()) -> list[str]:
    """Create the interactions, alerts, dead-letter, page-visits, training
    and models topics (and ``extra``) when absent; return the names created. The
    training topic has one partition (one trainer learns it in order); the
    models topic is compacted, with one partition."""
    wanted = [
        settings.topic_interactions,
        settings.topic_alerts,
        settings.topic_dlq,
        settings.topic_page_visits,
        *extra,
    ]
    specs = {name: NewTopic(name, settings.topic_partitions, 1) for name in wanted}
    specs[settings.topic_training] = NewTopic(settings.topic_training, 1, 1)
    specs[settings.topic_models] = NewTopic(
        settings.topic_models, 1, 1, topic_configs=MODELS_TOPIC_CONFIG
    )
    return await _create_missing(settings, list(specs.values()))


async def create_missing_topics(settings: Settings, topics: Sequence[str]) -> list[str]:
    """Create those of ``topics`` that do not exist, with the configured
    partition count; return the names created."""
    specs = [NewTopic(t, settings.topic_partitions, 1) for t in dict.fromkeys(topics)]
    return await _create_missing(settings, specs)


async def _create_missing(settings: Settings, specs: Sequence[NewTopic]) -> list[str]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            # another worker may win the race to create them
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(spec.name for spec in missing))
        return [spec.name for spec in missing]
    finally:
        await admin.close()


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer (acks=all), so retries never duplicate."""
    options = client_options(settings)
    options.update(
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        compression_type=None,
    )
    options.update(overrides)
    return AIOKafkaProducer(**options)


#: Produce ``records`` to a topic and return once the broker acknowledged them all.
Produce = Callable[[str, Sequence[Record]], Awaitable[None]]


class KafkaSink:
    """Alerts, dead letters, training examples and page visits to Kafka; each ``send_*``
    returns after acks.

    ``produce`` is the producer's send-and-wait (the worker's is the Faust
    app's own producer); the topics come from ``settings``.
    """

    def __init__(self, produce: Produce, settings: Settings) -> None:
        self.produce = produce
        self.settings = settings

    async def send_alerts(self, records: Sequence[Record]) -> None:
        await self.produce(self.settings.topic_alerts, records)

    async def send_dead_letters(self, records: Sequence[Record]) -> None:
        await self.produce(self.settings.topic_dlq, records)

    async def send_training(self, records: Sequence[Record]) -> None:
        await self.produce(self.settings.topic_training, records)

    async def send_visits(self, records: Sequence[Record]) -> None:
        await self.produce(self.settings.topic_page_visits, records)

    async def alert_ids_since(self, since_ms: int) -> set[str]:
        """Read the alerts topic from ``since_ms`` (by timestamp) to its end.

        The consumer subscribes to the topic (without a group, so it gets
        every partition): a consumer that is only assigned partitions later
        has no metadata for the topic after ``start()``, and would find
        nothing to skip."""
        topic = self.settings.topic_alerts
        consumer = AIOKafkaConsumer(
            topic, **client_options(self.settings), enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        ids: set[str] = set()
        try:
            tps = sorted(consumer.assignment())
            if not tps:
                if consumer.partitions_for_topic(topic):
                    # returning no ids would re-produce what is on the topic: fail, and retry
                    raise KafkaError(f"no partitions of {topic!r} assigned yet")
                return ids  # no such topic yet: nothing was produced
            ends = await consumer.end_offsets(tps)
            starts = await consumer.offsets_for_times({tp: max(since_ms, 0) for tp in tps})
            remaining = {}
            for tp in tps:
                found = starts.get(tp)
                start = found.offset if found is not None else ends[tp]
                if start < ends[tp]:
                    consumer.seek(tp, start)
                    remaining[tp] = ends[tp]
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, messages in batch.items():
                    for message in messages:
                        try:
                            ids.add(json.loads(message.value)["id"])
                        except (ValueError, KeyError, TypeError):
                            continue
                        if message.offset + 1 >= remaining.get(tp, 0):
                            remaining.pop(tp, None)
                if not batch:
                    for tp in list(remaining):
                        if await consumer.position(tp) >= remaining[tp]:
                            remaining.pop(tp)
        finally:
            await stop_consumer(consumer)
        return ids


async def seek_back(consumer: AIOKafkaConsumer, since_ms: int) -> None:
    """Start every partition of a started, group-less consumer at its first
    record at or after ``since_ms`` (epoch ms), or at its end. Waits up to
    5 s for the assignment that comes with the first metadata; with no
    partition yet (no topic), the consumer picks them up when they appear."""
    for _ in range(50):
        if consumer.assignment():
            break
        await asyncio.sleep(0.1)
    tps = sorted(consumer.assignment())
    if not tps:
        return
    starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        found = starts.get(tp)
        consumer.seek(tp, found.offset if found is not None else ends[tp])


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, minus an aiokafka 0.14 race: stopped right after
    it started, its group coordinator awaits an internal task cancelled
    before it ran, and the ``CancelledError`` escapes although nobody
    cancelled the caller. A real cancellation of the caller is re-raised."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        if cancelled_by_caller():
            raise
        log.debug("ignored aiokafka's stray CancelledError on consumer.stop()")
