"""The worker's batch step (``stream.worker.pipeline.BatchProcessor``) without Kafka or Redis.

The real detector core runs on the memory store and a fake sink, with a fake
clock: outbox, crash recovery, failed produces, the expiry sweep, the state
cache, dead letters and duplicate delivery, each in milliseconds. The model
rules are switched off (as in the integration tests' RULES_ONLY) so that the
alerts are exactly the friction pile-ups of the scripted sessions.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from detectors.config import DetectorConfig
from detectors.session import SessionState
from detectors.training import Mark, example_from_event, examples_of, training_record
from stream.metrics import Metrics
from stream.records import Message
from stream.settings import Settings
from stream.worker.pipeline import BatchProcessor
from stream.worker.upkeep import checkpoint_name
from tests.builders import T0
from tests.fakes import FakeClock, FakeSink, RecordingStore

#: The worker's defaults (idle grace, cache size), as the app passes them.
DEFAULTS = Settings()

RULES_ONLY = DetectorConfig(
    trust_min_closed=100_000_000,
    hesitation_warmup=100_000_000,
    alert_budget_per_1000=0,
    hotspot_min_visits=100_000_000,
)
TIMEOUT_S = RULES_ONLY.session_timeout_ms / 1000
TTL_S = TIMEOUT_S + 600
TOPIC = "interactions"


class Worker:
    """One worker process: a processor over a store that outlives it (Redis)
    and a sink whose alerts topic outlives it (Kafka)."""

    def __init__(
        self,
        store: RecordingStore | None = None,
        sink: FakeSink | None = None,
        clock: FakeClock | None = None,
        cache_sessions: int = DEFAULTS.state_cache_sessions,
        flush_s: float = 0.0,
        share_hotspots: bool = False,
        sweep_interval_s: float = 0.0,
    ) -> None:
        self.clock = clock or FakeClock(T0 / 1000)
        self.store = store or RecordingStore(TTL_S, self.clock)
        self.sink = sink or FakeSink(self.clock)
        self.metrics = Metrics()
        self.processor = BatchProcessor(
            RULES_ONLY,
            self.store,
            self.sink,
            self.metrics,
            clock=self.clock,
            idle_grace_s=DEFAULTS.idle_grace_s,
            cache_sessions=cache_sessions,
            flush_s=flush_s,
            monotonic=self.clock,
            share_hotspots=share_hotspots,
            sweep_interval_s=sweep_interval_s,
        )
        self.flush_s = flush_s

    def restarted(self) -> Worker:
        """A new process after a crash: same store, same alerts topic, empty memory."""
        return Worker(
            self.store, FakeSink(self.clock, self.sink.topic), self.clock, flush_s=self.flush_s
        )

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def total(self, name: str) -> float:
        """Sum of a counter over all its labels."""
        return sum(
            sample.value
            for family in self.metrics.registry.collect()
            for sample in family.samples
            if sample.name == name
        )

    async def state(self, sid: str) -> SessionState:
        return (await self.store.load([sid]))[sid]


class Feed:
    """Kafka messages of scripted events, with offsets per partition."""

    def __init__(self) -> None:
        self.offsets: dict[int, int] = {}

    def message(self, value: bytes | None, partition: int = 0, key: bytes | None = None) -> Message:
        offset = self.offsets.get(partition, 0)
        self.offsets[partition] = offset + 1
        return Message(value, key, TOPIC, partition, offset, timestamp_ms=T0)

    def event(self, sid: str, etype: str, t: int, partition: int = 0, **fields: Any) -> Message:
        body = {"session_id": sid, "ts": T0 + t, "type": etype, "event_id": f"{sid}-{t}", **fields}
        return self.message(json.dumps(body).encode(), partition, sid.encode())

    def pile_up(self, sid: str, start: int = 0, partition: int = 0) -> list[Message]:
        """A product view and four dead clicks 2 s apart: one friction
        pile-up, so one trust-loss alert on the fourth click."""
        clicks = [
            self.event(
                sid,
                "click",
                start + 1000 + 2000 * i,
                partition,
                x=50,
                y=50,
                target="button#buy",
                props={"dead": True},
            )
            for i in range(4)
        ]
        return [self.event(sid, "page_view", start, partition, page="/products/1"), *clicks]

    def quiet(self, sid: str, count: int, start: int = 0, partition: int = 0) -> list[Message]:
        """Page views 1 s apart that raise nothing."""
        return [
            self.event(sid, "page_view", start + 1000 * i, partition, page=f"/blog/{i}")
            for i in range(count)
        ]


async def test_a_quiet_batch_is_saved_and_produces_nothing() -> None:
    worker, feed = Worker(), Feed()
    await worker.processor.process(feed.quiet("calm", 3))
    state = await worker.state("calm")
    assert (state.n_events, state.outbox, state.outcome) == (3, [], None)
    assert worker.sink.topic == [] and worker.sink.dead_letters == []
    assert await worker.store.open_sessions(0) == 1
    assert worker.metric("disengage_events_total", type="page_view") == 3


async def test_alerts_go_through_the_state_outbox_before_they_are_produced() -> None:
    worker, feed = Worker(), Feed()
    seen_at_produce: list[tuple[list[str], list[str]]] = []
    send = worker.sink.send_alerts

    async def looking_first(records: Any) -> None:
        # what a crash at this very moment would leave behind in the store
        state = await worker.state("s1")
        seen_at_produce.append((state.outbox, await worker.store.pending(0)))
        await send(records)

    worker.sink.send_alerts = looking_first  # type: ignore[method-assign]
    await worker.processor.process(feed.pile_up("s1"))

    (produced,) = [record for _, record in worker.sink.topic]
    alert = json.loads(produced.value or b"")
    assert (alert["type"], alert["data"]["rule"]) == (
        "disengage.alert.trust_loss",
        "friction_pileup",
    )
    assert dict(produced.headers)["ce_id"] == alert["id"].encode()
    assert produced.key == b"s1"
    ((outbox, pending),) = seen_at_produce
    assert [json.loads(text)["id"] for text in outbox] == [alert["id"]]
    assert pending == ["s1"]
    # acknowledged: the outbox is cleared and the session no longer pending
    assert (await worker.state("s1")).outbox == []
    assert await worker.store.pending(0) == []
    severity = alert["data"]["severity"]
    assert worker.metric("disengage_alerts_total", kind="trust_loss", severity=severity) == 1


async def test_a_crash_before_the_produce_is_recovered_by_the_next_owner() -> None:
    worker, feed = Worker(), Feed()
    worker.sink.fail_alerts.append(ConnectionError("killed before the produce"))
    with pytest.raises(ConnectionError):
        await worker.processor.process(feed.pile_up("s1"))
    assert worker.sink.topic == []
    assert await worker.store.pending(0) == ["s1"]  # the state holds the alert

    restarted = worker.restarted()
    await restarted.processor.assign([0])
    assert len(restarted.sink.alert_ids()) == 1
    assert restarted.total("disengage_alerts_total") == 1
    assert (await restarted.state("s1")).outbox == []
    assert await restarted.store.pending(0) == []
    # it asked the alerts topic for ids since the alert was decided, less 5 s
    assert restarted.sink.since == [int(worker.clock() * 1000) - 5000]


async def test_a_crash_after_the_produce_is_not_produced_again() -> None:
    worker, feed = Worker(), Feed()
    worker.sink.fail_after_alerts.append(ConnectionError("killed before the outbox was cleared"))
    with pytest.raises(ConnectionError):
        await worker.processor.process(feed.pile_up("s1"))
    (alert_id,) = worker.sink.alert_ids()
    assert await worker.store.pending(0) == ["s1"]

    restarted = worker.restarted()
    await restarted.processor.assign([0])
    assert restarted.sink.alert_ids() == [alert_id]  # skipped: already on the topic
    assert (await restarted.state("s1")).outbox == []
    assert await restarted.store.pending(0) == []


async def test_a_batch_redelivered_after_the_crash_changes_nothing() -> None:
    worker, feed = Worker(), Feed()
    batch = feed.pile_up("s1")
    worker.sink.fail_alerts.append(ConnectionError("killed before the produce"))
    with pytest.raises(ConnectionError):
        await worker.processor.process(batch)
    before = await worker.state("s1")

    restarted = worker.restarted()
    await restarted.processor.process(batch)  # Kafka redelivers the uncommitted batch
    assert len(restarted.sink.alert_ids()) == 1  # by recovery, once
    after = await restarted.state("s1")
    assert (after.n_events, after.n_alerts) == (before.n_events, before.n_alerts) == (5, 1)
    assert restarted.metric("disengage_event_status_total", status="duplicate") == 5


async def test_a_failed_produce_retried_in_place_never_duplicates_an_alert_or_an_event() -> None:
    worker, feed = Worker(), Feed()
    batch = feed.pile_up("s1")
    worker.sink.fail_alerts.append(ConnectionError("broker unavailable"))
    with pytest.raises(ConnectionError):
        await worker.processor.process(batch)
    await worker.processor.process(batch)  # the app's retry: the same batch again

    state = await worker.state("s1")
    assert (state.n_events, state.n_alerts) == (5, 1)
    assert worker.metric("disengage_event_status_total", status="applied") == 5
    assert worker.metric("disengage_event_status_total", status="duplicate") == 5
    # The retry first delivers the outbox the failed produce left behind, so
    # the batch is committed only once its alert is on the topic (issue 10,
    # finding 3: it used to wait there until a rebalance or a restart).
    assert len(worker.sink.alert_ids()) == 1
    assert (state.outbox, await worker.store.pending(0)) == ([], [])
    assert worker.metric("disengage_produce_failures_total", what="alerts") == 1
    await worker.processor.process(batch)
    await worker.processor.revoke([0])
    await worker.processor.assign([0])
    assert len(worker.sink.alert_ids()) == 1


async def test_duplicate_delivery_applies_each_event_and_alert_once() -> None:
    worker, feed = Worker(), Feed()
    batch = feed.pile_up("s1")
    await worker.processor.process(batch)
    await worker.processor.process(batch)
    await worker.processor.process(batch[2:] + batch[:2])  # in another order too
    assert len(worker.sink.alert_ids()) == 1
    state = await worker.state("s1")
    assert (state.n_events, state.n_alerts, state.outbox) == (5, 1, [])
    assert worker.metric("disengage_event_status_total", status="duplicate") == 10


async def test_malformed_and_late_input_become_dead_letters_with_reasons() -> None:
    worker, feed = Worker(), Feed()
    batch = [
        feed.message(b"{not json"),
        feed.message(b"\xff\xfe"),
        feed.message(b"[1, 2]"),
        feed.message(json.dumps({"session_id": "s", "ts": T0, "type": "teleport"}).encode()),
        *feed.quiet("late", 1, start=60_000),
        feed.event("late", "page_view", 0, page="/blog/early"),  # 60 s older: late
        *feed.quiet("ok", 1),
    ]
    await worker.processor.process(batch)

    reasons = [dict(r.headers)["dlq.reason"].decode() for r in worker.sink.dead_letters]
    assert reasons == ["not_json", "not_utf8", "not_object", "unknown_type", "late_event"]
    first = dict(worker.sink.dead_letters[0].headers)
    assert first["dlq.source.topic"] == TOPIC.encode()
    assert (first["dlq.source.partition"], first["dlq.source.offset"]) == (b"0", b"0")
    assert first["dlq.detail"]  # the parser's explanation
    assert worker.sink.dead_letters[0].value == b"{not json"  # the original bytes
    late = dict(worker.sink.dead_letters[-1].headers)
    assert late["dlq.source.offset"] == b"5" and b"older than" in late["dlq.detail"]
    for reason in reasons:
        assert worker.metric("disengage_invalid_events_total", reason=reason) == 1
        assert worker.metric("disengage_dlq_messages_total", reason=reason) == 1
    # the valid events around them were applied
    assert (await worker.state("ok")).n_events == 1
    assert (await worker.state("late")).n_events == 1


async def test_the_sweep_closes_sessions_past_the_timeout_and_sends_their_example() -> None:
    worker, feed = Worker(), Feed()
    timeout_ms = RULES_ONLY.session_timeout_ms
    await worker.processor.process(feed.quiet("old", 2) + feed.quiet("young", 1, start=60_000))
    # event time moves on, in steps a stream clock follows (5 min), until one
    # timeout after "old"'s last event
    times = [120_000 + 300_000 * k for k in range(6)] + [1000 + timeout_ms + 1]
    walk = [feed.event("walker", "page_view", t, 0, page=f"/blog/{t}") for t in times]
    await worker.processor.process(walk)

    assert await worker.processor.sweep() == 1
    old = await worker.state("old")
    assert old.outcome == "timeout"
    assert (await worker.state("young")).outcome is None
    assert worker.metric("disengage_sessions_closed_total", outcome="timeout") == 1
    # the worker learns nothing: the labelled example goes to the training topic
    assert worker.processor.partitions[0].detector.models.trust.closed == 0
    (record,) = worker.sink.examples
    example = example_from_event(record.value or b"")
    assert (example.sid, example.outcome, record.key) == ("old", "timeout", b"old")
    assert example.closed_ts == old.last_ts + timeout_ms and not old.outbox
    assert await worker.store.open_sessions(0) == 2
    assert await worker.processor.sweep() == 0  # closed once


def _marks(sink: FakeSink) -> list[tuple[int, int, int | None]]:
    out = []
    for record in sink.marks:
        mark = training_record(record.value or b"")
        assert isinstance(mark, Mark)
        out.append((mark.partition, mark.partitions, mark.ts))
    return out


async def test_closure_marks_follow_the_sweeps_after_the_examples_they_cover() -> None:
    """A partition's closure mark promises the trainer that every example of
    a session it closed at or before the mark is on the topic already: it is
    sent at assignment (0), then after each sweep that moved it, as the lower
    of the sweep's event time and the clock less the allowed lateness."""
    worker, feed = Worker(), Feed()
    worker.processor.input_partitions = 4
    timeout_ms, lateness = RULES_ONLY.session_timeout_ms, RULES_ONLY.allowed_lateness_ms
    await worker.processor.process(feed.quiet("old", 2))
    assert _marks(worker.sink) == [(0, 4, 0)]  # taken: from now on, hold
    times = [120_000 + 300_000 * k for k in range(6)] + [1000 + timeout_ms + 1]
    await worker.processor.process([feed.event("w", "page_view", t, 0) for t in times])
    assert await worker.processor.send_marks() == 0  # not swept yet: still 0
    assert await worker.processor.sweep() == 1
    assert await worker.processor.send_marks() == 1
    clock = worker.processor.partitions[0].clock.now
    assert _marks(worker.sink)[-1][2] == clock - lateness  # (the sweep ran at the clock)
    (example,) = examples_of([r.value for r in worker.sink.examples])
    assert example.closed_ts > clock - lateness  # not promised yet
    # event time moves past the allowed lateness: the next sweep's mark covers it
    later = 1000 + timeout_ms + lateness + 1000
    await worker.processor.process([feed.event("w", "page_view", later, 0)])
    assert await worker.processor.sweep() == 0
    assert await worker.processor.send_marks() == 1
    assert _marks(worker.sink)[-1][2] == T0 + later - lateness >= example.closed_ts
    assert worker.sink.training[-1].key == b"mark-0"  # after the example it covers
    assert await worker.processor.send_marks() == 0  # unchanged: not sent again


