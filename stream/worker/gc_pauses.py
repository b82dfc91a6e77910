"""The worker's garbage-collector pauses: measured, and kept short.

CPython's cyclic collector stops the event loop while it runs, and a full
(generation 2) collection walks every tracked container in the process. The
worker's heap is mostly the session-state cache: ~48 tracked containers a
state (its lists, tuples and float32 arrays), so the default 20,000 cached
states alone are about a million objects, and one full collection of them
took ~0.6 s on the CI machine (``python -m stream.worker.gc_pauses`` prints
it). CPython starts a full collection whenever the objects that survived into
the oldest generation since the last one reach a quarter of those it kept
then, so on a steady stream of new sessions that happens again and again:
every time a batch behind it waits.

:class:`GcPauses` does two things:

* measures every collection's pause into
  ``disengage_gc_pause_seconds{generation}``, so a latency tail can be
  matched with the collector (SREs: compare it with
  ``disengage_batch_seconds``);
* when ``freeze`` is on (``DISENGAGE_GC_FREEZE``, the default), moves what
  survived each collection of the middle or oldest generation into the
  permanent generation (:func:`gc.freeze`), between batches. Young garbage,
  cycles included, is still collected as before (it dies before it survives
  two collections); a frozen object is still freed as soon as nothing refers
  to it (states leaving the cache, replaced models: reference counting). What
  is no longer walked is the long-lived heap, so no full collection walks
  the state cache. Only a reference cycle formed among frozen objects stays
  until the next :func:`gc.unfreeze`: every ``unfreeze_interval_s`` the
  worker unfreezes, collects everything once (one whole-heap pause, counted
  in the histogram), and freezes again.

Measured with ``python -m stream.worker.gc_pauses``: a cache of 20,000 states
replaced 20 times over: without freezing, 7 full collections of up to 414 ms;
freezing after full collections only, up to 163 ms (the objects since the
last freeze are still walked); freezing after middle-generation collections,
no full collection and no pause over 9 ms. In ``bench_worker`` at half load
without freezing: 11 full collections, 5.96 s in all.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram

#: The generations CPython collects (0, 1, and 2 = full).
GENERATIONS = ("0", "1", "2")


class GcPauses:
    """Times the collector's pauses; freezes the survivors of full collections.

    ``clock``: monotonic seconds. Install with :meth:`install`, call
    :meth:`tick` from the event loop (between batches), remove with
    :meth:`uninstall`.
    """

    def __init__(
        self,
        histogram: Histogram,
        *,
        freeze: bool,
        unfreeze_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.histogram = histogram
        self.freeze = freeze
        self.unfreeze_interval_s = unfreeze_interval_s
        self.clock = clock
        self._children = {g: histogram.labels(g) for g in GENERATIONS}
        self._started = 0.0
        self._survivors = False
        self._unfrozen_at = clock()
        #: full collections seen, and the times survivors were frozen
        self.full_collections = 0
        self.freezes = 0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop measuring and hand what was frozen back to the collector (a
        process that goes on, such as a test's, collects as usual again)."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        if self.freeze:
            gc.unfreeze()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # runs inside the collector: time it, note a full one, nothing else
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info.get("generation", 0)
        child = self._children.get(str(generation))
        if child is not None:
            child.observe(time.perf_counter() - self._started)
        if generation >= 1:
            self._survivors = True
        if generation == 2:
            self.full_collections += 1

    def tick(self) -> None:
        """Between batches: freeze what the last middle or full collection
        kept, and once per ``unfreeze_interval_s`` collect the whole heap."""
        if not self.freeze:
            return
        now = self.clock()
        if now - self._unfrozen_at >= self.unfreeze_interval_s:
            # frees any cycle formed among frozen objects since the last time
            self._unfrozen_at = now
            gc.unfreeze()
            gc.collect()
            self._survivors = False
            gc.freeze()
            self.freezes += 1
            return
        if self._survivors:
            self._survivors = False
            # the young generation first: a cycle that died since the last
            # collection (a handled exception's traceback, say) is not frozen
            gc.collect(0)
            gc.freeze()
            self.freezes += 1


def _measure(cached: int = 20_000, steps: int = 400_000) -> None:
    """Print the collector's pauses while a cache of ``cached`` decoded
    simulated states is replaced ``steps / cached`` times over (a state
    decoded per step, the oldest evicted, :meth:`GcPauses.tick` every 100
    steps), without freezing and with it."""
    from collections import OrderedDict

    from prometheus_client import CollectorRegistry

    from detectors.config import DetectorConfig
    from detectors.detector import Detector
    from detectors.events import EventParser
    from detectors.offline.runner import OfflineRunner
    from detectors.simulation.simulator import SimConfig, Simulator
    from stream import state_codec

    config = DetectorConfig()
    runner = OfflineRunner(Detector(config))
    parse = EventParser(config).parse
    for raw in Simulator(SimConfig(sessions=3000, seed=5)).events():
        runner.feed(parse(raw))
    blobs = [state_codec.encode(s) for s in runner.sessions.values()]
    del runner
    for freeze in (False, True):
        histogram = Histogram("p", "p", ["generation"], registry=CollectorRegistry())
        pauses = GcPauses(histogram, freeze=freeze, unfreeze_interval_s=3600)
        worst: dict[int, float] = {0: 0.0, 1: 0.0, 2: 0.0}
        begun = [0.0]

        def timed(
            phase: str,
            info: dict[str, Any],
            begun: list[float] = begun,
            worst: dict[int, float] = worst,
        ) -> None:
            if phase == "start":
                begun[0] = time.perf_counter()
                return
            g = info["generation"]
            worst[g] = max(worst[g], time.perf_counter() - begun[0])

        gc.callbacks.append(timed)
        pauses.install()
        cache: OrderedDict[int, object] = OrderedDict()
        for i in range(steps):
            cache[i] = state_codec.decode(blobs[i % len(blobs)])
            if len(cache) > cached:
                cache.popitem(last=False)
            if i % 100 == 0:
                pauses.tick()
        pauses.uninstall()
        gc.callbacks.remove(timed)
        print(
            f"freeze {'on ' if freeze else 'off'}: {pauses.full_collections} full collections, "
            f"longest pause by generation (ms): "
            + ", ".join(f"{g}: {worst[g] * 1000:.1f}" for g in sorted(worst))
        )
        cache.clear()
        gc.unfreeze()
        gc.collect()


if __name__ == "__main__":
    _measure()
