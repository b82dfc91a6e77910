"""Write-behind of session states (``DISENGAGE_STATE_FLUSH_S``): a batch
leaves the states it changed dirty in the worker's cache and writes those
dirty for the flush interval, so one write covers every event of a session
in that time; the input's offsets are committed only below the first event
not yet written. Memory store, fake sink and clock, as in
``test_batch_processor.py``; the real broker and Redis run in the
integration tests with the worker's default interval."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from detectors.session import SessionState
from stream.records import Message, Record
from tests.unit.test_batch_processor import Feed, Worker

FLUSH_S = 10.0


class Writes:
    """Counts the states each ``save_many`` of a worker's store wrote."""

    def __init__(self, worker: Worker) -> None:
        self.sids: list[str] = []
        save_many = worker.store.save_many

        async def counting(
            groups: Mapping[int, Sequence[SessionState]],
            epochs: Mapping[int, int] | None = None,
        ) -> None:
            self.sids += [s.sid for states in groups.values() for s in states]
            await save_many(groups, epochs)

        worker.store.save_many = counting  # type: ignore[method-assign]


async def stored(worker: Worker, sid: str) -> SessionState | None:
    return (await worker.store.load([sid])).get(sid)


async def written_through(batches: list[list[Message]]) -> Worker:
    """The reference: a worker that writes every batch's states, batches 5 s apart."""
    through = Worker()
    for batch in batches:
        await through.processor.process(batch)
        through.clock.advance(5)
    return through


async def commit_each(worker: Worker, batches: list[list[Message]], committed: int = 0) -> int:
    """Process ``batches`` 5 s apart and commit after each as the input
    consumer does: never past :meth:`settle`'s limit, never back. Returns the
    offset committed last."""
    for batch in batches:
        await worker.processor.process(batch)
        limit = (await worker.processor.settle()).get(0, batch[-1].offset + 1)
        committed = max(committed, min(batch[-1].offset + 1, limit))
        worker.clock.advance(5)
    return committed


async def assert_same_states(want: Worker, got: Worker, sids: Sequence[str]) -> None:
    for sid in sids:
        expected, actual = await stored(want, sid), await stored(got, sid)
        assert expected is not None and actual is not None
        assert actual.to_bytes() == expected.to_bytes(), sid


async def test_a_state_is_written_once_it_has_been_dirty_for_the_interval() -> None:
    worker, feed = Worker(flush_s=FLUSH_S), Feed()
    writes = Writes(worker)
    await worker.processor.process(feed.quiet("a", 2))
    worker.clock.advance(6)
    await worker.processor.process(feed.quiet("a", 2, start=2000))
    assert await stored(worker, "a") is None and writes.sids == []
    assert worker.processor.cache.get("a").n_events == 4  # type: ignore[union-attr]
    worker.clock.advance(4)  # dirty for 10 s now: the next batch writes it
    await worker.processor.process(feed.quiet("b", 1))
    assert writes.sids == ["a"]  # one write for the four events
    assert (await stored(worker, "a")).n_events == 4  # type: ignore[union-attr]
    assert worker.metric("disengage_states_flushed_total") == 1
    assert worker.metric("disengage_dirty_states") == 1  # b


async def test_the_commit_stays_below_the_first_event_not_written() -> None:
    worker, feed = Worker(flush_s=FLUSH_S), Feed()
    await worker.processor.process(feed.quiet("a", 2))  # offsets 0, 1
    assert await worker.processor.settle() == {0: 0}
    worker.clock.advance(FLUSH_S)
    await worker.processor.process(feed.quiet("b", 2))  # offsets 2, 3; a is written
    assert await worker.processor.settle() == {0: 2}
    worker.clock.advance(FLUSH_S)
    await worker.processor.process(feed.quiet("a", 1, start=5000))  # offset 4; b is written
    assert await worker.processor.settle() == {0: 4}


def slow_acks(worker: Worker, seconds: float = 0.01) -> None:
    """The broker acknowledges the worker's alerts after ``seconds`` (the
    fake sink at once), as a real one does while the batch goes on."""
    send = worker.sink.send_alerts

    async def slow(records: Sequence[Record]) -> None:
        await asyncio.sleep(seconds)
        await send(records)

    worker.sink.send_alerts = slow  # type: ignore[method-assign]


