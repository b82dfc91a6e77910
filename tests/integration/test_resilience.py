"""Crash, scale-out and expiry of real workers on the real broker and Redis."""

from __future__ import annotations

import json
import time

import pytest
import redis.asyncio as aioredis

from detectors.config import DetectorConfig
from detectors.detector import DetectorModels
from detectors.models import loads_monitor
from stream.redis_store import blob_key
from stream.worker.hotspot_agent import monitor_name
from stream.worker.upkeep import checkpoint_name

from .harness import (
    Env,
    Worker,
    consume,
    event_records,
    expected_counts,
    friction_oracle,
    load_states,
    metric_sum,
    produce,
    simulated,
    wait_settled,
)

pytestmark = pytest.mark.integration


async def all_alert_ids(env: Env) -> list[str]:
    messages = await consume(env.bootstrap, env.alerts, timeout=30, idle=4)
    return [json.loads(m.value)["id"] for m in messages]


async def test_kill_9_mid_stream_loses_nothing_and_repeats_nothing(env: Env) -> None:
    events, _ = simulated(500, seed=31)
    counts = expected_counts(events)
    expected = friction_oracle(events)
    assert expected
    await produce(env.bootstrap, env.interactions, event_records(events))
    first = Worker(env, "first").start()
    first.wait_ready(partitions=env.partitions)
    deadline = time.time() + 60
    while time.time() < deadline:
        done = metric_sum(first.metrics(), "disengage_events_total")
        if done >= len(events) // 3:
            break
        time.sleep(0.05)
    assert 0 < done < len(events), "the crash must happen mid-stream"
    first.kill9()
    second = Worker(env, "second").start()
    try:
        second.wait_ready(partitions=env.partitions)
        states = await wait_settled(env, counts, timeout=120)
        assert all(not s.outbox for s in states.values())
        ids = await all_alert_ids(env)
        assert len(ids) == len(set(ids)), "an alert id was produced twice"
        assert set(ids) == expected, "an alert was lost or invented"
    finally:
        assert second.stop() == 0, second.tail()


async def test_two_workers_share_partitions_and_take_over_from_redis(env: Env) -> None:
    events, _ = simulated(400, seed=41)
    counts = expected_counts(events)
    expected = friction_oracle(events)
    assert expected
    a = Worker(env, "a").start()
    b = Worker(env, "b").start()
    try:
        a.wait_ready()
        b.wait_ready()
        deadline = time.time() + 60
        while time.time() < deadline:
            pa = json.loads(a.get("/readyz")[1])["partitions"]
            pb = json.loads(b.get("/readyz")[1])["partitions"]
            if pa and pb and sorted(pa + pb) == list(range(env.partitions)):
                break
            time.sleep(0.5)
        assert pa and pb and not set(pa) & set(pb), (pa, pb)
        half = len(events) // 2
        await produce(env.bootstrap, env.interactions, event_records(events[:half]))
        first_counts = expected_counts(events[:half])
        await wait_settled(env, first_counts, timeout=90)
        assert a.stop() == 0, a.tail()  # graceful: its partitions' local state is checkpointed
        client = aioredis.Redis.from_url(env.redis_db_url)
        try:
            for p in pa:
                blob = await client.get(blob_key(checkpoint_name(p), env.interactions))
                assert isinstance(blob, bytes), f"no checkpoint for partition {p}"
                models = DetectorModels(DetectorConfig())
                models.restore_local(blob)  # versioned and intact
            # the shared hotspot monitors of the page-visits partitions it owned
            visited = 0
            for p in range(env.partitions):
                blob = await client.get(blob_key(monitor_name(p), env.interactions))
                if isinstance(blob, bytes):
                    visited += sum(s.visits for s in loads_monitor(blob).keys.values())
            assert visited > 0, "the checkpoints must hold the hotspot monitors' page visits"
        finally:
            await client.aclose()
        info = b.wait_ready(partitions=env.partitions, timeout=60)
        assert info["partitions"] == list(range(env.partitions))
        await produce(env.bootstrap, env.interactions, event_records(events[half:]))
        await wait_settled(env, counts, timeout=120)
        ids = await all_alert_ids(env)
        assert len(ids) == len(set(ids))
        assert set(ids) == expected
    finally:
        a.stop()
        assert b.stop() == 0, b.tail()


async def test_idle_session_times_out_and_the_trainer_learns_it(env: Env) -> None:
    env.extra.update(
        {
            "DISENGAGE_SESSION_TIMEOUT_MS": "3000",
            "DISENGAGE_IDLE_GRACE_S": "1",
            "DISENGAGE_TRUST_MIN_CLOSED": "200",
            "DISENGAGE_TRAINER_PUBLISH_S": "1",
            "DISENGAGE_MODEL_POLL_S": "0.5",
        }
    )
    worker = Worker(env).start()
    trainer = Worker(env, "trainer", ("trainer",)).start()
    try:
        worker.wait_ready(partitions=env.partitions)
        trainer.wait_ready()
        now = int(time.time() * 1000)
        events = [
            {"session_id": "idle-1", "ts": now, "type": "page_view", "page": "/products/1"},
            {
                "session_id": "idle-1",
                "ts": now + 500,
                "type": "scroll",
                "props": {"scroll_pct": 30},
            },
            {"session_id": "idle-1", "ts": now + 900, "type": "page_view", "page": "/cart"},
        ]
        await produce(env.bootstrap, env.interactions, event_records(events))
        deadline = time.time() + 45
        samples: dict[str, float] = {}
        while time.time() < deadline:
            samples = worker.metrics()
            if metric_sum(samples, "disengage_trust_sessions_learned") >= 1:
                break
            time.sleep(0.5)
        # the worker closed it, the trainer learned it, the worker serves that version
        assert metric_sum(samples, "disengage_sessions_closed_total", outcome="timeout") == 1
        assert metric_sum(samples, "disengage_trust_sessions_learned") == 1
        assert metric_sum(samples, "disengage_model_version") >= 1
        state = (await load_states(env, ["idle-1"]))["idle-1"]
        assert state.outcome == "timeout" and state.n_events == 3
    finally:
        assert worker.stop() == 0, worker.tail()
        assert trainer.stop() == 0, trainer.tail()