async def test_a_sweep_slice_of_sessions_touched_since_indexed_does_not_move_the_mark() -> None:
    """With write-behind the expiry index can list sessions whose newer events
    are not written yet. A slice full of those closes nothing, and must not
    count as swept through its event time either: a session due behind them
    is still open, and a mark past its close would make its example late."""
    worker, feed = Worker(flush_s=10.0), Feed()
    timeout_ms, lateness = RULES_ONLY.session_timeout_ms, RULES_ONLY.allowed_lateness_ms
    await worker.processor.process([feed.event(s, "page_view", t) for t, s in enumerate("abc")])
    await worker.processor.flush()  # indexed at their first events
    # event time walks on (each step within the clock's skew), and a and b come
    # back after the timeout and the lateness, before any sweep (their new
    # events are in the cache only); c stays idle
    walk = [120_000 + 300_000 * k for k in range(6)]
    await worker.processor.process([feed.event("w", "page_view", t) for t in walk])
    back = timeout_ms + lateness + 1000
    await worker.processor.process(
        [feed.event("a", "page_view", back), feed.event("b", "page_view", back + 1)]
    )
    assert await worker.processor.sweep(limit=2) == 0  # the slice: a and b, touched
    assert not worker.processor.sweep_left
    c_closes = T0 + 2 + timeout_ms
    mark = worker.processor.closure_mark(worker.processor.partitions[0])
    assert mark is not None and mark < c_closes
    assert await worker.processor.send_marks() == 0  # still the assignment's 0
    await worker.processor.flush()  # a and b indexed at their new events
    assert await worker.processor.sweep(limit=2) == 1
    assert await worker.processor.send_marks() == 1
    (example,) = examples_of([r.value for r in worker.sink.examples])
    assert example.sid == "c" and example.closed_ts == c_closes
    mark = _marks(worker.sink)[-1][2]
    assert mark is not None and mark >= c_closes
    assert [r.key for r in worker.sink.training][-2:] == [b"c", b"mark-0"]