async def test_a_state_with_an_alert_is_written_with_its_outbox_at_once() -> None:
    """Written with its outbox before the alert is produced; the outbox,
    cleared once the broker acknowledged it, is written by the next write of
    due states (here the commit's settle), not in a round trip at the end of
    the batch, and no commit waits for that write."""
    worker, feed = Worker(flush_s=FLUSH_S), Feed()
    writes = Writes(worker)
    slow_acks(worker)
    await worker.processor.process(feed.pile_up("s1"))
    assert len(worker.sink.alert_ids()) == 1 and writes.sids == ["s1"]
    state = await stored(worker, "s1")
    assert state is not None and (state.n_events, state.n_alerts, len(state.outbox)) == (5, 1, 1)
    cached = worker.processor.cache.get("s1")
    assert cached is not None and (cached.n_events, cached.outbox) == (5, [])
    assert worker.processor.cache.first_offsets() == {}  # nothing holds the commit
    assert await worker.processor.settle() == {}
    assert writes.sids == ["s1", "s1"]
    state = await stored(worker, "s1")
    assert state is not None and (state.n_events, state.n_alerts, state.outbox) == (5, 1, [])
    assert worker.processor.cache.dirty_count == 0


async def test_a_crash_before_a_cleared_outbox_is_written_repeats_no_alert() -> None:
    """A kill -9 after the alert was produced and the input committed past
    it, but before its cleared outbox was written: the next owner delivers
    the stored outbox again, skips the alert the topic already has, and
    clears it; the alert is on the topic once."""
    worker, feed = Worker(flush_s=FLUSH_S), Feed()
    slow_acks(worker)
    await worker.processor.process(feed.pile_up("s1"))
    assert worker.processor.cache.first_offsets() == {}  # committed past the batch
    state = await stored(worker, "s1")
    assert state is not None and len(state.outbox) == 1  # the stored copy still holds it
    restarted = worker.restarted()
    await restarted.processor.assign([0])
    await restarted.processor.flush()
    assert restarted.sink.alert_ids() == worker.sink.alert_ids()
    assert len(restarted.sink.alert_ids()) == 1
    state = await stored(restarted, "s1")
    assert state is not None and (state.n_events, state.outbox) == (5, [])


async def test_a_crash_loses_no_state_the_input_is_read_again_from_the_commit() -> None:
    """Batches over 40 s, the offsets committed as the worker would
    (below :meth:`settle`), a kill -9, and a new process that reads the
    input again from the commit: every state ends as in a run that wrote
    every batch through, and no alert is produced twice."""
    feed = Feed()
    batches: list[list[Message]] = []
    for i in range(8):
        batch = feed.quiet(f"q{i % 3}", 2, start=5000 * i)
        if i == 3:
            batch += feed.pile_up("alerted", start=5000 * i)
        batches.append(batch)
    through = await written_through(batches)

    behind = Worker(flush_s=FLUSH_S)
    committed = await commit_each(behind, batches[:6])
    assert 0 < committed < batches[5][-1].offset + 1  # some events only in memory
    restarted = behind.restarted()  # kill -9: the dirty states are gone
    await restarted.processor.assign([0])
    rest = [m for batch in batches for m in batch if m.offset >= committed]
    await restarted.processor.process(rest)
    await restarted.processor.flush()
    await assert_same_states(through, restarted, ("q0", "q1", "q2", "alerted"))
    assert sorted(restarted.sink.alert_ids()) == sorted(through.sink.alert_ids())


async def test_page_visits_wait_until_the_states_of_their_events_are_written() -> None:
    worker, feed = Worker(flush_s=FLUSH_S, share_hotspots=True), Feed()
    await worker.processor.process(feed.quiet("a", 4))
    await worker.processor.settle()
    assert worker.sink.visits == []  # their states are only in memory
    worker.clock.advance(FLUSH_S)
    await worker.processor.process(feed.quiet("b", 1))  # writes a
    await worker.processor.settle()
    assert worker.sink.visits and worker.processor.visits_held == []


async def test_a_revocation_writes_the_dirty_states_of_its_partitions_first() -> None:
    worker, feed = Worker(flush_s=FLUSH_S), Feed()
    both = feed.quiet("a", 2, partition=0) + feed.quiet("b", 2, partition=1)
    await worker.processor.process(both)
    await worker.processor.revoke([0])
    assert (await stored(worker, "a")).n_events == 2  # type: ignore[union-attr]
    assert await stored(worker, "b") is None and "a" not in worker.processor.cache
    assert await worker.processor.settle() == {1: 0}


