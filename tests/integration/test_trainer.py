"""One model for the whole consumer group (issue 11): the training topic, the
trainer and the model versions, on the real broker and Redis.

* The workers learn nothing: every closed session's labelled example reaches
  the training topic once its session closes, and the deduplicated examples
  hold exactly the labelled snapshots the offline replay of the same events
  makes.
* The trainer learns them all, from every partition, into one model: its
  published version equals the core learning the same records offline, and
  the workers serve it.
* ``kill -9`` of a worker and of the active trainer mid-stream: a standby
  trainer takes over within 30 s, and the final models predict exactly what
  an uninterrupted trainer's do.
* ``disengage models list | promote | rollback`` on the real registry.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import EventParser
from detectors.models import DetectorModels
from detectors.offline.runner import OfflineRunner
from detectors.training import Example, Mark, examples_of, training_record
from stream.model_registry import ModelVersion, TrainerState, compress
from stream.settings import Settings

from .chaos import past_sessions
from .conftest import RULES_ONLY
from .harness import ROOT, Env, Worker, create_topics, event_records, flush, produce
from .training import (
    labelled,
    learned_models,
    offline_trainer,
    predictions,
    published_through,
    records_through,
    registry,
    sorted_records,
    training_records,
)

pytestmark = pytest.mark.integration

#: Trainer and worker settings of these tests: publish every second, poll
#: every half second; no wall-clock timeouts (the replay has no wall clock).
FAST = {
    "DISENGAGE_TRAINER_PUBLISH_S": "1",
    "DISENGAGE_MODEL_POLL_S": "0.5",
    "DISENGAGE_IDLE_GRACE_S": "600",
}


def replay_examples(events: Sequence[dict[str, Any]]) -> list[Example]:
    """The examples the offline detector makes of ``events`` (in order), as
    a worker that learns nothing would: closes by events and by timeouts of
    the stream clock, none at the end of input."""
    config = Settings.from_env(RULES_ONLY).detector  # the workers' own config
    detector = Detector(config, learn=False)
    runner = OfflineRunner(detector)
    parse = EventParser(config).parse
    for event in events:
        runner.feed(parse(json.dumps(event)))
    return list(detector.examples)


# -------------------------------------------------------------------------- tests
async def test_the_trainer_learns_one_model_from_every_partition(env: Env) -> None:
    events = past_sessions(300, seed=31)
    expected = replay_examples(events)
    assert len(expected) > 150, "the simulated sessions must close"
    env.extra.update(FAST)
    worker = Worker(env).start()
    trainer = Worker(env, "trainer", ("trainer",)).start()
    try:
        worker.wait_ready(partitions=env.partitions)
        trainer.wait_ready()
        await produce(env.bootstrap, env.interactions, event_records(events))
        records = sorted_records(await training_records(env, len(expected), settle_s=3.0))

        # every session's example, once each after deduplication, as the replay made it
        examples = examples_of([r.value for r in records])
        got = {example.id: labelled(example) for example in examples}
        assert got == {e.id: labelled(e) for e in expected}

        # with the console's trust marks and prefix; their trust changes and
        # scores depend on the version served at the time, where they were hit not
        def hit(example: Example) -> tuple[Any, ...]:
            prefix = example.prefix[1:] if example.prefix else None
            return tuple((key, n) for key, n, _, _ in example.trust_marks), prefix

        marks = {e.id: hit(e) for e in examples}
        assert marks == {e.id: hit(e) for e in expected}
        assert all(m for m, _ in marks.values()) and any(p for _, p in marks.values())
        keys = {r.key for r in records if not r.key.startswith(b"mark-")}
        assert keys == {e.sid.encode() for e in expected}  # keyed by session
        # every input partition's closure mark, after the examples it covers
        closure = [training_record(r.value) for r in records if r.key.startswith(b"mark-")]
        assert {m.partition for m in closure if isinstance(m, Mark)} == set(range(env.partitions))

        # one version covers every partition's examples, learned as the core learns them:
        # in the order they closed, those every partition's mark has passed
        version = await published_through(env, records[-1].offset + 1)
        core = offline_trainer(await records_through(env, version.offset))
        assert version.examples == core.models.examples > len(got) // 2
        assert core.models.examples + core.held == len(got)
        # the trust challenger runs in the trainer; too few sessions to compare yet
        assert (version.champion, version.challenger) == ("online", "refit-linear")
        assert version.window_auc is None and version.promotions == 0
        served = await learned_models(env, version.number)
        probe = examples[:40]
        assert predictions(served, probe) == predictions(core.models, probe)

        # the worker serves it, and says so
        deadline = time.monotonic() + 30
        while worker.metrics().get("disengage_model_version{}", 0) < version.number:
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.5)
        trainer_metrics = trainer.metrics()
        assert trainer_metrics["disengage_trainer_active{}"] == 1
        read = {
            status: trainer_metrics.get(f"disengage_trainer_records_total{{status={status}}}", 0)
            for status in ("learned", "held", "late")
        }
        # nothing closed before a mark arrived after it: every example in its turn
        assert read["late"] == 0, read
        assert sum(read.values()) == len(got)
        assert trainer_metrics["disengage_trainer_held_examples{}"] == core.held
        assert worker.metrics()["disengage_training_examples_total{}"] >= len(got)
    finally:
        worker.stop()
        trainer.stop()


async def test_kill_9_of_a_worker_and_of_the_trainer_leaves_the_same_models(
    kafka_bootstrap: str, redis_url: str
) -> None:
    events = past_sessions(300, seed=32)
    expected = replay_examples(events)
    env = Env(kafka_bootstrap, redis_url, db=14, partitions=1, extra={**RULES_ONLY, **FAST})
    await flush(env)
    await create_topics(env)
    worker = Worker(env).start()
    active = Worker(env, "trainer-a", ("trainer",)).start()
    standby: Worker | None = None
    try:
        worker.wait_ready(partitions=1)
        active.wait_ready()
        await produce(env.bootstrap, env.interactions, event_records(events))
        # kill -9 the worker once some examples are out, and start it again
        await training_records(env, len(expected) // 4)
        worker.kill9()
        worker = Worker(env, "w2").start()
        # the standby joins; then kill -9 the active trainer mid-stream
        standby = Worker(env, "trainer-b", ("trainer",)).start()
        standby.wait_ready()
        await training_records(env, len(expected) // 2)
        active.kill9()
        killed_at = time.monotonic()
        while json.loads(standby.get("/readyz")[1]).get("active") is not True:
            assert time.monotonic() - killed_at < 30, "the standby did not take over in 30 s"
            time.sleep(0.2)
        takeover_s = time.monotonic() - killed_at
        records = sorted_records(await training_records(env, len(expected), settle_s=3.0))
        version = await published_through(env, records[-1].offset + 1)
    finally:
        worker.stop()
        active.stop()  # no-op when killed
        if standby is not None:
            standby.stop()
    print(f"trainer takeover after kill -9: {takeover_s:.1f} s")

    # the deduplicated labelled snapshots are those of the replay: nothing lost or doubled
    examples = examples_of([r.value for r in records])
    got = {e.id: labelled(e) for e in examples}
    assert got == {e.id: labelled(e) for e in expected}
    # and the models equal those of one trainer that never stopped, on the same records
    served = await learned_models(env, version.number)
    uninterrupted = offline_trainer(await records_through(env, version.offset))
    probe = examples[:40]
    assert predictions(served, probe) == predictions(uninterrupted.models, probe)
    assert version.examples == uninterrupted.models.examples > len(got) // 2
    assert uninterrupted.models.examples + uninterrupted.held == len(got)
    await flush(env)


async def test_models_list_promote_and_rollback(env: Env) -> None:
    client, reg = registry(env)
    models = DetectorModels(DetectorConfig())
    learned = compress(models.dumps_learned())
    try:
        for n in (1, 2, 3):
            version = ModelVersion(n, int(time.time() * 1000), 10 * n, n, None, 0.71, "linear", 9)
            if n == 3:  # the refit challenger was promoted before v3
                version = replace(
                    version,
                    champion="refit-linear",
                    challenger="online",
                    window_auc=(0.8125, 0.7802),
                    promotions=1,
                )
            await reg.publish(version, learned, TrainerState(n, 10 * n, []), keep=20)
        cli = CLI(env)
        listed = [json.loads(line) for line in cli("list", "--json").splitlines()]
        assert [(v["version"], v["served"], v["latest"]) for v in listed] == [
            ("v1", False, False),
            ("v2", False, False),
            ("v3", True, True),
        ]
        assert (listed[2]["champion"], listed[2]["challenger"]) == ("refit-linear", "online")
        assert (listed[2]["window_auc"], listed[2]["promotions"]) == ([0.8125, 0.7802], 1)
        table = cli("list").splitlines()
        assert "refit-linear/linear 0.812" in table[3] and "online 0.780" in table[3]
        assert "online/linear" in table[1]
        assert "rolled back from v3 to v2" in cli("rollback")
        assert await reg.serving() == 2 and await reg.pinned() == 2
        await reg.publish(
            ModelVersion(4, 0, 40, 4, None, None, "linear", 9), learned, TrainerState(4, 40), 20
        )
        assert await reg.serving() == 2  # pinned: a new version is not served
        assert "v2" in cli("list") and "served (pinned)" in cli("list")
        assert "rolled back from v2 to v1" in cli("rollback")
        failed = cli.run("rollback")
        assert failed.returncode == 1 and "oldest stored version" in failed.stderr
        failed = cli.run("promote", "v9")
        assert failed.returncode == 1 and "no model version v9 is stored" in failed.stderr
        assert cli.run("promote", "nine").returncode == 2
        assert "pinned v3" in cli("promote", "3")
        assert await reg.serving() == 3
        assert "follow the trainer" in cli("promote", "latest")
        assert await reg.serving() == 4 and await reg.pinned() is None
        # the oldest versions are pruned, a pinned one never
        await reg.pin(1)
        await reg.publish(
            ModelVersion(5, 0, 50, 5, None, None, "linear", 9), learned, TrainerState(5, 50), 2
        )
        assert await reg.numbers() == [1, 4, 5]
    finally:
        await client.aclose()


class CLI:
    """``disengage models`` as a subprocess on the test's Redis."""

    def __init__(self, env: Env) -> None:
        self.env = env.worker_env(0)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stream", "models", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def __call__(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout
