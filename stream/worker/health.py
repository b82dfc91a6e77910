"""How the worker reports its health: readiness and the gauges refreshed by a timer.

``/readyz`` and the ``disengage_worker_ready`` gauge share :func:`readiness`,
so the dashboards and the orchestrator never disagree on what "ready" means.
Kafka is judged by :class:`BrokerProbe`, a metadata request of the worker's
own every :data:`~stream.worker.app.GAUGE_INTERVAL_S`: Faust's consumer keeps
its assignment through a broker outage, so owning partitions says nothing
about whether the broker can be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import faust
from aiokafka.client import AIOKafkaClient

from stream.kafka_io import client_options
from stream.settings import Settings
from stream.worker.faults import Fault

if TYPE_CHECKING:
    from stream.worker.app import Runtime

log = logging.getLogger("disengage.health")

#: Longest wait for the store to answer a ping before it counts as down (seconds).
PING_TIMEOUT_S = 1.0
#: Longest wait for the brokers' metadata before Kafka counts as down (seconds).
BROKER_TIMEOUT_S = 3.0


class BrokerProbe:
    """Whether the Kafka brokers answer a metadata request, with the worker's
    connection settings; its state changes are logged once each."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: AIOKafkaClient | None = None
        self.up = True  # until a probe says otherwise (Faust waits for Kafka at start)
        self.fault = Fault("Kafka brokers", log)

    async def check(self) -> bool:
        try:
            await asyncio.wait_for(self._metadata(), timeout=BROKER_TIMEOUT_S)
        except Exception as exc:
            self.up = False
            self.fault.failed(exc, "metadata request")
        else:
            self.up = True
            self.fault.ok()
        return self.up

    async def _metadata(self) -> Any:
        if self.client is None:  # kept only once bootstrapped: a failed one is replaced
            client = AIOKafkaClient(**client_options(self.settings), request_timeout_ms=2500)
            try:
                await client.bootstrap()
            except BaseException:
                with contextlib.suppress(Exception):
                    await client.close()
                raise
            self.client = client
        return await self.client.fetch_all_metadata()

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()


async def readiness(app: faust.App, runtime: Runtime) -> tuple[bool, bool]:
    """(ready, store reachable): ready = owns partitions, not rebalancing,
    batches succeeding, the brokers answering (as of the last probe) and
    Redis answering a ping within :data:`PING_TIMEOUT_S`."""
    try:
        await asyncio.wait_for(runtime.store.ping(), timeout=PING_TIMEOUT_S)
        store_ok = True
    except Exception:
        store_ok = False
    ready = (
        store_ok
        and runtime.broker.up
        and runtime.healthy
        and bool(runtime.processor.partitions)
        and not runtime.intake.rebalancing
        and not app.rebalancing
    )
    return ready, store_ok


async def update_gauges(app: faust.App, runtime: Runtime) -> None:
    """Checkpoint age, Kafka and Redis reachability, readiness (as /readyz),
    consumer lag per owned partition and open sessions. Every call that may
    hang during an outage has a timeout (:data:`BROKER_TIMEOUT_S`,
    :data:`PING_TIMEOUT_S`), so the gauges show an outage within one interval."""
    # the checkpoint age keeps growing between checkpoints
    times = [part.checkpointed_at for part in runtime.processor.partitions.values()]
    shared = runtime.hotspots.oldest_checkpoint() if runtime.hotspots is not None else None
    if shared is not None:
        times.append(shared)
    if times:
        runtime.metrics.checkpoint_age.set(max(0.0, runtime.processor.clock() - min(times)))
    kafka_ok = await runtime.broker.check()
    runtime.metrics.kafka_up.set(1.0 if kafka_ok else 0.0)
    ready, store_ok = await readiness(app, runtime)
    runtime.metrics.ready.set(1.0 if ready else 0.0)
    runtime.metrics.redis_up.set(1.0 if store_ok else 0.0)
    if store_ok:
        runtime.processor.store_fault.ok()
    else:
        runtime.processor.store_fault.failed("no answer to a ping within 1 s", "ping")
    if runtime.intake.rebalancing or not store_ok or not kafka_ok:
        return
    # records not processed yet, up to the partitions' end now
    for partition, lag in (await runtime.intake.lag(BROKER_TIMEOUT_S)).items():
        runtime.metrics.consumer_lag.labels(str(partition)).set(lag)
    counts = [runtime.store.open_sessions(p) for p in runtime.processor.partitions]
    total = await asyncio.wait_for(asyncio.gather(*counts), timeout=PING_TIMEOUT_S * 5)
    runtime.metrics.active_sessions.set(sum(total))
