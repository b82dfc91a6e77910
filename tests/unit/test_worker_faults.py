"""Faults are logged once per state change, with their cause in one line
(``stream.worker.faults``): issue 10, finding 4 (a 20 s Redis freeze logged
a 50-line traceback at WARNING, twice; a broker outage 2,479 ERROR lines)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from stream.worker.faults import Fault, RepeatFilter, Throttled
from tests.fakes import FakeClock


def test_an_outage_is_two_lines_however_many_tries_fail(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    fault = Fault("Redis", logging.getLogger("t.fault"), clock=clock)
    with caplog.at_level(logging.INFO, logger="t.fault"):
        for _ in range(500):
            fault.failed(TimeoutError("Timeout reading from socket"), "store load")
            clock.advance(0.04)
        fault.ok()
        fault.ok()  # no second recovery line
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        (
            "ERROR",
            "Redis failing: store load: TimeoutError: Timeout reading from socket "
            "(retrying; logged again when it recovers)",
        ),
        ("WARNING", "Redis recovered after 20.0 s (500 failed tries)"),
    ]
    assert not any(r.exc_info for r in caplog.records)


def test_a_recurring_condition_is_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(0.0)
    throttled = Throttled(logging.getLogger("t.throttle"), 60.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.throttle"):
        for _ in range(120):  # two a second for a minute
            throttled.log("an event ahead of the clock")
            clock.advance(0.5)
        throttled.log("an event ahead of the clock")
    assert [r.getMessage() for r in caplog.records] == [
        "an event ahead of the clock",
        "an event ahead of the clock (119 more since the last report)",
    ]


def _record(name: str, level: int, msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, msg, ("node 1",), info)


def test_library_repeats_are_folded_and_tracebacks_cut() -> None:
    clock = FakeClock(0.0)
    folded = RepeatFilter(interval_s=60.0, clock=clock)
    first = _record("aiokafka.conn", logging.ERROR, "Unable connect to %s", OSError("refused"))
    assert folded.filter(first)
    assert first.getMessage() == "Unable connect to node 1 (OSError: refused)"
    assert first.exc_info is None
    passed = 0
    for _ in range(2478):  # the 25 s broker outage
        clock.advance(0.01)
        passed += folded.filter(_record("aiokafka.conn", logging.ERROR, "Unable connect to %s"))
    assert passed == 0
    clock.advance(60.0)
    later = _record("aiokafka.conn", logging.ERROR, "Unable connect to %s")
    assert folded.filter(later)
    assert later.getMessage() == "Unable connect to node 1 [2478 similar in the last 60 s]"
    # our own records and library records below WARNING are untouched
    ours = _record("disengage.pipeline", logging.ERROR, "Unable connect to %s")
    assert all(folded.filter(ours) for _ in range(3))
    assert folded.filter(_record("aiokafka.conn", logging.INFO, "connected to %s"))


class _SilentBroker:
    """A Faust producer whose sends are queued but never acknowledged."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, *args: object) -> asyncio.Future[None]:
        self.sent += 1
        return asyncio.get_running_loop().create_future()


async def test_a_produce_that_is_never_acknowledged_fails_after_the_timeout() -> None:
    """A broker that takes the records but never acks must not hang the batch
    (Faust's own producer timeout is 20 minutes): it fails, and is retried."""
    from stream.records import Record
    from stream.worker.app import produce_with

    app = SimpleNamespace(producer=_SilentBroker())
    records = [Record(b"k", b"v"), Record(b"k", b"w")]
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await produce_with(app, 0.2, "alerts", records)  # type: ignore[arg-type]
    assert 0.2 <= asyncio.get_running_loop().time() - started < 2
    assert app.producer.sent == 2


async def test_a_leaked_cancellation_is_told_apart_from_a_real_one() -> None:
    from stream.retry import cancelled_by_caller

    async def leaks() -> bool:
        try:
            raise asyncio.CancelledError  # as aiokafka's consumer.stop() may
        except asyncio.CancelledError:
            return cancelled_by_caller()

    assert await asyncio.create_task(leaks()) is False
    seen: list[bool] = []

    async def cancelled() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(cancelled_by_caller())
            raise

    task = asyncio.create_task(cancelled())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [True]
