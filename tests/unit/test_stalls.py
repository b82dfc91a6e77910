"""The worker's stall instruments: batch-lock holds per holder, event-loop lag."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from stream.metrics import Metrics
from stream.worker.stalls import BatchLock, LoopLag


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_each_hold_is_timed_under_its_holder_and_a_long_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics(CollectorRegistry())
    now = [0.0]
    lock = BatchLock(metrics.lock_held_seconds, clock=lambda: now[0])

    async def hold(holder: str, seconds: float) -> None:
        async with lock.hold(holder):
            assert lock.locked()
            now[0] += seconds

    caplog.set_level(logging.WARNING, logger="disengage.stalls")
    asyncio.run(hold("batch", 0.6))
    asyncio.run(hold("commit", 0.01))
    asyncio.run(hold("commit", 0.4))
    assert not lock.locked()
    held = "disengage_lock_held_seconds"
    assert _count(metrics, f"{held}_count", holder="batch") == 1
    assert _count(metrics, f"{held}_count", holder="commit") == 2
    assert _count(metrics, f"{held}_sum", holder="commit") == pytest.approx(0.41)
    assert _count(metrics, f"{held}_bucket", holder="commit", le="0.25") == 1
    # the slow commit is logged; the slow batch is not (it logs its own stages)
    assert [r.getMessage() for r in caplog.records] == [
        "the commit held the batch lock for 0.40 s: batches waited"
    ]


def test_a_hold_that_fails_is_timed_and_releases_the_lock() -> None:
    metrics = Metrics(CollectorRegistry())
    lock = BatchLock(metrics.lock_held_seconds)

    async def fail() -> None:
        async with lock.hold("expiry_sweep"):
            raise RuntimeError("redis down")

    with pytest.raises(RuntimeError):
        asyncio.run(fail())
    assert not lock.locked()
    assert _count(metrics, "disengage_lock_held_seconds_count", holder="expiry_sweep") == 1


def test_an_unknown_holder_is_refused_before_taking_the_lock() -> None:
    lock = BatchLock()

    async def hold() -> None:
        async with lock.hold("anything"):
            pass

    with pytest.raises(ValueError, match="unknown lock holder"):
        asyncio.run(hold())
    assert not lock.locked()


def test_a_holder_waits_for_the_other() -> None:
    lock = BatchLock()
    order: list[str] = []

    async def holder(name: str, holder_label: str) -> None:
        async with lock.hold(holder_label):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    async def both() -> None:
        await asyncio.gather(holder("sweep", "expiry_sweep"), holder("batch", "batch"))

    asyncio.run(both())
    assert order == ["sweep in", "sweep out", "batch in", "batch out"]


def test_loop_lag_is_what_a_sleeper_overslept(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())
    lag = LoopLag(metrics.loop_lag_seconds, interval_s=0.1)
    caplog.set_level(logging.WARNING, logger="disengage.stalls")
    assert lag.observe(0.102) == pytest.approx(0.002)
    assert lag.observe(0.05) == 0.0  # woke early (a coarse clock): no negative lag
    assert lag.observe(0.5) == pytest.approx(0.4)
    name = "disengage_event_loop_lag_seconds"
    assert _count(metrics, f"{name}_count") == 3
    assert _count(metrics, f"{name}_bucket", le="0.25") == 2
    assert len(caplog.records) == 1
    assert "blocked for 0.40 s" in caplog.records[0].getMessage()


def test_loop_lag_sees_a_blocked_event_loop() -> None:
    """Real time: a callback that blocks the loop for 0.3 s shows as lag."""
    metrics = Metrics(CollectorRegistry())
    lag = LoopLag(metrics.loop_lag_seconds, interval_s=0.05)

    async def run() -> None:
        task = asyncio.create_task(lag.run())
        await asyncio.sleep(0.12)
        time.sleep(0.3)  # CPU work in the loop: nothing else runs
        await asyncio.sleep(0.12)
        task.cancel()

    asyncio.run(run())
    over = _count(metrics, "disengage_event_loop_lag_seconds_count") - _count(
        metrics, "disengage_event_loop_lag_seconds_bucket", le="0.1"
    )
    assert over >= 1
    assert _count(metrics, "disengage_event_loop_lag_seconds_sum") >= 0.2
