"""The worker's side of model versions, with a registry in memory: loading off
the batch path, adoption between batches, the version on every alert, and the
order of the training examples a worker produces."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest

from detectors.models import DetectorModels
from detectors.training import example_from_event
from stream.metrics import Metrics
from stream.model_registry import ZSTD_MAGIC, ModelVersion, compress, decompress
from stream.worker.model_feed import ModelFeed
from tests.unit.test_batch_processor import RULES_ONLY, Feed, Worker


class MemoryRegistry:
    """The reads of :class:`stream.model_registry.ModelRegistry`, in memory."""

    def __init__(self) -> None:
        self.blobs: dict[int, bytes] = {}
        self.meta: dict[int, ModelVersion] = {}
        self.pin: int | None = None
        self.reads = 0

    def add(self, number: int, blob: bytes | None = None) -> None:
        models = DetectorModels(RULES_ONLY)
        self.blobs[number] = blob if blob is not None else compress(models.dumps_learned())
        self.meta[number] = ModelVersion(number, 1_700_000_000_000, 0, 0, None, None, "linear", 1)

    async def serving(self) -> int | None:
        if self.pin is not None:
            return self.pin
        return max(self.meta, default=None)

    async def version(self, number: int) -> ModelVersion | None:
        return self.meta.get(number)

    async def load(self, number: int) -> bytes | None:
        self.reads += 1
        return self.blobs.get(number)


def feed_of(registry: MemoryRegistry, metrics: Metrics) -> ModelFeed:
    return ModelFeed(registry, metrics)  # type: ignore[arg-type]


async def test_a_new_version_is_loaded_once_and_served_from_the_next_batch() -> None:
    registry = MemoryRegistry()
    worker = Worker()
    feed = feed_of(registry, worker.metrics)
    worker.processor.feed = feed
    assert await feed.poll() is None  # nothing published yet
    registry.add(1)
    loaded = await feed.poll()
    assert loaded is not None and loaded.tag == "v1"
    assert await feed.poll() is None and registry.reads == 1  # loaded once
    batch = Feed()
    await worker.processor.process(batch.pile_up("a"))
    models = worker.processor.partitions[0].detector.models
    assert models.version == "v1"
    assert worker.metric("disengage_model_version") == 1
    (record,) = [r for _, r in worker.sink.topic]
    assert json.loads(record.value or b"")["data"]["model_version"] == "v1"

    # a pin wins over a newer version; a new partition serves the current one
    registry.add(2)
    registry.pin = 1
    assert await feed.poll() is None
    registry.pin = None
    assert (await feed.poll()) is not None
    await worker.processor.process(batch.pile_up("b", partition=1))
    versions = {p: part.detector.models.version for p, part in worker.processor.partitions.items()}
    assert versions == {0: "v2", 1: "v2"}


async def test_an_incompatible_version_is_refused_once_and_the_old_one_kept() -> None:
    registry = MemoryRegistry()
    worker = Worker()
    feed = feed_of(registry, worker.metrics)
    registry.add(1)
    await feed.poll()
    feed.take()
    registry.add(2, blob=compress(b"not a pickle of models"))
    assert await feed.poll() is None
    registry.add(3, blob=compress(_other_format()))
    assert await feed.poll() is None
    assert await feed.poll() is None and registry.reads == 3  # v3 is not read again
    assert worker.metric("disengage_model_loads_total", result="failed") == 2
    assert feed.current is not None and feed.current.tag == "v1"


def _other_format() -> bytes:
    import pickle

    header: dict[str, Any] = {"format": -1, "river": "0", "name": "other"}
    return pickle.dumps((header, {}))


async def test_examples_reach_the_training_topic_in_input_order_whatever_the_batches() -> None:
    """One partition's examples go out in the order their sessions closed in
    the input, however the input is cut into batches: the trainer then learns
    the same sequence on every run."""
    orders = []
    for cut in (1, 3, 7, 100):
        worker, feed = Worker(), Feed()
        messages = []
        for i, sid in enumerate(["d", "b", "e", "a", "c"]):
            messages += feed.quiet(sid, 2, start=1000 * i)
        # the sessions leave in another order than they came
        for i, sid in enumerate(["c", "a", "e", "b", "d"]):
            messages.append(feed.event(sid, "exit", 10_000 + 1000 * i))
        for start in range(0, len(messages), cut):
            await worker.processor.process(messages[start : start + cut])
        orders.append([example_from_event(r.value or b"").sid for r in worker.sink.examples])
    assert orders == [["c", "a", "e", "b", "d"]] * 4


async def test_a_failed_training_produce_is_delivered_before_the_next_batch() -> None:
    worker, feed = Worker(), Feed()
    await worker.processor.assign([0])  # (its first closure mark goes out)
    worker.sink.fail_training.append(ConnectionError("broker down"))
    messages = [*feed.quiet("s", 2), feed.event("s", "exit", 5000)]
    with pytest.raises(ConnectionError):
        await worker.processor.process(messages)
    assert worker.processor.undelivered and not worker.sink.examples
    assert (await worker.state("s")).outbox  # the example waits in the outbox
    await worker.processor.process(messages)  # the batch, retried: duplicates now
    (record,) = worker.sink.examples
    assert example_from_event(record.value or b"").outcome == "exit"
    assert not (await worker.state("s")).outbox
    assert worker.metric("disengage_produce_failures_total", what="training") == 1


async def test_a_version_an_earlier_release_compressed_with_zlib_is_still_served() -> None:
    """Versions are zstd frames since 2026-11-30; the zlib ones published
    before an upgrade (and the trainer's zlib snapshot) still load."""
    registry = MemoryRegistry()
    models = DetectorModels(RULES_ONLY)
    registry.add(1, zlib.compress(models.dumps_learned(), 1))
    registry.add(2)
    assert registry.blobs[2].startswith(ZSTD_MAGIC) and not registry.blobs[1].startswith(ZSTD_MAGIC)
    assert decompress(registry.blobs[1]) == decompress(compress(models.dumps_learned()))
    registry.pin = 1
    feed = feed_of(registry, Metrics())
    loaded = await feed.poll()
    assert loaded is not None and loaded.tag == "v1"
    registry.pin = None
    loaded = await feed.poll()
    assert loaded is not None and loaded.tag == "v2"
