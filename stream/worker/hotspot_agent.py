"""The shared hotspot monitors: one per owned partition of the page-visits topic.

A friction hotspot is a page whose share of visits ending in friction or
abandonment rises (:mod:`detectors.hotspots`). Its ADWIN test needs the
page's whole traffic: split over input partitions by session id, each
partition's monitor sees 1/N of the visits, and at 4,000 sessions over 4 or
more partitions none of three simulated incidents was found
(``make bench-hotspots``). So with ``DISENGAGE_HOTSPOT_SCOPE=shared`` (the
default) the workers send each page visit to the page-visits topic, keyed by
its hotspot key, and the worker that owns the key's partition observes it
here, in one monitor that sees every visit of that page.

Delivery is approximate, as the per-partition checkpoints were: a worker
produces the visits of a batch after saving its states (a crash in between
loses at most that batch's visits), and a monitor is checkpointed to Redis
at most :data:`CHECKPOINT_S` after the visits it observed, when its
partition is revoked and at shutdown. Faust commits the consumed offsets
every second, so a ``kill -9`` of a monitor's worker loses the visits it
observed since its last checkpoint (5 s at most): the next owner restores
the checkpoint and goes on from the committed offset. A lost visit changes
a page's rate by one visit in hundreds; the alert id names the key and the
incident's episode, so an alert raised again has the id of the first. A
record that is not a list of visits goes to the dead-letter topic
(``invalid_visits``); nothing else is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import TypeVar

from detectors.alerts import Alert, rfc3339
from detectors.config import DetectorConfig
from detectors.detector import observe_visit
from detectors.hotspots import HotspotMonitor, visits_from_json
from detectors.journey import JourneyTracker
from detectors.models import dumps_monitor, loads_monitor
from detectors.store import SessionStore
from stream.metrics import Metrics
from stream.records import Message, Record, Sink, alert_record, dead_letter
from stream.retry import backoff, retry_forever
from stream.worker.delivery import STORE_BACKOFF, retry
from stream.worker.faults import Fault

log = logging.getLogger("disengage.hotspots")

#: Longest time a monitor's observed visits wait for a checkpoint (seconds):
#: the visits a crash can lose. A checkpoint is ~1 KB per page key.
CHECKPOINT_S = 5.0

T = TypeVar("T")


def monitor_name(partition: int) -> str:
    """The store blob of the shared monitor of page-visits ``partition``."""
    return f"hotspots-v{partition}"


class SharedHotspots:
    """The monitors of the page-visits partitions this worker owns.

    ``version``: the model version named in the alerts (the one the worker
    serves); ``clock``: wall-clock seconds, for checkpoint ages and the
    alerts' ``producedat``. Callers serialise :meth:`process`,
    :meth:`assign`, :meth:`revoke` and :meth:`checkpoint` (one lock).
    """

    def __init__(
        self,
        config: DetectorConfig,
        store: SessionStore,
        sink: Sink,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        version: Callable[[], str],
    ) -> None:
        self.config = config
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.version = version
        self.journey = JourneyTracker(config)
        self.monitors: dict[int, HotspotMonitor] = {}
        self.checkpointed_at: dict[int, float] = {}
        self.store_fault = Fault("Redis (hotspots)", log)
        self.produce_fault = Fault("Kafka produce (hotspots)", log)

    async def _store(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        return await retry(op, call, metrics=self.metrics, fault=self.store_fault)

    # ------------------------------------------------------------ ownership
    async def assign(self, partitions: Iterable[int]) -> None:
        """Restore the monitors of ``partitions`` from their checkpoints (a
        missing or unreadable one starts empty, with a warning for the latter)."""
        for p in partitions:
            if p in self.monitors:
                continue
            blob = await self._store("load_blob", partial(self.store.load_blob, monitor_name(p)))
            monitor = HotspotMonitor(self.config)
            if isinstance(blob, bytes):
                try:
                    monitor = loads_monitor(blob)
                except ValueError as exc:
                    log.warning("page-visits partition %d: ignoring its checkpoint (%s)", p, exc)
            self.monitors[p] = monitor
            self.checkpointed_at[p] = self.clock()

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Checkpoint, then give up, the monitors of ``partitions``."""
        gone = [p for p in partitions if p in self.monitors]
        await self.checkpoint(gone)
        for p in gone:
            del self.monitors[p]
            del self.checkpointed_at[p]
        if gone:
            self.update_gauges()

    async def checkpoint(self, partitions: Iterable[int] | None = None) -> None:
        """Save the monitors of ``partitions`` (default: all owned) to the store."""
        for p in list(self.monitors if partitions is None else partitions):
            monitor = self.monitors.get(p)
            if monitor is None:
                continue
            blob = dumps_monitor(monitor)
            await self._store("save_blob", partial(self.store.save_blob, monitor_name(p), blob))
            self.checkpointed_at[p] = self.clock()

    def oldest_checkpoint(self) -> float | None:
        """Wall-clock time of the oldest checkpoint of an owned monitor."""
        return min(self.checkpointed_at.values(), default=None)

    # ------------------------------------------------------------- the batch
    async def process(self, messages: Sequence[Message]) -> int:
        """Observe a batch of page-visits records; produce the hotspot alerts
        and dead letters, retried until the broker acknowledges them (the
        monitors have moved: the batch must not be observed twice). Returns
        the number of alerts."""
        alerts: list[Alert] = []
        dead: list[Record] = []
        observed = 0
        now = self.clock()
        version = self.version()
        for message in messages:
            if message.partition not in self.monitors:
                await self.assign([message.partition])
            monitor = self.monitors[message.partition]
            try:
                if message.value is None:
                    raise ValueError("null value (a tombstone)")
                visits = visits_from_json(message.value)
            except ValueError as exc:
                self.metrics.dlq.labels("invalid_visits").inc()
                dead.append(dead_letter(message, "invalid_visits", str(exc), now))
                continue
            for visit in visits:
                alert = observe_visit(self.config, self.journey, monitor, visit, version)
                if alert is not None:
                    alerts.append(alert)
            observed += len(visits)
        self.metrics.page_visits.labels("observed").inc(observed)
        due = [
            p
            for p in {m.partition for m in messages}
            if p in self.monitors and self.clock() - self.checkpointed_at[p] >= CHECKPOINT_S
        ]
        if due:
            await self.checkpoint(due)
        if dead:
            log.warning("%d unreadable page-visits record(s): dead-lettered", len(dead))
            await self._produce("dead_letters", self.sink.send_dead_letters, dead)
        if alerts:
            produced_at = rfc3339(int(now * 1000))
            records = [alert_record(a, self.config.source, produced_at) for a in alerts]
            await self._produce("alerts", self.sink.send_alerts, records)
            acked = self.clock()
            for alert in alerts:
                self.metrics.alerts.labels(alert.kind, alert.severity).inc()
                self.metrics.event_to_alert.labels(alert.kind).observe(
                    max(0.0, acked - alert.event_time / 1000)
                )
                log.info("friction hotspot on %s (%s)", alert.page, alert.severity)
        self.update_gauges()
        return len(alerts)

    async def _produce(
        self,
        what: str,
        send: Callable[[Sequence[Record]], Awaitable[None]],
        records: Sequence[Record],
    ) -> None:
        async def attempt() -> None:
            await send(records)

        def failed(exc: BaseException, delay: float) -> None:
            self.metrics.produce_failures.labels(what).inc()
            self.produce_fault.failed(exc, f"producing {len(records)} hotspot {what}")

        await retry_forever(attempt, wait=backoff(*STORE_BACKOFF), on_failure=failed)
        self.produce_fault.ok()

    def update_gauges(self) -> None:
        """Problem rate per key and partition, and the open incidents."""
        self.metrics.show_hotspots(self.monitors)
