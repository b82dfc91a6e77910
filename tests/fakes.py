"""Fakes shared by the tests of the shell: small classes that honour an interface.

No mocks: each fake implements the protocol the code under test asks for (a
clock, a sink, a poster, ...), records what it was given, and can be scripted to
fail. Builders of core objects (events, a driven detector) live in
``tests/builders.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from detectors.session import SessionState
from detectors.store import MemorySessionStore
from stream.forward.delivery import PostResult
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


# ---------------------------------------------------------------- the forwarder
# The loop of ``disengage alerts forward`` (stream/forward/loop.py) is given a
# consumer, a producer, a poster and a dedupe store: these fakes honour those
# protocols, record what they were given and can be scripted to fail.


class TickingClock(FakeClock):
    """A :class:`FakeClock` that also moves ``step`` seconds each time it is read
    (time that passes while code waits in a loop).

    >>> clock = TickingClock(10.0, step=1.0)
    >>> clock(), clock(), clock.now
    (10.0, 11.0, 12.0)
    """

    def __init__(self, now: float = 1000.0, step: float = 1.0) -> None:
        super().__init__(now)
        self.step = step

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        return now


@dataclass(frozen=True, order=True)
class FakePartition:
    """A topic partition (aiokafka's TopicPartition)."""

    topic: str
    partition: int


@dataclass
class FakeRecord:
    """A consumed record (aiokafka's ConsumerRecord, as far as it is read)."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: int = 0


class FakeConsumer:
    """One partition of scripted records, read like aiokafka's consumer.

    ``commits`` lists the committed offsets. :meth:`rebalance` takes the
    partition away and gives it back as aiokafka does: ``listener.revoked``,
    then reading resumes at the committed offset, then ``listener.assigned``.
    ``on_idle`` runs when there is nothing left to read (say, to stop).
    """

    def __init__(self, values: list[bytes | None], topic: str = "alerts") -> None:
        self.tp = FakePartition(topic, 0)
        self.records = [FakeRecord(v, None, topic, 0, i) for i, v in enumerate(values)]
        self.position = 0
        self.committed: int | None = None
        self.commits: list[int] = []
        self.on_commit: Callable[[int], None] | None = None
        self.on_idle: Callable[[], None] | None = None
        self.listener: Any = None
        self.seeks: list[int] = []
        self.paused: set[FakePartition] = set()

    def assignment(self) -> set[FakePartition]:
        return {self.tp}

    def seek(self, tp: FakePartition, offset: int) -> None:
        self.seeks.append(offset)
        self.position = offset

    def pause(self, *tps: FakePartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: FakePartition) -> None:
        self.paused.difference_update(tps)

    def highwater(self, tp: FakePartition) -> int:
        return len(self.records)

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[FakePartition, list[FakeRecord]]:
        await asyncio.sleep(0)
        end = None if max_records is None else self.position + max_records
        batch = self.records[self.position : end]
        self.position += len(batch)
        if not batch and self.on_idle is not None:
            self.on_idle()
        return {self.tp: batch} if batch else {}

    async def commit(self, offsets: dict[FakePartition, int]) -> None:
        self.committed = offsets[self.tp]
        self.commits.append(self.committed)
        if self.on_commit is not None:
            self.on_commit(self.committed)

    async def rebalance(self) -> None:
        await self.listener.revoked([self.tp])
        self.position = self.committed or 0
        await self.listener.assigned([self.tp])


class FakeProducer:
    """Records what is sent (topic, value, headers as a dict). ``fail`` is
    raised by every send; ``fail_next`` by the next sends, one each."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict[str, bytes]]] = []
        self.fail: Exception | None = None
        self.fail_next: list[Exception] = []

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[None]:
        if self.fail is not None:
            raise self.fail
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.sent.append((topic, value, dict(headers or [])))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack


class ScriptedPoster:
    """A webhook poster answering from a script (the last answer repeats;
    default: always 200) and recording ``calls`` as (body, idempotency key).
    With ``stop`` and ``stop_after``, sets ``stop`` during that call (a
    SIGTERM arriving while a post is in flight)."""

    def __init__(
        self,
        answers: list[PostResult] | None = None,
        stop: asyncio.Event | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.answers = answers or [PostResult(200)]
        self.calls: list[tuple[bytes, str]] = []
        self.stop = stop
        self.stop_after = stop_after

    async def post(self, body: bytes, idempotency_key: str) -> PostResult:
        self.calls.append((body, idempotency_key))
        if self.stop is not None and len(self.calls) == self.stop_after:
            self.stop.set()
        return self.answers[min(len(self.calls), len(self.answers)) - 1]

    @property
    def posts(self) -> list[tuple[str, dict[str, Any]]]:
        """(idempotency key, decoded body) of each post."""
        return [(key, json.loads(body)) for body, key in self.calls]

    def covered(self) -> set[str]:
        """Alert ids posted one by one or listed in a digest."""
        out = set()
        for key, payload in self.posts:
            if key.startswith("digest-"):
                out |= set(payload["data"]["alert_ids"])
            else:
                out.add(key)
        return out


class FakeDedupe:
    """A dedupe store in memory: ``delivered`` ids, and each ``remember`` call
    in ``remembered``. ``hooks[id]`` is awaited (once) when ``id`` is looked
    up: something that happens while the loop handles that alert."""

    def __init__(self, delivered: Iterable[str] = ()) -> None:
        self.delivered = set(delivered)
        self.remembered: list[tuple[str, ...]] = []
        self.hooks: dict[str, Callable[[], Awaitable[None]]] = {}

    async def seen(self, alert_id: str) -> bool:
        hook = self.hooks.pop(alert_id, None)
        if hook is not None:
            await hook()
        return alert_id in self.delivered

    async def remember(self, *alert_ids: str) -> None:
        self.remembered.append(alert_ids)
        self.delivered.update(alert_ids)


class FakeRedis:
    """The two Redis commands the forwarder's dedupe uses (EXISTS, and SET in
    a pipeline), in memory; ``down`` makes every call fail; ``calls`` counts
    round trips."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[str, int | None]] = {}
        self.down = False
        self.calls = 0

    def _round_trip(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("Connection refused")

    async def exists(self, key: str) -> int:
        self._round_trip()
        return int(key in self.data)

    def pipeline(self, transaction: bool = True) -> FakeRedisPipeline:
        return FakeRedisPipeline(self)


class FakeRedisPipeline:
    """Buffered SETs, applied in one call (one round trip)."""

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.queued: list[tuple[str, str, int | None]] = []

    def set(self, key: str, value: str, ex: int | None = None) -> None:
        self.queued.append((key, value, ex))

    async def execute(self) -> list[bool]:
        self.redis._round_trip()
        for key, value, ex in self.queued:
            self.redis.data[key] = (value, ex)
        return [True] * len(self.queued)


# ------------------------------------------------------------------ the worker
# ``stream.worker.pipeline.BatchProcessor`` is given a session store and a sink
# (``stream.records.Sink``): the memory store of the core is the store, and
# these fakes record what reaches the alerts and dead-letter topics.


class FakeSink:
    """A :class:`stream.records.Sink` in memory.

    ``topic`` is the alerts topic as (clock seconds when produced, record);
    share it between two sinks to let it outlive a simulated crash. Scripted
    failures, one per send, in order: ``fail_alerts`` are raised instead of
    producing (nothing reaches the topic), ``fail_after_alerts`` after the
    records reached it (the acks were lost), ``fail_training`` and
    ``fail_dead_letters`` instead of producing training examples or dead
    letters. ``since`` lists the arguments of
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
        self,
        clock: Callable[[], float],
        topic: list[tuple[float, Record]] | None = None,
        training: list[Record] | None = None,
    ) -> None:
        self.clock = clock
        self.topic: list[tuple[float, Record]] = [] if topic is None else topic
        self.dead_letters: list[Record] = []
        self.fail_dead_letters: list[Exception] = []
        #: the training topic (shared like ``topic`` when given)
        self.training: list[Record] = [] if training is None else training
        self.fail_training: list[Exception] = []
        self.fail_alerts: list[Exception] = []
        #: the page-visits topic
        self.visits: list[Record] = []
        self.fail_visits: list[Exception] = []
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
        if self.fail_dead_letters:
            raise self.fail_dead_letters.pop(0)
        self.dead_letters.extend(records)

    async def send_training(self, records: Sequence[Record]) -> None:
        if self.fail_training:
            raise self.fail_training.pop(0)
        self.training.extend(records)

    @property
    def examples(self) -> list[Record]:
        """The training topic's examples (its closure marks left out)."""
        return [r for r in self.training if not (r.key or b"").startswith(b"mark-")]

    @property
    def marks(self) -> list[Record]:
        """The training topic's closure marks."""
        return [r for r in self.training if (r.key or b"").startswith(b"mark-")]

    async def send_visits(self, records: Sequence[Record]) -> None:
        if self.fail_visits:
            raise self.fail_visits.pop(0)
        self.visits.extend(records)

    async def alert_ids_since(self, since_ms: int) -> set[str]:
        self.since.append(since_ms)
        return {
            json.loads(record.value or b"")["id"]
            for at, record in self.topic
            if at * 1000 >= since_ms
        }

    def alert_ids(self) -> list[str]:
        """Ids of the alerts on the topic, in produce order (repeats kept)."""
        return [json.loads(record.value or b"")["id"] for _, record in self.topic]


class RecordingStore(MemorySessionStore):
    """The memory store, recording the session ids each ``load`` asked for."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        super().__init__(ttl_s, clock)
        self.loads: list[list[str]] = []

    async def load(self, sids: Sequence[str]) -> dict[str, SessionState]:
        self.loads.append(list(sids))
        return await super().load(sids)
