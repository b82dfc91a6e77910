"""The alerts topic, read into the collector's page channels.

Every collector reads every partition of the alerts topic (no consumer
group: each instance serves whichever sessions connect to it) and keeps the
interventions of treated sessions in its :class:`SessionChannels`. At start
it goes back :data:`REPLAY_S` seconds, so a page that reconnects to a
restarted collector still finds an alert raised just before the restart;
older alerts are past helping anyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer

from stream.collector.channel import SessionChannels, page_view_of
from stream.collector.metrics import CollectorMetrics
from stream.kafka_io import client_options, seek_back, stop_consumer
from stream.settings import Settings
from stream.worker.faults import Throttled

log = logging.getLogger("disengage.collector")

#: How far back (seconds) a starting collector reads the alerts topic.
REPLAY_S = 120.0
#: Longest wait for alerts in one fetch (ms): an alert reaches its page
#: within this of being produced, well inside the one-second target.
FETCH_MAX_WAIT_MS = 100


class AlertFeed:
    """Alerts topic -> :class:`SessionChannels`, until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        channels: SessionChannels,
        metrics: CollectorMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.channels = channels
        self.metrics = metrics
        self.clock = clock
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._bad = Throttled(log, 60.0)

    async def run(self) -> None:
        """Read and publish until :meth:`stop`; a broker failure is retried
        by the consumer itself (it reconnects), so this only ends on stop."""
        topic = self.settings.topic_alerts
        consumer = self.consumer = AIOKafkaConsumer(
            topic,
            **client_options(self.settings),
            group_id=None,
            enable_auto_commit=False,
            # a partition found after the start (the topic created later) is
            # read from its beginning; _publish skips what is too old
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        try:
            await consumer.start()
            await seek_back(consumer, int((self.clock() - REPLAY_S) * 1000))
            self.ready.set()
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                oldest_ms = (self.clock() - REPLAY_S) * 1000
                for messages in batch.values():
                    for message in messages:
                        if message.timestamp >= oldest_ms:
                            self._publish(message.value)
        finally:
            await stop_consumer(consumer)

    def _publish(self, value: bytes | None) -> None:
        try:
            alert = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            self._bad.log("the alerts topic holds a record that is not JSON: skipped")
            return
        if not isinstance(alert, dict):
            return
        sid, intervention = page_view_of(alert)
        if intervention is not None and self.channels.publish(sid, intervention):
            self.metrics.interventions_read.inc()

    def stop(self) -> None:
        self._stopping.set()
