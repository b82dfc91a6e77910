"""``disengage trainer``: one learner for the whole deployment.

The trainer consumes the training topic (one partition) in a consumer group
of its own (``DISENGAGE_TRAINER_GROUP``). The group gives the partition to one
member: that one learns, any other stands by and takes over when it dies (the
group's session timeout, 10 s, then a rebalance).

On taking the partition the trainer restores the newest published version
with its resume state (:class:`~stream.model_registry.TrainerState`), from
Redis or, when Redis lost it, from the compacted models topic, and seeks to
the first offset that version did not finish with (its position's first held
example, else the offset it covers). It never relies on committed offsets:
what it learned is exactly what its models and position say. Examples are
learned in the order their sessions closed, behind the workers' closure marks,
by :class:`~detectors.trainer.Trainer` (duplicates dropped by example id), and
at most every ``DISENGAGE_TRAINER_PUBLISH_S`` a new version is published: to
the models topic first (the durable copy), then to Redis in one transaction
(what the workers load). A trainer that loses the partition publishes what it
learned first. A crash loses only what was learned since the last publish,
which the next owner learns again from the same records in the same order:
the models end up identical.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from detectors.trainer import Trainer
from stream.kafka_io import MODELS_MAX_BYTES, client_options, make_producer, stop_consumer
from stream.metrics import TrainerMetrics
from stream.model_registry import (
    ModelRegistry,
    ModelVersion,
    TrainerState,
    compress,
    pack_snapshot,
)
from stream.settings import Settings
from stream.trainer.restore import Restored, restore
from stream.worker.faults import Fault

log = logging.getLogger("disengage.trainer")

#: Records taken per poll of the training topic.
POLL_RECORDS = 500

#: Examples learned between two turns of the event loop (~0.25 s at ~200
#: sessions/s): the consumer's heartbeats go out in between, however many
#: one closure mark released (one release of 2,000 sessions, learned in one
#: go, once cost the trainer its group membership).
LEARN_CHUNK = 50
#: Seconds of learning per step before the consumer is polled again.
LEARN_SLICE_S = 1.0
#: With this many examples due, the training partition is paused (polled,
#: nothing fetched) until learning catches up: read records wait on the
#: broker, not in memory.
READY_MAX = 5_000

#: A version that only covers closure marks which released nothing (idle
#: partitions) is published this many publish intervals after the last one
#: (2.5 min by default), not every interval.
MARKS_ONLY_PUBLISH_FACTOR = 10


def _rounded(pair: tuple[float, float]) -> tuple[float, float]:
    return round(pair[0], 4), round(pair[1], 4)


class TrainerService:
    """The trainer's loop over one consumer, one producer and the registry."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        metrics: TrainerMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.trainer: Trainer | None = None  # set while this one owns the partition
        #: the group assigned the partition here and has not revoked it (aiokafka's
        #: assignment() still lists it between a revocation and the next assignment)
        self.owned = False
        self.version = 0  # the version the trainer's models are (0: none)
        self.dirty = False  # records read (learned or not) since the last publish
        self.changed = False  # of those, any that changed the models or what is held
        self.published_at = clock()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: Any = None
        self.tp = TopicPartition(settings.topic_training, 0)
        self.lock = asyncio.Lock()  # learning, publishing and rebalances never interleave
        self.ready = False
        self.fault = Fault("Trainer", log)

    # ---------------------------------------------------------------- lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        """Learn until ``stop`` is set; then publish what was learned."""
        s = self.settings
        self.consumer = AIOKafkaConsumer(
            **client_options(s),
            group_id=s.trainer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
        )
        self.producer = make_producer(s, max_request_size=MODELS_MAX_BYTES, linger_ms=0)
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([s.topic_training], listener=_Listener(self))
        self.ready = True
        try:
            while not stop.is_set():
                try:
                    await self._step()
                except Exception as exc:  # Redis or Kafka away: retried, logged once
                    self.fault.failed(exc, "training step")
                    await asyncio.sleep(1.0)
                else:
                    self.fault.ok()
        finally:
            self.ready = False
            async with self.lock:
                if self.trainer is not None and self.dirty:
                    with contextlib.suppress(Exception):
                        await self.publish()
            await stop_consumer(self.consumer)
            await self.producer.stop()

    async def _step(self) -> None:
        assert self.consumer is not None
        if self.owned and self.trainer is None:
            # the partition is ours but taking it over failed at the rebalance
            # (Redis or the models topic away): again, until it succeeds (a
            # failure is logged once by run() and retried a second later);
            # what was fetched meanwhile is read again from the resume offset
            async with self.lock:
                if self.owned and self.trainer is None:
                    await self.take_over()
        trainer = self.trainer
        # (not while examples due are still to be read again: they must be fetched)
        behind = trainer is not None and trainer.ready >= READY_MAX and not trainer.reloading
        if self.trainer is not None and self.tp in self.consumer.assignment():
            if behind:
                self.consumer.pause(self.tp)
            else:
                self.consumer.resume(self.tp)
        batch = await self.consumer.getmany(
            timeout_ms=0 if behind else 500, max_records=POLL_RECORDS
        )
        async with self.lock:
            for tp, records in batch.items():
                if tp == self.tp and self.trainer is not None:
                    self._learn(records)
            await self._learn_ready()
            if self.trainer is not None and self._publish_due():
                await self.publish()
            await self._update_lag()

    async def _learn_ready(self) -> None:
        """Learn the examples due, :data:`LEARN_CHUNK` at a time, yielding to
        the event loop in between, for up to :data:`LEARN_SLICE_S`."""
        trainer = self.trainer
        if trainer is None or not trainer.ready:
            return
        deadline = time.perf_counter() + LEARN_SLICE_S
        learned = 0
        while trainer.ready and time.perf_counter() < deadline:
            done = trainer.learn_ready(LEARN_CHUNK)
            if not done:
                break  # (examples still to be read again after a restart)
            learned += done
            await asyncio.sleep(0)
        if learned:
            self.changed = self.dirty = True
            self._show_order(trainer)

    def _learn(self, records: list[Any]) -> None:
        trainer = self.trainer
        assert trainer is not None
        arena = trainer.models.arena
        promoted = 0 if arena is None else arena.promoted_total
        lost = trainer.lost
        for record in records:
            before = (trainer.ready, trainer.held)
            again = record.offset < trainer.offset  # read again after a restart
            status = trainer.apply(record.offset, record.value)
            self.metrics.records.labels(status).inc()
            # a duplicate or a refused record moves the offset too: the next
            # version must cover it, or a copy at the topic's end (a worker
            # delivering an outbox again after a takeover) leaves the latest
            # version short of the topic until something new closes
            self.dirty = True
            # a mark that released nothing changes no model: idle partitions'
            # marks follow the wall clock, and would publish the same models
            # every interval (pushing the rollback history out)
            if not again and (status != "mark" or (trainer.ready, trainer.held) != before):
                self.changed = True
            if status == "invalid":
                log.warning(
                    "training record at offset %d refused: %s", record.offset, trainer.last_error
                )
        if trainer.lost > lost:
            log.warning(
                "%d example(s) the last version held were gone from the training topic "
                "(retention) when read again: they are not learned",
                trainer.lost - lost,
            )
        self._show_order(trainer)
        self.metrics.show_uplift(trainer.models.uplift)
        if arena is not None and arena.promoted_total > promoted:
            swap = arena.promotions[-1]
            log.info(
                "trust challenger promoted after %d sessions: %s (window AUC %.3f) replaces "
                "%s (%.3f); it serves from the next version",
                swap.closed,
                swap.promoted,
                swap.promoted_auc,
                swap.demoted,
                swap.demoted_auc,
            )

    def _show_order(self, trainer: Trainer) -> None:
        m = self.metrics
        m.examples.set(trainer.models.examples)
        m.held.set(trainer.held + trainer.ready)
        watermark = trainer.order.watermark
        if watermark is not None:
            m.watermark.set(watermark / 1000)

    def _publish_due(self) -> bool:
        if not self.dirty:
            return False
        interval = self.settings.trainer_publish_s
        if not self.changed:  # only marks that released nothing: covered, not urgent
            interval *= MARKS_ONLY_PUBLISH_FACTOR
        return self.clock() - self.published_at >= interval

    async def _update_lag(self) -> None:
        if self.trainer is None or self.consumer is None:
            self.metrics.lag.set(0)
            return
        end = self.consumer.highwater(self.tp)
        if end is not None:
            self.metrics.lag.set(max(0, end - self.trainer.offset))

    # ------------------------------------------------------------------ publish
    async def publish(self) -> ModelVersion:
        """Publish the trainer's models as a new version: models topic, then Redis."""
        trainer = self.trainer
        assert trainer is not None
        started = time.perf_counter()
        models = trainer.models
        learned, serving = await asyncio.to_thread(
            lambda: (compress(models.dumps_learned()), compress(models.dumps_serving()))
        )
        latest = await self.registry.latest() or 0
        number = max(latest, self.version) + 1
        state = TrainerState.at(number, trainer.position)
        trust, hazard, arena = models.trust, models.hazard, models.arena
        version = ModelVersion(
            number=number,
            created_ms=int(time.time() * 1000),
            offset=trainer.offset,
            examples=models.examples,
            trust_auc=None if trust.auc is None else round(trust.auc, 4),
            hazard_auc=None if hazard.auc is None else round(hazard.auc, 4),
            serving=trust.serving,
            size=len(serving),
            champion=trust.kind,
            challenger=None if arena is None else arena.challenger.kind,
            window_auc=None if arena is None or arena.last is None else _rounded(arena.last),
            promotions=0 if arena is None else arena.promoted_total,
        )
        await self.producer.send_and_wait(
            self.settings.topic_models,
            pack_snapshot(state, learned),
            key=self.registry.ns.encode(),
            headers=[("model.version", str(number).encode())],
        )
        await self.registry.publish(
            version, serving, state, self.settings.models_keep, learned=learned
        )
        self.version = number
        self.dirty = self.changed = False
        self.published_at = self.clock()
        m = self.metrics
        m.published.inc()
        m.publish_seconds.observe(time.perf_counter() - started)
        m.version.set(number)
        for name, auc in (("trust", version.trust_auc), ("hazard", version.hazard_auc)):
            if auc is not None:
                m.auc.labels(name).set(auc)
        if version.window_auc is None:  # no comparison since a promotion (or yet)
            m.arena_auc.clear()
        else:
            m.arena_auc.labels("champion").set(version.window_auc[0])
            m.arena_auc.labels("challenger").set(version.window_auc[1])
        m.promotions.set(version.promotions)
        log.info(
            "published model version v%d: %d sessions learned, offset %d, trust AUC %s "
            "(%s champion), %d bytes",
            number,
            version.examples,
            version.offset,
            version.trust_auc,
            version.champion,
            version.size,
        )
        return version

    # ---------------------------------------------------------------- ownership
    async def take_over(self) -> Restored:
        """Own the training partition: restore the newest version and seek to
        the offset it covers."""
        restored = await self.restore()
        self.trainer = restored.trainer
        self.version = restored.version
        self.dirty = self.changed = False
        self.published_at = self.clock()
        assert self.consumer is not None
        trainer = restored.trainer
        self.consumer.seek(self.tp, trainer.resume_offset)
        self.metrics.active.set(1)
        self._show_order(trainer)
        self.metrics.show_uplift(trainer.models.uplift)
        log.info(
            "training partition taken: resuming from %s (version v%d, offset %d; reading "
            "from %d for the %d example(s) it held)",
            restored.source,
            restored.version,
            trainer.offset,
            trainer.resume_offset,
            len(trainer.position.held),
        )
        return restored

    async def hand_over(self) -> None:
        """Give the partition up, publishing what was learned first."""
        if self.trainer is not None and self.dirty:
            try:
                await self.publish()
            except Exception as exc:  # the next owner learns it again
                log.warning("could not publish before handing over: %s", exc)
        self.trainer = None
        self.metrics.active.set(0)
        log.info("training partition handed over")

    async def restore(self) -> Restored:
        """The newest resume state (:func:`~stream.trainer.restore.restore`)."""
        return await restore(self.settings, self.registry)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Rebalances of the trainer group: take over or hand over the partition."""

    def __init__(self, service: TrainerService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.service.tp in revoked:
            self.service.owned = False  # first: no retried take-over from here on
            async with self.service.lock:  # (after a take-over in flight, if any)
                if self.service.trainer is not None:
                    await self.service.hand_over()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.service.tp in assigned:
            self.service.owned = True
            async with self.service.lock:
                try:
                    await self.service.take_over()
                except Exception as exc:  # the training loop tries again
                    log.warning("could not take the training partition over: %s", exc)
