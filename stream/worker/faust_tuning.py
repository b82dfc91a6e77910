"""What the worker turns on or off in Faust for speed, and the check that it did.

Faust pays per message, not per batch: its monitor sensor records every
message and every stream event (counters, timestamps, deques), and its stream
iterator and conductor have Cython fast paths that are off unless
``cython_optimizations`` is set. The worker:

* runs a :class:`LeanMonitor`: Faust's monitor without its per-message
  bookkeeping (the worker's own metrics, counted per batch, are in
  :mod:`stream.metrics`; Faust's ``/stats`` pages are not served);
* can turn the Cython fast paths on (``DISENGAGE_FAUST_CYTHON``), checking
  at start-up that the compiled modules really loaded (:func:`cython_loaded`):
  logged, and exported as ``disengage_worker_info{faust_cython=...}``;
* can run on uvloop (``DISENGAGE_UVLOOP``, the ``uvloop`` extra)
  (:func:`install_uvloop`).

``benchmarks/bench_worker.py`` measured both together against neither on
2026-11-29: 2,029 events/s (0.140 of the raw aiokafka loop in the same run)
against 2,272 (0.141). No gain, so both are off by default.

Since 2026-11-30 the worker's input does not go through Faust's agent path at
all (:mod:`stream.worker.intake`), which is what the per-message cost was
about; what is here applies to the page-visits agent, which Faust still runs.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from faust.sensors import Monitor

log = logging.getLogger("disengage.worker")


class LeanMonitor(Monitor):
    """Faust's monitor without the per-message and per-event bookkeeping."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None


def cython_loaded() -> bool:
    """Whether Faust's compiled stream iterator and conductor imported."""
    from faust import streams
    from faust.transport import conductor

    return (
        getattr(streams, "_CStreamIterator", None) is not None
        and getattr(conductor, "ConductorHandler", None) is not None
    )


def install_uvloop(wanted: bool) -> str:
    """Make uvloop the event loop policy when ``wanted`` and installed;
    returns the loop in use ("uvloop" or "asyncio")."""
    if not wanted:
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        log.warning("DISENGAGE_UVLOOP is on but uvloop is not installed: running on asyncio")
        return "asyncio"
    uvloop.install()
    return "uvloop"


def set_fetch_max_wait(ms: int) -> None:
    """Make Faust's worker consumer ask the brokers to hold a fetch at most
    ``ms`` milliseconds when there is no data (``fetch.max.wait.ms``).

    Faust 0.15's aiokafka driver hard-codes 1,500 ms
    (``AIOKafkaConsumerThread._create_worker_consumer``). A fetch in flight
    covers only the partitions with nothing buffered, so a record arriving
    for another partition can wait for it to come back: up to 1.5 s of
    latency that no batch shows (``bench_worker``: p99 1.4 s with zero
    batches over 250 ms). The consumer is built, then its setting replaced
    before it starts (aiokafka reads it in ``start()``). Idempotent.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    current = AIOKafkaConsumerThread._create_worker_consumer
    original = getattr(current, "__wrapped__", current)

    @functools.wraps(original)
    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]
