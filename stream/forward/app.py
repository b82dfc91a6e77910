"""The composition root of ``disengage alerts forward``: the real clients, handed to the loop.

Everything the forwarder talks to is built here and nowhere else: the aiokafka
consumer (a group of its own, manual commits) and producer, the aiohttp
poster, the Redis dedupe store (unless ``--no-redis`` or a ``memory://`` URL),
the metrics and their HTTP server, and the SIGTERM/SIGINT handlers that stop
the loop. :class:`~stream.forward.loop.ForwardLoop` gets them all from here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from prometheus_client import start_http_server

from stream.forward.dedupe import DedupeStore, MemoryDedupe, RedisDedupe
from stream.forward.filters import default_classifier
from stream.forward.http_poster import WebhookPoster
from stream.forward.loop import ForwardLoop
from stream.forward.options import ForwardOptions
from stream.forward.webhook_url import redact_url
from stream.kafka_io import client_options, create_missing_topics, make_producer
from stream.metrics import ForwarderMetrics
from stream.redis_store import redis_from_url
from stream.settings import Settings

__all__ = ["KafkaError", "metrics_server", "run_forwarder"]

log = logging.getLogger("disengage.forward")

# a webhook that fails holds the loop in its retries: that must not cost the
# partitions (aiokafka rejoins in the background anyway)
MAX_POLL_INTERVAL_MS = 24 * 3600 * 1000


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits before partitions move, and starts afresh on assignment."""

    def __init__(self, loop: ForwardLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        await self.loop.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        await self.loop.assigned(assigned)
        names = ", ".join(f"{p.topic}/{p.partition}" for p in sorted(assigned))
        log.info("assigned %s", names or "no partitions")


def _redis(settings: Settings, options: ForwardOptions) -> Any | None:
    """A redis.asyncio client with short timeouts, or ``None`` for memory
    only (``--no-redis`` or a ``memory://`` URL)."""
    if not options.use_redis or settings.redis_url.startswith("memory://"):
        return None
    return redis_from_url(
        settings.redis_url,
        settings.redis_password,
        settings.redis_tls,
        settings.redis_cluster,
        socket_timeout=options.redis_timeout_s,
        socket_connect_timeout=options.redis_timeout_s,
    )


def _dedupe(options: ForwardOptions, redis: Any | None, metrics: ForwarderMetrics) -> DedupeStore:
    memory = MemoryDedupe(options.dedupe_capacity)
    if redis is None:
        return memory
    return RedisDedupe(
        options.group,
        redis,
        memory=memory,
        ttl_s=options.dedupe_ttl_s,
        pause_s=options.redis_pause_s,
        clock=time.time,
        monotonic=time.monotonic,
        on_error=lambda _op, _exc: metrics.redis_errors.inc(),
    )


async def forward(
    settings: Settings, options: ForwardOptions, metrics: ForwarderMetrics, stop: asyncio.Event
) -> None:
    """Build the clients, forward until ``stop`` is set, close them."""
    alerts_topic = settings.topic_alerts
    dlq_topic = options.dlq_topic_for(alerts_topic)
    await create_missing_topics(settings, [alerts_topic, dlq_topic])
    producer = make_producer(settings)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=options.group,
        enable_auto_commit=False,
        auto_offset_reset=options.offset_reset,
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
    )
    redis = _redis(settings, options)
    poster = WebhookPoster(
        options.webhook_url, options.timeout_s, time.perf_counter, metrics.post_seconds.observe
    )
    loop = ForwardLoop(
        options,
        consumer=consumer,
        producer=producer,
        poster=poster,
        dedupe=_dedupe(options, redis, metrics),
        clock=time.time,
        monotonic=time.monotonic,
        alerts_topic=alerts_topic,
        classify=default_classifier(settings.detector),
        metrics=metrics,
    )
    try:
        await producer.start()
        consumer.subscribe([alerts_topic], listener=_Rebalances(loop))
        await consumer.start()
        log.info(
            "forwarding %s (group %s, from %s when new) to %s as %s; rate limit %s; "
            "dead letters to %s; de-duplication %s",
            alerts_topic,
            options.group,
            options.offset_reset,
            redact_url(options.webhook_url),
            options.fmt,
            options.rate_limit,
            dlq_topic,
            "in memory + Redis" if redis is not None else "in memory only",
        )
        await loop.run(stop)
    finally:
        for closer in (
            consumer.stop,
            producer.stop,
            poster.close,
            *([redis.aclose] if redis is not None else []),
        ):
            try:
                await closer()
            except Exception as exc:  # closing must not hide the real error
                log.debug("closing: %s", exc)
        log.info("forwarder stopped")


def run_forwarder(
    settings: Settings,
    options: ForwardOptions,
    serve_metrics: Callable[[ForwarderMetrics], Callable[[], None] | None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0)."""
    metrics = ForwarderMetrics()
    shutdown = serve_metrics(metrics) if serve_metrics is not None else None

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(sig, stop.set)
        await forward(settings, options, metrics, stop)

    try:
        asyncio.run(main())
    finally:
        if shutdown is not None:
            shutdown()
    return 0


def metrics_server(port: int, addr: str) -> Callable[[ForwarderMetrics], Callable[[], None]]:
    """``serve_metrics`` for :func:`run_forwarder`: Prometheus text on
    ``addr:port`` from the forwarder's own registry."""

    def serve(metrics: ForwarderMetrics) -> Callable[[], None]:
        server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
        log.info("metrics on http://%s:%d/metrics", addr, port)
        return server.shutdown

    return serve