async def test_a_partition_without_events_stops_holding_the_trainer_back_after_the_idle_grace() -> (
    None
):
    worker = Worker()
    await worker.processor.assign([0, 1])
    assert sorted(_marks(worker.sink)) == [(0, 1, 0), (1, 2, 0)]
    worker.clock.advance(worker.processor.idle_grace_s + 1)
    assert await worker.processor.send_marks() == 2
    assert _marks(worker.sink)[-2:] == [(0, 1, None), (1, 2, None)]


async def test_no_closure_mark_goes_out_while_an_outbox_waits() -> None:
    """A mark sent while an example waits in an outbox would promise it is
    on the topic: the pending outboxes go first, and no mark goes out while
    they cannot."""
    worker, feed = Worker(), Feed()
    lateness = RULES_ONLY.allowed_lateness_ms
    await worker.processor.process(feed.quiet("s", 2))
    worker.sink.fail_training.append(ConnectionError("broker down"))
    # the exit's example stays in the outbox; event time moves past the exit
    # and the allowed lateness
    batch = [feed.event("s", "exit", 5000), feed.event("w", "page_view", 5000 + lateness + 1000)]
    with pytest.raises(ConnectionError):
        await worker.processor.process(batch)
    worker.sink.fail_training.append(ConnectionError("still down"))
    with pytest.raises(ConnectionError):  # the pending delivery fails: no mark
        await worker.processor.send_marks()
    assert [r.key for r in worker.sink.training] == [b"mark-0"]  # the assignment's 0
    assert await worker.processor.sweep() == 0
    assert await worker.processor.send_marks() == 1
    keys = [r.key for r in worker.sink.training]
    assert keys == [b"mark-0", b"s", b"mark-0"]  # the example, then the mark past it
    (example,) = examples_of([r.value for r in worker.sink.examples])
    last = _marks(worker.sink)[-1][2]
    assert last is not None and example.closed_ts <= last
    assert not (await worker.state("s")).outbox


