"""The trainer's composition root: Redis, the service, its web endpoints and signals.

``/metrics`` (Prometheus), ``/healthz`` (the process is up) and ``/readyz``
(its Kafka clients started; ``active`` says whether it is the one learning)
listen on ``DISENGAGE_TRAINER_METRICS_PORT``. SIGTERM or SIGINT stops it
after the step in flight; it publishes what it learned before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from aiohttp import web

from stream.metrics import TrainerMetrics
from stream.model_registry import ModelRegistry
from stream.ops_web import ops_app
from stream.redis_store import redis_from_url
from stream.settings import Settings
from stream.trainer.service import TrainerService
from stream.worker.faults import quiet_library_repeats

log = logging.getLogger("disengage.trainer")


def web_app(service: TrainerService, started_at: float) -> web.Application:
    """``/metrics``, ``/healthz`` and ``/readyz`` of one trainer."""

    def readiness() -> tuple[bool, dict[str, object]]:
        body: dict[str, object] = {
            "ready": service.ready,
            "active": service.trainer is not None,
            "version": service.version,
            "offset": None if service.trainer is None else service.trainer.offset,
        }
        return service.ready, body

    return ops_app(service.metrics.registry, started_at, readiness)


async def run_trainer(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run one trainer until ``stop`` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    quiet_library_repeats()  # aiokafka logs every reconnect attempt during an outage
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    client = redis_from_url(
        settings.redis_url, settings.redis_password, settings.redis_tls, settings.redis_cluster
    )
    registry = ModelRegistry(client, settings.topic_interactions)
    service = TrainerService(settings, registry, TrainerMetrics())
    runner = web.AppRunner(web_app(service, time.time()), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_bind, settings.trainer_metrics_port)
    await site.start()
    log.info("trainer metrics on %s:%d", settings.metrics_bind, settings.trainer_metrics_port)
    try:
        await service.run(stop)
    finally:
        await runner.cleanup()
        await client.aclose()