async def test_at_most_the_cache_size_of_states_wait_to_be_written() -> None:
    worker, feed = Worker(flush_s=FLUSH_S, cache_sessions=1000), Feed()
    await worker.processor.process([m for i in range(1200) for m in feed.quiet(f"s{i}", 1)])
    assert worker.processor.cache.dirty_count == 1000
    assert await stored(worker, "s0") is not None and await stored(worker, "s199") is not None
    assert await stored(worker, "s200") is None
    # the oldest went first, and the commit stays below the first still dirty
    assert await worker.processor.settle() == {0: 200}


async def test_a_revocation_goes_on_when_the_page_visits_are_refused() -> None:
    """The states are written and the partition given up; the visits stay
    queued and go out before the next batch."""
    worker, feed = Worker(flush_s=FLUSH_S, share_hotspots=True), Feed()
    await worker.processor.process(feed.quiet("a", 4))
    worker.sink.fail_visits += [ConnectionError("broker unavailable")] * 3
    await worker.processor.revoke([0])
    worker.sink.fail_visits.clear()
    assert (await stored(worker, "a")).n_events == 4  # type: ignore[union-attr]
    assert "a" not in worker.processor.cache and 0 not in worker.processor.partitions
    assert worker.sink.visits == [] and worker.processor.visit_backlog
    await worker.processor.process(feed.quiet("b", 1, partition=1))
    assert worker.sink.visits and not worker.processor.visit_backlog


async def test_in_a_backlog_event_time_writes_what_the_wall_clock_would_not_yet() -> None:
    """Read at catch-up speed, minutes of event time pass in seconds: a
    state is due once its partition's event time is the interval past it,
    so a replay after a crash stays within what each state's
    de-duplication ring remembers."""
    worker, feed = Worker(flush_s=FLUSH_S), Feed()
    await worker.processor.process(feed.quiet("a", 2))
    later = [m for sid in ("b", "c", "d") for m in feed.quiet(sid, 2, start=60_000)]
    await worker.processor.process(later)  # no wall time passed
    assert (await stored(worker, "a")).n_events == 2  # type: ignore[union-attr]
    assert await stored(worker, "b") is None


async def test_a_write_cut_short_leaves_its_states_dirty_and_the_commit_below_them() -> None:
    """A stop that cancels the write in flight: the states are still dirty,
    so the commit at the stop stays below their events."""
    worker, feed = Worker(flush_s=FLUSH_S), Feed()
    await worker.processor.process(feed.quiet("a", 2))
    worker.clock.advance(FLUSH_S)
    save_many = worker.store.save_many

    async def cancelled(
        groups: Mapping[int, Sequence[SessionState]], epochs: Mapping[int, int] | None = None
    ) -> None:
        raise asyncio.CancelledError

    worker.store.save_many = cancelled  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await worker.processor.write_due()
    worker.store.save_many = save_many  # type: ignore[method-assign]
    assert worker.processor.cache.dirty_count == 1
    assert worker.processor.cache.first_offsets() == {0: 0}


async def test_a_session_seen_in_two_partitions_is_one_dirty_state() -> None:
    """After the topic got more partitions (or from a producer that does not
    key by session id): both partitions' commits wait for the one state,
    which is written once, under the partition it last changed in."""
    worker, feed = Worker(flush_s=FLUSH_S), Feed()
    await worker.processor.process(feed.quiet("a", 2, partition=0))
    await worker.processor.process(feed.quiet("a", 1, start=5000, partition=1))
    assert worker.processor.cache.dirty_count == 1
    assert await worker.processor.settle() == {0: 0, 1: 0}
    writes = Writes(worker)
    worker.clock.advance(FLUSH_S)
    assert await worker.processor.settle() == {}
    assert writes.sids == ["a"] and (await stored(worker, "a")).n_events == 3  # type: ignore[union-attr]
    await worker.processor.revoke([0, 1])
    assert "a" not in worker.processor.cache


