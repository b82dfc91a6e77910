"""``disengage collect``'s process: the producer, the two web servers, signals.

The event endpoints listen on ``DISENGAGE_COLLECTOR_PORT`` (public); the
operational ones (``/metrics``, ``/healthz``, ``/readyz``) on
``DISENGAGE_COLLECTOR_METRICS_PORT``, bound to ``DISENGAGE_METRICS_BIND``.
SIGTERM or SIGINT stops accepting requests, lets those in flight finish
(their events acknowledged) and flushes the producer before the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer

from stream.collector.alert_feed import AlertFeed
from stream.collector.app import Collector, Produce
from stream.collector.channel import ChannelTokens, SessionChannels
from stream.collector.metrics import CollectorMetrics
from stream.collector.sessions import (
    MemoryVisitorSessions,
    RedisVisitorSessions,
    VisitorSessions,
)
from stream.kafka_io import make_producer
from stream.ops_web import ops_app
from stream.records import Record
from stream.redis_store import redis_from_url
from stream.retry import backoff, retry_forever
from stream.settings import Settings
from stream.worker.faults import Fault, quiet_library_repeats
from stream.worker.health import BrokerProbe

log = logging.getLogger("disengage.collector")

#: Seconds between two broker probes (the ``kafka_up`` gauge and /readyz).
PROBE_INTERVAL_S = 5.0
#: Longest wait for requests in flight at shutdown (seconds).
SHUTDOWN_GRACE_S = 10.0


def kafka_produce(producer: AIOKafkaProducer) -> Produce:
    """``produce(topic, records)`` over an aiokafka producer: returns after every ack."""

    async def produce(topic: str, records: Sequence[Record]) -> None:
        if not records:
            return
        futures = [
            await producer.send(topic, value=r.value, key=r.key, headers=r.headers or None)
            for r in records
        ]
        await asyncio.gather(*futures)

    return produce


def channel_secret(settings: Settings) -> bytes:
    """The key of the channel tokens: the setting, or a random one for this process."""
    if settings.collector_channel_secret:
        return settings.collector_channel_secret.encode()
    return secrets.token_bytes(32)


async def _run_feed(feed: AlertFeed) -> None:
    """The alert feed, restarted after a failure (a broker down at start)."""
    fault = Fault("alerts topic reader", log)
    await retry_forever(
        feed.run, wait=backoff(2.0, 10.0), on_failure=lambda e, d: fault.failed(e, "read")
    )


def visitor_sessions(settings: Settings) -> tuple[VisitorSessions, Any]:
    """Redis-backed visitor sessions, or in-process ones for ``memory://``."""
    gap = settings.detector.session_timeout_ms
    if settings.redis_url.startswith("memory://"):
        return MemoryVisitorSessions(gap, settings.detector.user_salt), None
    client = redis_from_url(
        settings.redis_url, settings.redis_password, settings.redis_tls, settings.redis_cluster
    )
    return RedisVisitorSessions(client, gap, settings.detector.user_salt), client


async def run_collector(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    quiet_library_repeats()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    metrics = CollectorMetrics()
    producer = make_producer(settings, request_timeout_ms=int(settings.produce_timeout_s * 1000))
    fault = Fault("Kafka producer start", log)
    await retry_forever(
        producer.start, wait=backoff(0.5, 10.0), on_failure=lambda e, d: fault.failed(e, "start")
    )
    fault.ok()
    sessions, client = visitor_sessions(settings)
    channels = SessionChannels()
    collector = Collector(
        settings,
        kafka_produce(producer),
        sessions,
        metrics,
        channels=channels,
        tokens=ChannelTokens(channel_secret(settings), settings.collector_channel_ttl_s),
    )
    feed = AlertFeed(settings, channels, metrics)
    feed_task = asyncio.create_task(_run_feed(feed), name="alert-feed")
    probe = BrokerProbe(settings)
    public = web.AppRunner(collector.web_app(), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    def readiness() -> tuple[bool, dict[str, object]]:
        return probe.up, {"ready": probe.up, "kafka": probe.up}

    ops = web.AppRunner(ops_app(metrics.registry, time.time(), readiness), access_log=None)
    await public.setup()
    await ops.setup()
    await web.TCPSite(public, settings.collector_bind, settings.collector_port).start()
    await web.TCPSite(ops, settings.metrics_bind, settings.collector_metrics_port).start()
    log.info(
        "collecting on %s:%d%s/ (metrics on :%d) for sites %s",
        settings.collector_bind,
        settings.collector_port,
        settings.collector_path_prefix,
        settings.collector_metrics_port,
        ", ".join(sorted(settings.collector_sites)),
    )
    try:
        while not stop.is_set():
            metrics.kafka_up.set(1.0 if await probe.check() else 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROBE_INTERVAL_S)
    finally:
        collector.stopping.set()  # event streams and long polls end
        feed.stop()
        await public.cleanup()  # stops accepting, waits for requests in flight
        await ops.cleanup()
        await producer.stop()  # flushes
        await probe.close()
        feed_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed_task
        if client is not None:
            await client.aclose()
        log.info("collector stopped")
