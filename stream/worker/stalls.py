"""Where the worker stalls: who holds the batch lock, and how late the event loop runs.

An alert waits for everything that runs before its batch: the batch lock's
other holders (the expiry sweep, the checkpoint, the commit's state writes, a
rebalance) and anything that keeps the event loop itself from running (CPU
work outside a batch, a thread holding the GIL, a garbage collection). The
batch histograms (``disengage_batch_seconds``, ``disengage_batch_stage_seconds``)
see none of that, so a latency tail with fast batches had no measured cause.

* :class:`BatchLock` is the worker's batch lock, timed per holder into
  ``disengage_lock_held_seconds{holder}``. A holder other than a batch that
  keeps it longer than ``warn_s`` is logged (at most once per 10 s a holder).
* :class:`LoopLag` wakes every ``interval_s`` and measures how late it woke
  into ``disengage_event_loop_lag_seconds``: time the loop could not run
  anything. A lag over ``warn_s`` is logged (at most once per 10 s).

``warn_s`` defaults to 0.25 s: the worker's alert latency target (p99 of
250 ms), so a logged stall alone can break it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from prometheus_client import Histogram

from stream.worker.faults import Throttled

log = logging.getLogger("disengage.stalls")

#: Who takes the batch lock (the ``holder`` label; a closed list).
HOLDERS = ("batch", "commit", "rebalance", "expiry_sweep", "checkpoint", "shutdown")
#: A stall longer than this is logged (seconds): the alert latency target.
WARN_S = 0.25
#: At most one stall line per holder (and for the loop) per this many seconds.
LOG_INTERVAL_S = 10.0


class BatchLock:
    """An :class:`asyncio.Lock` whose holds are timed per holder.

    ``histogram`` has one label, ``holder`` (:data:`HOLDERS`); ``None`` times
    nothing (tests). ``clock``: monotonic seconds.

    >>> import asyncio
    >>> lock = BatchLock()
    >>> async def run():
    ...     async with lock.hold("batch"):
    ...         return lock.locked()
    >>> asyncio.run(run()), lock.locked()
    (True, False)
    """

    def __init__(
        self,
        histogram: Histogram | None = None,
        *,
        warn_s: float = WARN_S,
        clock: Callable[[], float] = time.perf_counter,
        logger: logging.Logger = log,
    ) -> None:
        self._lock = asyncio.Lock()
        self.histogram = histogram
        self.warn_s = warn_s
        self.clock = clock
        self._logs = {holder: Throttled(logger, LOG_INTERVAL_S) for holder in HOLDERS}

    def locked(self) -> bool:
        return self._lock.locked()

    @asynccontextmanager
    async def hold(self, holder: str) -> AsyncIterator[None]:
        """Hold the lock as ``holder`` (one of :data:`HOLDERS`)."""
        if holder not in self._logs:
            raise ValueError(f"unknown lock holder {holder!r}: one of {', '.join(HOLDERS)}")
        async with self._lock:
            start = self.clock()
            try:
                yield
            finally:
                held = self.clock() - start
                if self.histogram is not None:
                    self.histogram.labels(holder).observe(held)
                if held > self.warn_s and holder != "batch":  # slow batches log their stages
                    self._logs[holder].log(
                        f"the {holder.replace('_', ' ')} held the batch lock for {held:.2f} s: "
                        "batches waited"
                    )


class LoopLag:
    """Measures how late the event loop wakes a sleeper (seconds over ``interval_s``).

    Run :meth:`run` as a task; :meth:`observe` is its measurement, callable
    on its own (tests).
    """

    def __init__(
        self,
        histogram: Histogram,
        *,
        interval_s: float = 0.1,
        warn_s: float = WARN_S,
        clock: Callable[[], float] = time.perf_counter,
        logger: logging.Logger = log,
    ) -> None:
        self.histogram = histogram
        self.interval_s = interval_s
        self.warn_s = warn_s
        self.clock = clock
        self._log = Throttled(logger, LOG_INTERVAL_S)

    def observe(self, slept_s: float) -> float:
        """Record a sleep of ``interval_s`` that took ``slept_s``; returns the lag."""
        lag = max(0.0, slept_s - self.interval_s)
        self.histogram.observe(lag)
        if lag > self.warn_s:
            self._log.log(
                f"the event loop was blocked for {lag:.2f} s (CPU work outside the batches, "
                "a thread holding the GIL, or a garbage collection): batches waited"
            )
        return lag

    async def run(self) -> None:
        while True:
            start = self.clock()
            await asyncio.sleep(self.interval_s)
            self.observe(self.clock() - start)
