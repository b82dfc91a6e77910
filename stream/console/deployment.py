"""The console of a deployment: figures read from its Kafka topics.

* the **alerts topic**: the live panel, the sessions at risk and the
  hotspots (the alerts of the last ``since_s`` seconds first, then new ones);
* the **training topic**: every closed session, as the workers send it to
  the trainer: its outcome, its trust marks and prefix score
  (:mod:`detectors.trust_map`), its holdout group and the slices of its
  alerts. They give the trust map, the score's validation and the uplift.

Both are read without a consumer group (the console takes nothing from the
workers or the trainer). A hotspot's end is not on the alerts topic, so
incidents are listed with their last alert, not as open or closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from detectors.console_stats import ConsoleStats
from detectors.training import Example, InvalidExample, training_record
from stream.kafka_io import client_options, seek_back, stop_consumer
from stream.retry import Stopped, backoff, retry_forever
from stream.settings import Settings
from stream.worker.faults import Fault, Throttled

log = logging.getLogger("disengage.console")


class DeploymentSource:
    """The console's figures of a running deployment (``settings``' topics),
    from ``since_s`` seconds back. :meth:`run` reads until :meth:`stop`."""

    def __init__(self, settings: Settings, since_s: float) -> None:
        self.settings = settings
        self.since_s = since_s
        self.stats = ConsoleStats(settings.detector)
        self.lock = threading.Lock()
        self.read = {"alerts": 0, "training": 0}
        self._stopping = asyncio.Event()
        self._bad = Throttled(log, 60.0)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            snap = self.stats.snapshot()
        snap["source"] = (
            f"deployment: topics {self.settings.topic_alerts} and "
            f"{self.settings.topic_training} on {self.settings.kafka_bootstrap_servers}"
        )
        return snap

    async def run(self) -> None:
        """Read both topics until :meth:`stop`, retrying after a failure."""
        fault = Fault("console's topic reader", log)
        with contextlib.suppress(Stopped):
            await retry_forever(
                self._read,
                wait=backoff(2.0, 10.0),
                on_failure=lambda e, d: fault.failed(e, "read"),
                stop=self._stopping,
            )

    def stop(self) -> None:
        self._stopping.set()

    async def _read(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            s.topic_alerts,
            s.topic_training,
            **client_options(s),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
        )
        try:
            await consumer.start()
            await seek_back(consumer, int((time.time() - self.since_s) * 1000))
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                with self.lock:
                    for tp, messages in batch.items():
                        for message in messages:
                            self._take(tp.topic, message.value)
        finally:
            await stop_consumer(consumer)

    def _take(self, topic: str, value: bytes | None) -> None:
        if topic == self.settings.topic_training:
            try:
                record = training_record(value or b"")
            except InvalidExample:
                self._bad.log("the training topic holds a record that is not an example: skipped")
                return
            if isinstance(record, Example):  # (a closure mark is for the trainer)
                self.stats.closed_example(record)
                self.read["training"] += 1
            return
        try:
            alert = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            self._bad.log("the alerts topic holds a record that is not JSON: skipped")
            return
        if isinstance(alert, dict):
            self.stats.alert_event(alert)
            self.read["alerts"] += 1