async def test_a_backlog_sweeps_a_partition_each_time_its_event_time_moved_an_interval() -> None:
    """The wall clock stands still (a backlog drains in seconds) while event
    time runs: a partition is due for a sweep after the batch that moved its
    event time a sweep interval past its last sweep, so sessions time out in
    event-time order, not all at the timer's next tick."""
    worker, feed = Worker(sweep_interval_s=5.0), Feed()
    processor = worker.processor
    timeout_ms = RULES_ONLY.session_timeout_ms
    await processor.process(feed.quiet("old", 2))  # event time 0-1 s
    assert processor.sweeps_behind() == [0]  # never swept
    assert await processor.sweep(partitions=[0]) == 0
    assert processor.sweeps_behind() == []
    await processor.process(feed.quiet("other", 3, start=2000))  # 2-4 s: < 5 s on
    assert processor.sweeps_behind() == []
    times = [120_000 + 300_000 * k for k in range(6)] + [1000 + timeout_ms + 1]
    walk = [feed.event("walker", "page_view", t, 0, page=f"/blog/{t}") for t in times]
    await processor.process(walk)
    assert processor.sweeps_behind() == [0]
    assert await processor.sweep(partitions=[0]) == 1  # old ("other" is 3 s younger)
    assert (await worker.state("old")).outcome == "timeout"
    assert processor.sweeps_behind() == []
    # a slice that stopped at its limit leaves the partition behind
    for i in range(2):
        await processor.process(feed.quiet(f"q{i}", 1, start=timeout_ms + 2000 + i))
    more = [1000 + 2 * timeout_ms + 10_000 + 300_000 * k for k in range(-6, 1)]
    await processor.process([feed.event("walker", "page_view", t, 0) for t in more])
    assert await processor.sweep(limit=2, partitions=[0]) == 2
    assert processor.sweeps_behind() == [0]
    assert await processor.sweep(limit=2, partitions=[0]) == 1
    assert processor.sweeps_behind() == []


