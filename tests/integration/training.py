"""Checks of the training topic and the trainer, shared by the trainer's tests
and the chaos suite: what a run's examples and models must equal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from detectors.config import DetectorConfig
from detectors.features import HESITATION_FEATURES
from detectors.models import DetectorModels
from detectors.trainer import Trainer
from detectors.training import Example, examples_of
from stream.model_registry import ModelRegistry, ModelVersion, decompress

from .harness import Env, consume


def labelled(example: Example) -> tuple[Any, ...]:
    """What a run must agree on: the outcome, the close and the labelled
    snapshots and signal counts. The moments are left out: they carry the
    anomaly and trust scores of the model version served at the time."""
    snapshots = tuple((ts, tuple(v)) for ts, v in example.snapshots)
    return (example.outcome, example.closed_ts, snapshots, example.signal_counts)


async def training_records(
    env: Env, expected: int, timeout: float = 120.0, settle_s: float | None = None
) -> list[Any]:
    """The training topic's records, once ``expected`` distinct examples are
    on it; with ``settle_s``, then every record until none came for that long
    (the closure marks that follow the last examples)."""

    def done(messages: list[Any]) -> bool:
        return len({e.id for e in examples_of([m.value for m in messages])}) >= expected

    got = await consume(env.bootstrap, env.training, until=done, timeout=timeout)
    if settle_s is None:
        return got
    return await consume(env.bootstrap, env.training, timeout=timeout, idle=settle_s)


def registry(env: Env) -> tuple[aioredis.Redis, ModelRegistry]:
    client = aioredis.Redis.from_url(env.redis_db_url)
    return client, ModelRegistry(client, env.interactions)


async def published_through(env: Env, offset: int, timeout: float = 90.0) -> ModelVersion:
    """The latest version once it covers the training topic up to ``offset``
    and had learned every example due (none released and waiting: the
    trainer learns them in slices, and may publish between two)."""
    client, reg = registry(env)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            latest = await reg.latest()
            version = None if latest is None else await reg.version(latest)
            if version is not None and version.offset >= offset:
                state = await reg.trainer_state()
                if state is not None and state.version == version.number and not state.ready:
                    return version
            await asyncio.sleep(0.5)
        raise AssertionError(f"no version covers training offset {offset} after {timeout}s")
    finally:
        await client.aclose()


async def learned_models(env: Env, number: int) -> DetectorModels:
    client, reg = registry(env)
    try:
        blob = await reg.load(number)
    finally:
        await client.aclose()
    assert blob is not None
    models = DetectorModels(DetectorConfig())
    models.adopt(DetectorModels.loads_learned(decompress(blob)), f"v{number}")
    return models


def predictions(models: DetectorModels, probe: Sequence[Example]) -> list[float]:
    """Every learned model's output on a fixed probe set."""
    out: list[float] = []
    for example in probe:
        for _, vector in example.snapshots:
            out.append(models.trust.predict_vector(list(vector)))
        for _, vector in example.moments:
            out.append(models.hazard.predict(list(vector)))
            x = {name: float(v) for name, v in zip(HESITATION_FEATURES, vector, strict=False)}
            out.append(models.hesitation.score("evaluate", x).score)
    out += [mean.get() for mean in models.signal_means]
    return out


def offline_trainer(records: Sequence[Any]) -> Trainer:
    """The core's trainer over the same records in the same order."""
    trainer = Trainer(DetectorConfig())
    for record in records:
        trainer.apply(record.offset, record.value)
    return trainer


def sorted_records(records: Sequence[Any]) -> list[Any]:
    return sorted(records, key=lambda m: m.offset)


def training_problems(env: Env, expected: Sequence[Example], records: Sequence[Any]) -> list[str]:
    """What is wrong with a run's training topic and trainer, as sentences:
    the deduplicated labelled examples must be the replay's, and the last
    version must cover the topic and equal the core over the same records."""
    out: list[str] = []
    got = {e.id: labelled(e) for e in examples_of([r.value for r in records])}
    want = {e.id: labelled(e) for e in expected}
    if missing := set(want) - set(got):
        out.append(f"{len(missing)} example(s) missing from the training topic")
    if extra := set(got) - set(want):
        out.append(f"{len(extra)} example(s) on the training topic the replay never closed")
    if wrong := [i for i in set(got) & set(want) if got[i] != want[i]]:
        out.append(f"{len(wrong)} example(s) labelled otherwise than by the replay")
    if not records:
        return out
    ordered = sorted_records(records)
    try:
        version = asyncio.run(published_through(env, ordered[-1].offset + 1, timeout=60))
    except AssertionError as exc:
        return [*out, str(exc)]
    served = asyncio.run(learned_models(env, version.number))
    # the records the version covers (closure marks may have come since)
    covered = asyncio.run(records_through(env, version.offset))
    trainer = offline_trainer(covered)
    probe = examples_of([r.value for r in ordered[:60]])[:40]
    if predictions(served, probe) != predictions(trainer.models, probe):
        out.append(
            f"the trainer's v{version.number} predicts otherwise than the core on the same records"
        )
    if version.examples != trainer.models.examples:
        out.append(
            f"v{version.number} learned {version.examples} sessions, the core "
            f"{trainer.models.examples} of the same records"
        )
    if trainer.models.examples + trainer.held != len(got):
        out.append(
            f"the core learned {trainer.models.examples} and holds {trainer.held} examples, "
            f"the topic holds {len(got)}"
        )
    return out


async def records_through(env: Env, offset: int, timeout: float = 60.0) -> list[Any]:
    """The training topic's records below ``offset``, in order."""

    def done(messages: list[Any]) -> bool:
        return any(m.offset >= offset - 1 for m in messages)

    got = await consume(env.bootstrap, env.training, until=done, timeout=timeout)
    return [m for m in sorted_records(got) if m.offset < offset]
