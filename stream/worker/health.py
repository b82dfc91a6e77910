"""How the worker reports its health: readiness and the gauges refreshed by a timer.

``/readyz`` and the ``disengage_ready`` gauge share :func:`readiness`, so the
dashboards and the orchestrator never disagree on what "ready" means.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import faust

if TYPE_CHECKING:
    from stream.worker.app import Runtime

#: Longest wait for the store to answer a ping before it counts as down (seconds).
PING_TIMEOUT_S = 1.0


async def readiness(app: faust.App, runtime: Runtime) -> tuple[bool, bool]:
    """(ready, store reachable): ready = owns partitions, not rebalancing,
    batches succeeding and Redis answering a ping within :data:`PING_TIMEOUT_S`."""
    try:
        await asyncio.wait_for(runtime.store.ping(), timeout=PING_TIMEOUT_S)
        store_ok = True
    except Exception:
        store_ok = False
    ready = (
        store_ok and runtime.healthy and bool(runtime.processor.partitions) and not app.rebalancing
    )
    return ready, store_ok


async def update_gauges(app: faust.App, runtime: Runtime) -> None:
    """Checkpoint age, readiness (as /readyz), consumer lag per owned
    partition and open sessions. The first two never wait on Kafka or Redis
    calls that may hang, so they stay true during an outage."""
    # the checkpoint age keeps growing between checkpoints
    parts = runtime.processor.partitions.values()
    if parts:
        oldest = min(part.checkpointed_at for part in parts)
        runtime.metrics.checkpoint_age.set(max(0.0, runtime.processor.clock() - oldest))
    ready, store_ok = await readiness(app, runtime)
    runtime.metrics.ready.set(1.0 if ready else 0.0)
    if app.rebalancing or not store_ok:
        return
    consumer = app.consumer
    topic = runtime.settings.topic_interactions
    tps = sorted(tp for tp in consumer.assignment() if tp.topic == topic)
    if tps:
        highwaters = await consumer.highwaters(*tps)
        for tp in tps:
            high = highwaters.get(tp)
            # Faust's own record of the last committed offset (next to read)
            committed = getattr(consumer, "_committed_offset", {}).get(tp)
            if high is not None:
                runtime.metrics.consumer_lag.labels(str(tp.partition)).set(
                    max(0, high - (committed or 0))
                )
    runtime.metrics.active_sessions.set(
        sum([await runtime.store.open_sessions(p) for p in runtime.processor.partitions])
    )