async def test_a_sweep_that_fails_leaves_its_partition_behind() -> None:
    worker, feed = Worker(sweep_interval_s=5.0), Feed()
    processor = worker.processor
    timeout_ms = RULES_ONLY.session_timeout_ms
    await processor.process(feed.quiet("old", 2))
    times = [120_000 + 300_000 * k for k in range(6)] + [1000 + timeout_ms + 1]
    await processor.process([feed.event("walker", "page_view", t, 0) for t in times])
    worker.sink.fail_training.append(ConnectionError("broker down"))
    with pytest.raises(ConnectionError):
        await processor.sweep(partitions=[0])
    assert processor.sweeps_behind() == [0]  # the next batch sweeps it again
    await processor.sweep(partitions=[0])  # delivers the closed session's outbox first
    assert processor.sweeps_behind() == []
    (record,) = worker.sink.examples
    assert example_from_event(record.value or b"").sid == "old"


async def test_without_a_sweep_interval_only_the_timer_sweeps() -> None:
    worker, feed = Worker(), Feed()
    await worker.processor.process(feed.quiet("a", 2))
    assert worker.processor.sweeps_behind() == []


async def test_an_idle_partition_lets_its_watermark_follow_the_wall_clock() -> None:
    worker, feed = Worker(), Feed()
    await worker.processor.process(feed.quiet("lonely", 1))
    worker.clock.advance(TIMEOUT_S)
    assert await worker.processor.sweep() == 0  # within the idle grace: event time rules
    worker.clock.advance(worker.processor.idle_grace_s + 1)
    assert await worker.processor.sweep() == 1
    assert (await worker.state("lonely")).outcome == "timeout"


