"""The worker's collector pauses (stream.worker.gc_pauses), on the real collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram

from stream.worker.gc_pauses import GcPauses
from tests.fakes import FakeClock


@pytest.fixture
def histogram() -> Histogram:
    return Histogram("t_gc_pause_seconds", "test", ["generation"], registry=CollectorRegistry())


@pytest.fixture(autouse=True)
def explicit_collections_only() -> Iterator[None]:
    """Only the tests' own gc.collect() calls run (the callbacks see those
    too); nothing stays frozen after a test."""
    enabled = gc.isenabled()
    gc.disable()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()


def count(histogram: Histogram, generation: str) -> float:
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels["generation"] == generation:
                return sample.value
    return 0.0


def test_collections_are_timed_and_their_survivors_frozen(histogram: Histogram) -> None:
    clock = FakeClock()
    pauses = GcPauses(histogram, freeze=True, unfreeze_interval_s=3600, clock=clock)
    pauses.install()
    try:
        kept = [[i] for i in range(10_000)]  # long-lived containers, as cached states
        gc.collect(0)
        pauses.tick()  # a young collection alone freezes nothing
        assert count(histogram, "0") >= 1
        assert pauses.freezes == 0 and gc.get_freeze_count() == 0
        gc.collect(1)
        assert gc.get_freeze_count() == 0  # nothing is frozen inside the collector
        pauses.tick()
        assert count(histogram, "1") >= 1
        assert pauses.freezes == 1
        assert gc.get_freeze_count() >= len(kept)
        pauses.tick()  # no collection since: nothing more to freeze
        assert pauses.freezes == 1
        gc.collect(2)
        pauses.tick()
        assert count(histogram, "2") >= 1 and pauses.full_collections >= 1
        assert pauses.freezes == 2
    finally:
        pauses.uninstall()
    assert pauses._callback not in gc.callbacks
    assert gc.get_freeze_count() == 0  # handed back to the collector


def test_young_cycles_are_still_collected_while_freezing(histogram: Histogram) -> None:
    pauses = GcPauses(histogram, freeze=True, unfreeze_interval_s=3600)
    pauses.install()
    try:
        gc.collect(1)
        pauses.tick()
        cycle: list[object] = []
        cycle.append(cycle)
        probe = weakref.ref(Node(cycle))
        del cycle
        gc.collect(0)
        assert probe() is None
    finally:
        pauses.uninstall()


def test_a_cycle_that_died_since_the_last_collection_is_not_frozen(
    histogram: Histogram,
) -> None:
    pauses = GcPauses(histogram, freeze=True, unfreeze_interval_s=3600)
    pauses.install()
    try:
        gc.collect(1)  # survivors to freeze at the next tick
        cycle: list[object] = []
        cycle.append(cycle)
        probe = weakref.ref(Node(cycle))
        del cycle  # garbage before the batch ends
        pauses.tick()
        assert pauses.freezes == 1
        assert probe() is None
    finally:
        pauses.uninstall()


class Node:
    """A weak-referenceable object held only by a reference cycle."""

    def __init__(self, cycle: list[object]) -> None:
        self.cycle = cycle
        cycle.append(self)


def test_once_per_interval_everything_is_collected_and_frozen_again(
    histogram: Histogram,
) -> None:
    clock = FakeClock()
    pauses = GcPauses(histogram, freeze=True, unfreeze_interval_s=60, clock=clock)
    pauses.install()
    try:
        # a cycle that is in use when frozen, and dropped after
        cycle: list[object] = []
        cycle.append(cycle)
        holder = [Node(cycle)]
        probe = weakref.ref(holder[0])
        del cycle
        gc.collect(1)
        pauses.tick()
        assert pauses.freezes == 1
        del holder
        gc.collect(2)
        assert probe() is not None  # frozen: not walked, only the interval's collection frees it
        full_before = pauses.full_collections
        clock.now += 61
        pauses.tick()
        assert probe() is None
        assert pauses.full_collections == full_before + 1
        assert pauses.freezes == 2 and gc.get_freeze_count() > 0
    finally:
        pauses.uninstall()


def test_without_freeze_the_pauses_are_only_measured(histogram: Histogram) -> None:
    pauses = GcPauses(histogram, freeze=False, unfreeze_interval_s=60)
    pauses.install()
    pauses.install()  # idempotent
    try:
        assert gc.callbacks.count(pauses._callback) == 1
        gc.collect(2)
        pauses.tick()
        assert count(histogram, "2") >= 1
        assert gc.get_freeze_count() == 0 and pauses.freezes == 0
    finally:
        pauses.uninstall()
