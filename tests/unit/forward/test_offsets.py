"""Which offsets may be committed, and committing them on an interval."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaConnectionError

from stream.forward.offsets import Commits, OffsetTracker
from tests.fakes import FakeClock, FakeConsumer


def test_offsets_are_committable_up_to_the_first_unhandled_message() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in (5, 6, 7):
        tracker.start("p0", offset)
    tracker.start("p1", 0)
    assert tracker.committable() == {}  # nothing handled: nothing to commit
    tracker.done("p0", 5)
    tracker.done("p0", 7)  # 6 is held back (waiting for a digest)
    assert tracker.committable() == {"p0": 6}
    tracker.done("p1", 0)
    tracker.done("p0", 6)
    assert tracker.committable() == {"p0": 8, "p1": 1}
    tracker.forget("p0")
    tracker.done("p0", 9)  # a message of a revoked partition finishing late
    assert tracker.committable() == {"p1": 1}


class FlakyConsumer(FakeConsumer):
    """Its next commit fails as a broker outage would."""

    def __init__(self) -> None:
        super().__init__([])
        self.fail_next = False

    async def commit(self, offsets: dict) -> None:  # type: ignore[type-arg]
        if self.fail_next:
            self.fail_next = False
            raise KafkaConnectionError("broker down")
        await super().commit(offsets)


def test_commits_wait_for_the_interval_on_the_injected_clock_and_retry_after_a_failure() -> None:
    consumer = FlakyConsumer()
    clock = FakeClock(100.0)
    commits = Commits(consumer, interval_s=1.0, clock=clock)
    tp = consumer.tp

    async def go() -> None:
        commits.start(tp, 0)
        commits.done(tp, 0)
        await commits.commit()  # within the interval: nothing yet
        assert consumer.commits == []
        clock.advance(1.0)
        consumer.fail_next = True
        await commits.commit()  # fails: logged, the offset stays committable
        assert consumer.commits == []
        await commits.commit(force=True)
        assert consumer.commits == [1]
        clock.advance(5.0)
        await commits.commit()  # nothing moved: no second commit of 1
        assert consumer.commits == [1]
        commits.start(tp, 1)
        commits.done(tp, 1)
        commits.forget([tp])  # revoked before the commit: nothing to commit
        await commits.commit(force=True)
        assert consumer.commits == [1]

    asyncio.run(go())