async def test_the_state_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    worker, feed = Worker(cache_sessions=2), Feed()
    for sid in ("a", "b", "c"):
        await worker.processor.process(feed.quiet(sid, 1))
    assert len(worker.processor.cache) == 2 and "a" not in worker.processor.cache
    worker.store.loads.clear()
    await worker.processor.process(feed.quiet("c", 1, start=5000))  # cached: no read
    await worker.processor.process(feed.quiet("a", 1, start=5000))  # evicted: read back
    assert worker.store.loads == [["a"]]
    assert (await worker.state("a")).n_events == 2  # nothing lost with the eviction
    assert "b" not in worker.processor.cache  # least recently used went next


async def test_giving_up_a_partition_checkpoints_its_models_and_forgets_its_states() -> None:
    worker, feed = Worker(), Feed()
    await worker.processor.process(
        feed.quiet("p0", 1, partition=0) + feed.quiet("p1", 1, partition=1)
    )
    assert sorted(worker.processor.partitions) == [0, 1]
    await worker.processor.revoke([1])
    assert sorted(worker.processor.partitions) == [0]
    assert "p1" not in worker.processor.cache and "p0" in worker.processor.cache
    assert await worker.store.load_blob(checkpoint_name(1)) is not None
    assert await worker.store.load_blob(checkpoint_name(0)) is None
    worker.clock.advance(30)
    await worker.processor.checkpoint()
    assert worker.processor.partitions[0].checkpointed_at == worker.clock()


async def test_the_sweep_ticks_quiet_sessions_in_evaluate_from_the_partition_watermark() -> None:
    """A visitor staring at a comparison page sends nothing; the partition's
    watermark (moved by other sessions' events) drives the hesitation check."""
    worker, feed = Worker(), Feed()
    await worker.processor.process([feed.event("starer", "page_view", 0, page="/compare")])
    await worker.processor.process(feed.quiet("other", 1, start=10_000))
    assert await worker.processor.sweep() == 0
    assert (await worker.state("starer")).hes_checked == T0  # not due yet (30 s)
    await worker.processor.process(feed.quiet("other2", 1, start=45_000))
    await worker.processor.sweep()
    starer = await worker.state("starer")
    assert starer.hes_checked == T0 + 45_000 and len(starer.moments) == 2
    assert starer.n_events == 1 and starer.outcome is None
    await worker.processor.sweep()  # the watermark did not move: no second check
    assert len((await worker.state("starer")).moments) == 2
    # a session outside evaluate/decide is never ticked
    assert (await worker.state("other")).moments == []


async def test_a_failed_dead_letter_produce_still_saves_every_state_the_batch_changed() -> None:
    """The states a batch changed in the cache reach the store even when a
    send fails: the batch is retried in place, its events are duplicates to
    the cached states by then, and nothing would save them again."""
    worker, feed = Worker(), Feed()
    await worker.processor.process(feed.quiet("cached", 1))  # now in the cache
    batch = [*feed.quiet("cached", 2, start=5_000), feed.message(b"not json")]
    worker.sink.fail_dead_letters.append(ConnectionError("broker down"))
    with pytest.raises(ConnectionError):
        await worker.processor.process(batch)
    assert (await worker.state("cached")).n_events == 3  # saved despite the failure
    await worker.processor.process(batch)  # the retry in place
    assert (await worker.state("cached")).n_events == 3
    assert len(worker.sink.dead_letters) == 1


async def test_the_check_sweep_reads_only_the_sessions_a_check_is_due_for() -> None:
    """A sweep's work follows the checks due, not the quiet sessions: those
    outside evaluate and decide, and those checked less than 30 s of event
    time ago, are not read (a deployment at 3,300 events/s holds tens of
    thousands of sessions quiet for between 30 s and 5 min; reading them
    all every second took the worker's sweep 20 s a round)."""
    worker, feed = Worker(cache_sessions=1), Feed()
    readers = [f"reader{i}" for i in range(20)]
    await worker.processor.process(
        [feed.event(sid, "page_view", i, page="/blog/post") for i, sid in enumerate(readers)]
        + [feed.event("starer", "page_view", 0, page="/compare")]
    )
    await worker.processor.process(feed.quiet("other", 1, start=45_000))
    worker.store.loads.clear()
    await worker.processor.sweep()
    assert {sid for load in worker.store.loads for sid in load} == {"starer"}
    assert (await worker.state("starer")).hes_checked == T0 + 45_000
    # checked at 45 s: not read again before 75 s
    await worker.processor.process(feed.quiet("other", 1, start=70_000))
    worker.store.loads.clear()
    await worker.processor.sweep()
    assert worker.store.loads == []
    await worker.processor.process(feed.quiet("other", 1, start=76_000))
    await worker.processor.sweep()
    assert (await worker.state("starer")).hes_checked == T0 + 76_000