async def test_a_checkpoint_of_a_partitions_own_monitor_writes_the_dirty_states_first() -> None:
    """Hotspot scope ``partition``: a restored monitor must not see the
    replayed events' visits again, so every state they changed is written
    before the partition's local state. The shared scope's checkpoint (the
    alert budget only) does not hold the batches up for it."""
    worker, feed = Worker(flush_s=FLUSH_S), Feed()
    await worker.processor.process(feed.quiet("a", 2))
    await worker.processor.checkpoint()
    assert (await stored(worker, "a")).n_events == 2  # type: ignore[union-attr]
    assert worker.processor.cache.dirty_count == 0
    shared = Worker(flush_s=FLUSH_S, share_hotspots=True)
    await shared.processor.process(feed.quiet("b", 2))
    await shared.processor.checkpoint()
    assert await stored(shared, "b") is None and shared.processor.cache.dirty_count == 1


@pytest.mark.parametrize("flush_s", [0.0, FLUSH_S], ids=["write-through", "write-behind"])
async def test_a_worker_dropped_from_the_group_writes_nothing_over_the_new_owner(
    flush_s: float,
) -> None:
    """The group drops a worker that froze past its session timeout, and its
    partition's new owner claims it, reads the input again from the last
    commit and processes it all. The old worker then comes back: it finishes
    the batch it had fetched (with an alert in it), settles and is revoked.
    Its claim is superseded, so none of that is written, produced or
    committed: the store ends as a run without the fault left it, and no
    alert is produced twice. Assigned the partition again, it writes again."""
    feed = Feed()
    batches: list[list[Message]] = []
    rest_of_pile: list[Message] = []
    for i in range(8):
        batch = rest_of_pile + feed.quiet(f"q{i % 3}", 2, start=5000 * i)
        rest_of_pile = []
        if i == 3:
            batch += feed.pile_up("alerted3", start=5000 * i)
        if i == 5:  # a pile-up whose alert comes in the batch the old worker holds
            pile = feed.pile_up("alerted6", start=5000 * i)
            batch, rest_of_pile = batch + pile[:3], pile[3:]
        if i == 6:  # the old worker's copy of q1 misses what batch 7 adds
            batch += feed.quiet("q1", 1, start=5000 * i + 3000)
        batches.append(batch)
    through = await written_through(batches)

    old = Worker(flush_s=flush_s)
    await old.processor.assign([0])
    committed = await commit_each(old, batches[:6])
    owner = old.restarted()  # same store and alerts topic, its own memory
    await owner.processor.assign([0])
    await owner.processor.process([m for b in batches for m in b if m.offset >= committed])
    await owner.processor.flush()

    await old.processor.process(batches[6])  # fetched before it froze
    old.clock.advance(2 * FLUSH_S)
    assert (await old.processor.settle())[0] == -1  # the commit does not move
    await old.processor.revoke([0])
    assert old.metric("disengage_partitions_fenced_total") == 1
    assert old.processor.cache.dirty_count == 0
    await assert_same_states(through, owner, ("q0", "q1", "q2", "alerted3", "alerted6"))
    alert_ids = owner.sink.alert_ids()  # the one topic, both workers' alerts
    assert len(alert_ids) == len(set(alert_ids)) == 2
    assert sorted(alert_ids) == sorted(through.sink.alert_ids())

    await old.processor.assign([0])  # given back by a later rebalance: a new claim
    await old.processor.process(feed.quiet("again", 1, start=60_000))
    await old.processor.flush()
    assert await stored(old, "again") is not None and not old.processor.fenced


async def test_a_claim_lost_with_redis_data_is_taken_again_and_nothing_is_lost() -> None:
    """The partition's epoch vanished from the store (a Redis failover that
    lost the last writes) while the worker still owns the partition: its next
    write is refused, it stops committing and rejoins the group; assigned the
    partition again, it claims it anew and reads the input again from the
    last commit. The states end as in a run without the fault."""
    feed = Feed()
    batches = [feed.quiet(f"q{i % 3}", 2, start=5000 * i) for i in range(8)]
    through = await written_through(batches)

    worker = Worker(flush_s=FLUSH_S)
    await worker.processor.assign([0])
    committed = await commit_each(worker, batches[:4])
    worker.store._epochs.clear()  # the claim is gone from the store
    committed = await commit_each(worker, batches[4:6], committed)
    assert worker.processor.fenced == {0}
    await worker.processor.revoke([0])  # the rebalance the rejoin asked for
    await worker.processor.assign([0])
    assert not worker.processor.fenced
    await worker.processor.process([m for b in batches for m in b if m.offset >= committed])
    await worker.processor.flush()
    await assert_same_states(through, worker, ("q0", "q1", "q2"))
