"""What a trainer resumes from when it takes the training partition over.

The newest published version with its resume state
(:class:`~stream.model_registry.TrainerState`): from Redis, or, when Redis lost
it, from the last snapshot of the pipeline on the compacted models topic;
fresh models when neither has one. Failing to read either raises, so the
take-over is tried again rather than starting afresh over a published version.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from detectors.challenger import configure_arena
from detectors.models import DetectorModels
from detectors.trainer import Trainer
from stream.kafka_io import MODELS_MAX_BYTES, client_options, stop_consumer
from stream.model_registry import ModelRegistry, TrainerState, decompress, unpack_snapshot
from stream.settings import Settings

log = logging.getLogger("disengage.trainer")


class Restored:
    """A trainer rebuilt from a published version (or fresh)."""

    def __init__(self, trainer: Trainer, version: int, source: str) -> None:
        self.trainer = trainer
        self.version = version
        self.source = source  # "redis", "models topic" or "fresh"


def rebuild(settings: Settings, state: TrainerState | None, learned: bytes | None) -> Trainer:
    """A :class:`Trainer` with the models of ``learned`` (compressed
    :meth:`DetectorModels.dumps_learned`) at ``state``'s position; fresh
    when either is missing."""
    models = DetectorModels(settings.detector)
    if state is None or learned is None:
        return Trainer(settings.detector, models, hold_max=settings.trainer_hold_max, lazy=True)
    models.adopt(DetectorModels.loads_learned(decompress(learned)), f"v{state.version}")
    models.tag = None  # learning goes on from here
    # the challenger settings in force now, not those the version was made with
    models.arena = configure_arena(models.arena, settings.detector)
    return Trainer(
        settings.detector,
        models,
        position=state.position,
        hold_max=settings.trainer_hold_max,
        lazy=True,
    )


async def restore(settings: Settings, registry: ModelRegistry) -> Restored:
    """The trainer's newest resume state: Redis, else the models topic, else fresh.
    Raises when Redis or the broker cannot be read (the take-over is tried
    again): starting fresh then would publish versions that learned less
    than the last one."""
    state = await registry.trainer_state()
    if state is not None:
        learned = await registry.trainer_models()
        if learned is not None:
            trainer = await asyncio.to_thread(rebuild, settings, state, learned)
            return Restored(trainer, state.version, "redis")
        log.warning("Redis has the trainer state of v%d but not its models", state.version)
    snapshot = await snapshot_from_topic(settings, registry.ns)
    if snapshot is not None:
        state, learned = snapshot
        trainer = await asyncio.to_thread(rebuild, settings, state, learned)
        return Restored(trainer, state.version, "models topic")
    return Restored(rebuild(settings, None, None), 0, "fresh")


async def snapshot_from_topic(settings: Settings, ns: str) -> tuple[TrainerState, bytes] | None:
    """The last record of pipeline ``ns`` on the compacted models topic."""
    s = settings
    consumer = AIOKafkaConsumer(
        **client_options(s),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MODELS_MAX_BYTES,
        fetch_max_bytes=MODELS_MAX_BYTES,
    )
    await consumer.start()
    try:
        if s.topic_models not in await consumer.topics():
            return None
        tp = TopicPartition(s.topic_models, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found: bytes | None = None
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                if record.key == ns.encode() and record.value is not None:
                    found = record.value
        return None if found is None else unpack_snapshot(found)
    except ValueError as exc:  # unreadable: start afresh from the topic's first record
        log.warning("the models topic's last snapshot is unreadable: %s", exc)
        return None
    finally:
        await stop_consumer(consumer)