async def test_a_session_whose_state_expired_leaves_the_check_index() -> None:
    """The index can outlive a state (Redis's TTL): the sweep finds no state,
    writes the closed stub the expiry sweep writes, and the session is not
    due again, so no sweep keeps asking for another slice."""
    worker, feed = Worker(), Feed()
    await worker.processor.process([feed.event("starer", "page_view", 0, page="/compare")])
    # the state alone expires (the TTL), its index entries stay
    worker.store._states.pop("starer")
    worker.processor.cache.forget({0})
    await worker.processor.process(feed.quiet("other", 1, start=45_000))
    assert await worker.store.checks_due(0, T0 + 45_000, 10) == ["starer"]
    await worker.processor.sweep()
    assert not worker.processor.sweep_left
    assert await worker.store.checks_due(0, T0 + 10**9, 10) == []
    assert (await worker.state("starer")).outcome == "timeout"


async def test_a_sweep_in_slices_checks_every_quiet_session_and_closes_every_idle_one() -> None:
    """The worker sweeps a few sessions per turn of the batch lock; the
    slices of one round, called again while ``sweep_left``, check every quiet
    session once (they stay in the index) and close every idle one."""
    worker, feed = Worker(), Feed()
    starers = [f"starer{i}" for i in range(7)]
    await worker.processor.process(
        [feed.event(sid, "page_view", i, page="/compare") for i, sid in enumerate(starers)]
    )
    await worker.processor.process(feed.quiet("other", 1, start=45_000))
    slices = 0
    while True:
        await worker.processor.sweep(limit=3)
        slices += 1
        if not worker.processor.sweep_left:
            break
        assert slices < 10
    assert slices == 3  # 3 + 3 + 1 quiet sessions
    for sid in starers:
        state = await worker.state(sid)
        assert state.hes_checked == T0 + 45_000 and len(state.moments) == 2, sid
    # the next round starts from the earliest due again
    await worker.processor.process(feed.quiet("other", 1, start=80_000))
    await worker.processor.sweep(limit=3)
    assert (await worker.state("starer0")).hes_checked == T0 + 80_000
    assert (await worker.state("starer6")).hes_checked == T0 + 45_000
    # idle sessions close in slices too
    timeout_ms = RULES_ONLY.session_timeout_ms
    times = [120_000 + 300_000 * k for k in range(6)] + [1000 + timeout_ms + 80_000]
    await worker.processor.process(
        [feed.event("walker", "page_view", t, 0, page=f"/blog/{t}") for t in times]
    )
    closed = []
    while True:
        closed.append(await worker.processor.sweep(limit=3))
        if not worker.processor.sweep_left:
            break
    assert sum(closed) == 8 and max(closed) <= 3  # the 7 starers and "other"
    assert all([(await worker.state(sid)).outcome == "timeout" for sid in starers])


async def test_a_produce_that_fails_after_reaching_the_topic_is_not_repeated_by_the_retry() -> None:
    worker, feed = Worker(), Feed()
    batch = feed.pile_up("s1")
    worker.sink.fail_after_alerts.append(ConnectionError("ack lost"))
    with pytest.raises(ConnectionError):
        await worker.processor.process(batch)
    assert len(worker.sink.alert_ids()) == 1  # it reached the topic; the ack did not
    await worker.processor.process(batch)
    assert len(worker.sink.alert_ids()) == 1  # skipped by id on the redelivery
    assert await worker.store.pending(0) == []


async def test_a_failed_produce_in_a_sweep_is_delivered_before_the_next_batch() -> None:
    worker, feed = Worker(), Feed()
    worker.sink.fail_alerts.append(ConnectionError("broker unavailable"))
    with pytest.raises(ConnectionError):
        await worker.processor.process(feed.pile_up("s1"))
    assert worker.processor.undelivered
    await worker.processor.sweep()  # the sweep timer runs first
    assert len(worker.sink.alert_ids()) == 1 and not worker.processor.undelivered
    await worker.processor.process(feed.quiet("s2", 1, start=20_000))
    assert len(worker.sink.alert_ids()) == 1


async def test_a_tombstone_is_dead_lettered_with_its_null_value() -> None:
    worker, feed = Worker(), Feed()
    await worker.processor.process([feed.message(None, key=b"k"), *feed.quiet("ok", 1)])
    (letter,) = worker.sink.dead_letters
    assert letter.value is None and letter.key == b"k"
    assert dict(letter.headers)["dlq.reason"] == b"tombstone"
    assert worker.metric("disengage_dlq_messages_total", reason="tombstone") == 1
    assert (await worker.state("ok")).n_events == 1


