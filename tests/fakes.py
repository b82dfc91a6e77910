"""Fakes shared by the tests of the shell: small classes that honour an interface.

No mocks: each fake implements the protocol the code under test asks for (a
clock, a sink, a poster, ...), records what it was given, and can be scripted to
fail. Builders of core objects (events, a driven detector) live in
``tests/builders.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from detectors.session import SessionState
from detectors.store import MemorySessionStore
from stream.records import Record


class FakeClock:
    """A wall or monotonic clock in seconds that moves only when told to.

    >>> clock = FakeClock(10.0)
    >>> clock(), clock.advance(2.5), clock()
    (10.0, None, 12.5)
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------ the worker
# ``stream.pipeline.BatchProcessor`` is given a session store and a sink
# (``stream.records.Sink``): the memory store of the core is the store, and
# these fakes record what reaches the alerts and dead-letter topics.


class FakeSink:
    """A :class:`stream.records.Sink` in memory.

    ``topic`` is the alerts topic as (clock seconds when produced, record);
    share it between two sinks to let it outlive a simulated crash. Scripted
    failures, one per send, in order: ``fail_alerts`` are raised instead of
    producing (nothing reaches the topic), ``fail_after_alerts`` after the
    records reached it (the acks were lost). ``since`` lists the arguments of
    :meth:`alert_ids_since`.

    >>> import asyncio
    >>> from stream.records import Record
    >>> sink = FakeSink(FakeClock(5.0))
    >>> sink.fail_alerts.append(ConnectionError("broker down"))
    >>> record = Record(b"s", b'{"id": "a1"}', [("ce_id", b"a1")])
    >>> asyncio.run(sink.send_alerts([record]))
    Traceback (most recent call last):
    ...
    ConnectionError: broker down
    >>> asyncio.run(sink.send_alerts([record])); sink.alert_ids()
    ['a1']
    """

    def __init__(
        self, clock: Callable[[], float], topic: list[tuple[float, Record]] | None = None
    ) -> None:
        self.clock = clock
        self.topic: list[tuple[float, Record]] = [] if topic is None else topic
        self.dead_letters: list[Record] = []
        self.fail_alerts: list[Exception] = []
        self.fail_after_alerts: list[Exception] = []
        self.since: list[int] = []

    async def send_alerts(self, records: Sequence[Record]) -> None:
        if self.fail_alerts:
            raise self.fail_alerts.pop(0)
        now = self.clock()
        self.topic.extend((now, record) for record in records)
        if self.fail_after_alerts:
            raise self.fail_after_alerts.pop(0)

    async def send_dead_letters(self, records: Sequence[Record]) -> None:
        self.dead_letters.extend(records)

    async def alert_ids_since(self, since_ms: int) -> set[str]:
        self.since.append(since_ms)
        return {
            json.loads(record.value)["id"] for at, record in self.topic if at * 1000 >= since_ms
        }

    def alert_ids(self) -> list[str]:
        """Ids of the alerts on the topic, in produce order (repeats kept)."""
        return [json.loads(record.value)["id"] for _, record in self.topic]


class RecordingStore(MemorySessionStore):
    """The memory store, recording the session ids each ``load`` asked for."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        super().__init__(ttl_s, clock)
        self.loads: list[list[str]] = []

    async def load(self, sids: Sequence[str]) -> dict[str, SessionState]:
        self.loads.append(list(sids))
        return await super().load(sids)
