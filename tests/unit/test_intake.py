"""The worker's input consumer (``stream.worker.intake``) against a fake
consumer that honours the aiokafka calls it makes: what is committed, when,
and around a revocation. The real broker runs in the integration tests."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from stream.records import Message
from stream.retry import Stopped
from stream.settings import Settings
from stream.worker.intake import Intake
from stream.worker.stalls import BatchLock

TOPIC = "interactions"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class FakeConsumer:
    """Hands out the fetches queued in ``fetches``; records commits."""

    def __init__(self, fetches: list[dict[TopicPartition, list[Any]]]) -> None:
        self.fetches = fetches
        self.owned = {P0, P1}
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(0)
        return self.fetches.pop(0) if self.fetches else {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    async def stop(self) -> None:
        self.stopped = True

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 10 for tp in tps}

    async def committed(self, tp: TopicPartition) -> int | None:
        return 3 if tp == P1 else None


def records(tp: TopicPartition, *offsets: int) -> list[Any]:
    return [
        SimpleNamespace(
            value=b"{}", key=b"s", topic=tp.topic, partition=tp.partition, offset=o, timestamp=0
        )
        for o in offsets
    ]


REVOKED: list[list[int]] = []


def intake(process: Any, clock: Any = None) -> Intake:
    async def nothing(parts: list[int]) -> None:
        REVOKED.append(parts)

    settings = Settings.from_env({"DISENGAGE_TOPIC_INTERACTIONS": TOPIC})
    return Intake(
        settings, process, nothing, nothing, BatchLock(), clock=clock or (lambda: 0.0)
    )


async def drain(taker: Intake, consumer: FakeConsumer) -> None:
    """Run the loop until every queued fetch was taken, then stop it."""
    taker.consumer = consumer
    loop = asyncio.create_task(taker._consume(consumer))
    while consumer.fetches and not loop.done():
        await asyncio.sleep(0)
    taker.stopping.set()
    await loop


def test_offsets_are_committed_after_the_batch_each_interval() -> None:
    seen: list[list[Message]] = []
    now = [0.0]

    async def process(messages: list[Message], generation: int) -> None:
        assert not consumer.commits or consumer.commits[-1].get(P0, 0) <= messages[0].offset
        seen.append(messages)
        now[0] += 0.6  # each batch takes 0.6 s: a commit every second batch

    consumer = FakeConsumer([{P0: records(P0, 0, 1)}, {P0: records(P0, 2), P1: records(P1, 0)}])
    taker = intake(process, clock=lambda: now[0])
    asyncio.run(drain(taker, consumer))
    assert [m.offset for batch in seen for m in batch] == [0, 1, 2, 0]
    assert consumer.commits == [{P0: 3, P1: 1}]  # the next offsets to read, once due
    asyncio.run(taker.commit(force=True))
    assert len(consumer.commits) == 1  # nothing new: no empty commit


def test_a_batch_revoked_while_it_ran_records_no_offsets() -> None:
    async def process(messages: list[Message], generation: int) -> None:
        # the group moves the partition while the batch runs (aiokafka keeps
        # the old assignment until the revocation callback has returned)
        await taker.on_partitions_revoked([P0])
        consumer.owned = {P1}

    consumer = FakeConsumer([{P0: records(P0, 5, 6)}])
    taker = intake(process)
    taker.processed[P0] = 5
    asyncio.run(drain(taker, consumer))
    # the revocation committed what was done before; the batch is the next owner's
    assert consumer.commits == [{P0: 5}]
    assert P0 not in taker.processed and taker.rebalancing


def test_a_stop_during_a_failing_batch_commits_nothing_of_it() -> None:
    async def process(messages: list[Message], generation: int) -> None:
        raise Stopped

    consumer = FakeConsumer([{P0: records(P0, 0)}])
    taker = intake(process)
    asyncio.run(drain(taker, consumer))
    asyncio.run(taker.commit(force=True))
    assert consumer.commits == [] and taker.processed == {}


def test_lag_counts_from_the_processed_or_committed_offsets_to_the_end_now() -> None:
    taker = intake(None)
    taker.consumer = FakeConsumer([])
    taker.committed = {P0: 4}
    taker.rebalancing = False
    # P1's committed offset is asked once, then known
    assert asyncio.run(taker.lag(1.0)) == {0: 6, 1: 7}
    assert taker.committed == {P0: 4, P1: 3}
    # processed beyond the commit (write-behind): counted from what was processed
    taker.processed = {P0: 9}
    assert asyncio.run(taker.lag(1.0)) == {0: 1, 1: 7}


def test_a_stop_checkpoints_and_commits_before_leaving_the_group() -> None:
    """Leaving the group calls no revocation: the intake does its work first."""
    consumer = FakeConsumer([])
    taker = intake(None)
    taker.consumer = consumer
    taker.processed = {P0: 5, P1: 2}
    REVOKED.clear()
    asyncio.run(taker._leave(consumer))
    assert REVOKED == [[0, 1]] and consumer.commits == [{P0: 5, P1: 2}]
    assert getattr(consumer, "stopped", False) and taker.consumer is None


def test_a_commit_stays_below_the_first_record_whose_state_is_not_written() -> None:
    """Write-behind: ``settle`` (under the batch lock) bounds each partition's
    commit; a partition without unwritten states commits what it processed,
    and a failed settle commits nothing."""
    limits: dict[int, int] = {0: 4}
    calls: list[bool] = []

    async def settle() -> dict[int, int]:
        calls.append(taker.lock.locked())
        if limits is None:
            raise RuntimeError("page visits not acknowledged")
        return dict(limits)

    consumer = FakeConsumer([])
    taker = intake(None)
    taker.settle = settle
    taker.consumer = consumer
    taker.processed = {P0: 9, P1: 2}
    asyncio.run(taker.commit())
    assert calls == [True]  # under the lock: no batch runs meanwhile
    assert consumer.commits == [{P0: 4, P1: 2}]
    limits.clear()  # every state written since
    asyncio.run(taker.commit())
    assert consumer.commits[-1] == {P0: 9}  # P1 was committed already
    limits = None  # type: ignore[assignment]
    taker.processed[P1] = 7
    asyncio.run(taker.commit())
    assert len(consumer.commits) == 2 and taker.committed == {P0: 9, P1: 2}


def test_a_partition_claimed_by_another_worker_commits_nothing_and_rejoins_once() -> None:
    """Partition 0 is found fenced (another worker claimed it) while still
    assigned here: its offsets are not committed (settle's -1) and the
    consumer asks the group for a rebalance, once until the next assignment;
    partition 1 commits as usual."""
    fenced: set[int] = set()

    async def process(messages: list[Message], generation: int) -> None:
        if any(m.partition == 0 and m.offset >= 2 for m in messages):
            fenced.add(0)

    async def settle() -> dict[int, int]:
        return {p: -1 for p in fenced}

    rejoins: list[str] = []
    consumer = FakeConsumer(
        [{P0: records(P0, 0, 1)}, {P0: records(P0, 2), P1: records(P1, 0)}, {P1: records(P1, 1)}]
    )
    consumer._coordinator = SimpleNamespace(  # type: ignore[attr-defined]
        request_rejoin=lambda: rejoins.append("rejoin")
    )
    settings = Settings.from_env({"DISENGAGE_TOPIC_INTERACTIONS": TOPIC})

    async def nothing(parts: list[int]) -> None:
        return None

    taker = Intake(
        settings,
        process,
        nothing,
        nothing,
        BatchLock(),
        settle=settle,
        fenced=lambda: fenced,
        clock=lambda: 0.0,  # no periodic commit: only the one below
    )
    asyncio.run(drain(taker, consumer))
    assert rejoins == ["rejoin"]  # asked once, not after every batch
    asyncio.run(taker.commit(force=True))
    assert consumer.commits == [{P1: 2}]  # partition 0 stays at its last commit
    asyncio.run(taker.on_partitions_assigned([P0, P1]))
    assert not taker._rejoin_asked  # a new assignment: a new fence asks again