async def test_events_after_a_purchase_are_dead_lettered_not_dropped() -> None:
    worker, feed = Worker(), Feed()
    batch = [
        *feed.quiet("buyer", 1),
        feed.event("buyer", "purchase", 2000, order_value=10),
        feed.event("buyer", "page_view", 3000, page="/thank-you"),
    ]
    await worker.processor.process(batch)
    (letter,) = worker.sink.dead_letters
    headers = dict(letter.headers)
    assert headers["dlq.reason"] == b"after_close" and headers["dlq.source.offset"] == b"2"
    assert b"purchase" in headers["dlq.detail"]
    assert worker.metric("disengage_dlq_messages_total", reason="after_close") == 1
    assert (await worker.state("buyer")).n_events == 2


async def test_a_client_clock_two_hours_fast_closes_no_session() -> None:
    """Issue 10, finding 1: one event two hours fast used to move the
    partition's clock, and the next sweep timed out every open session."""
    worker, feed = Worker(), Feed()
    two_hours = 2 * 3600 * 1000
    await worker.processor.process(
        feed.quiet("a", 2) + feed.quiet("b", 2, start=500) + feed.quiet("c", 1, start=900)
    )
    await worker.processor.process([feed.event("c", "page_view", two_hours, page="/blog/x")])
    assert await worker.processor.sweep() == 0
    assert worker.metric("disengage_clock_ahead_total", partition="0") == 1
    assert worker.processor.partitions[0].clock.now == T0 + 1500  # unmoved
    for sid in "ab":
        assert (await worker.state(sid)).outcome is None
    assert (await worker.state("c")).n_events == 2  # applied to its own session
    # the next events of "a" and "b" are applied as usual
    await worker.processor.process(feed.quiet("a", 1, start=5000) + feed.quiet("b", 1, start=6000))
    assert [(await worker.state(sid)).n_events for sid in "ab"] == [3, 3]
    assert worker.sink.dead_letters == []


async def test_a_gap_in_traffic_moves_the_clock_once_sessions_agree() -> None:
    worker, feed = Worker(), Feed()
    timeout_ms = RULES_ONLY.session_timeout_ms
    await worker.processor.process(feed.quiet("night", 2))
    morning = 8 * 3600 * 1000
    await worker.processor.process(
        [feed.event(sid, "page_view", morning + i, page="/") for i, sid in enumerate("xyz")]
    )
    assert worker.processor.partitions[0].clock.now == T0 + morning
    assert worker.metric("disengage_clock_ahead_total", partition="0") == 2  # x, y
    assert await worker.processor.sweep() == 1
    state = await worker.state("night")
    assert (state.outcome, state.closed_ts) == ("timeout", T0 + 1000 + timeout_ms)


async def test_hotspot_alerts_of_a_failed_produce_are_delivered_once_by_the_retry() -> None:
    """Hotspot alerts have no session outbox: a failed produce keeps them in
    memory until the next delivery (they used to be lost with the batch)."""
    from detectors.alerts import Alert

    hotspot = Alert(
        kind="friction_hotspot", severity="high", score=0.4, threshold=0.2, subject="checkout/2",
        episode=0, session_id=None, user_hash=None, stage="decide", page=None, reasons=(),
        suggested_action="x", trigger_event_id="e", event_time=T0, model_version="m",
        rule="hotspot_rate",
    )  # fmt: skip
    worker = Worker()
    worker.sink.fail_alerts.append(ConnectionError("broker unavailable"))
    with pytest.raises(ConnectionError):
        await worker.processor._deliver([], [hotspot])
    assert worker.sink.alert_ids() == [] and worker.processor.undelivered
    await worker.processor.process(Feed().quiet("s1", 1))
    assert worker.sink.alert_ids() == [hotspot.id]
    assert worker.processor.hotspot_backlog == [] and not worker.processor.undelivered
    await worker.processor.sweep()
    assert worker.sink.alert_ids() == [hotspot.id]


async def test_every_stage_of_a_batch_is_timed_and_they_add_up_to_the_batch() -> None:
    from stream.metrics import BATCH_STAGES

    worker, feed = Worker(), Feed()
    await worker.processor.process([*feed.pile_up("s1"), feed.message(b"{not json")])
    counts = {
        s: worker.metric("disengage_batch_stage_seconds_count", stage=s) for s in BATCH_STAGES
    }
    assert counts == dict.fromkeys(BATCH_STAGES, 1.0)
    stages = sum(worker.metric("disengage_batch_stage_seconds_sum", stage=s) for s in BATCH_STAGES)
    batch = worker.metric("disengage_batch_seconds_sum")
    assert 0 < stages <= batch
