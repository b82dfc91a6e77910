"""The worker's batch step, independent of Faust.

``BatchProcessor.process(messages)`` takes one batch of raw Kafka messages
and, in this order:

1. parses each with the core's parser; invalid input becomes a dead letter
   (original bytes plus reason headers, a tombstone keeps its null value),
   never an exception;
2. loads the states of the batch's sessions from the store (one round trip);
3. runs the detector of the message's partition over the events in order;
   session alerts go into the session's delivery *outbox* in its state; an
   event the detector does not apply is either a duplicate (counted) or
   dead-lettered (``late_event``, ``after_close``), never dropped unseen;
4. saves the touched states that carry an outbox (one round trip; each
   state write is atomic);
5. produces dead letters, alerts and training examples, and while the
   broker acknowledges them saves the other touched states (one round
   trip), so an alert does not wait for the states of every session the
   batch touched (live traffic touches one per event); then produces the
   page visits. With write-behind (``DISENGAGE_STATE_FLUSH_S``) the other
   states stay dirty in the cache instead, step 5 writes those dirty for
   the flush interval, and the visits wait until their states are written
   (:meth:`~stream.worker.delivery.SessionDelivery.settle`);
6. clears the delivered outboxes (one round trip; with write-behind, in the
   cache: the next write of due states stores them, beside the next batch's
   produce or at the next commit).

Only then may the caller commit the batch's offsets, and with write-behind
only below each partition's first record whose state is still dirty
(``settle``), so what follows holds for the states written. A crash before step 4
redelivers the batch and repeats nothing. After it, a redelivered event is a
duplicate to a state saved in step 4 or 5 and is applied again, as the first
time, to one that was not saved yet; an outbox saved in step 4 still holds
its alerts, which
:meth:`~stream.worker.delivery.SessionDelivery.recover` delivers, skipping any id already on the
alerts topic. So no alert is lost and none is produced twice. A produce that
fails inside a running worker leaves the processor *undelivered*: the next
batch or sweep first delivers every pending outbox of the owned partitions
the same way, so a retried batch (whose events are now duplicates) cannot be
committed while its alerts wait in an outbox.

Each partition's event-time clock is a :class:`~detectors.clock.StreamClock`:
an event from a client clock far ahead is applied but does not move it, so
one bad clock cannot time out every open session.

The worker learns nothing: its detectors score with the learned models of
the version the trainer published last (or the pinned one), adopted between
batches from a :class:`~stream.worker.model_feed.ModelFeed`, and each closed
session's labelled example goes through the outbox to the training topic.
Only the hotspot monitor and the alert budget are per input partition,
checkpointed to the store and warm-started on assignment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import TypeVar

from prometheus_client import Histogram

from detectors.alerts import Alert
from detectors.clock import StreamClock
from detectors.config import DetectorConfig
from detectors.detector import DEAD_LETTER_STATUSES, Detector, DetectorModels, next_check
from detectors.events import Event, EventParser, InvalidEvent
from detectors.session import SessionState
from detectors.store import SessionStore
from stream.metrics import Metrics
from stream.records import Message, Record, Sink, dead_letter, parse_event
from stream.worker.faults import Throttled
from stream.worker.model_feed import ModelFeed
from stream.worker.upkeep import PartitionState, PartitionUpkeep, checkpoint_name

log = logging.getLogger("disengage.pipeline")

T = TypeVar("T")


#: At most one log line per this many seconds about events ahead of the clock.
CLOCK_LOG_INTERVAL_S = 60.0

#: The ``dlq.detail`` of the dead-lettered step statuses (``DEAD_LETTER_STATUSES``).
DEAD_DETAILS = {
    "late": "older than the session's newest event by more than {lateness} ms",
    "after_close": "after its session's purchase, or at or before its close by exit or timeout",
}


#: A batch slower than this (seconds) is logged with its stages.
SLOW_BATCH_S = 1.0


def _lap(stage: Histogram, name: str, since: float, laps: dict[str, float] | None = None) -> float:
    """Observe the time of stage ``name`` (since ``since``, perf-counter
    seconds), note it in ``laps``, and return now, the start of the next stage."""
    now = time.perf_counter()
    stage.labels(name).observe(now - since)
    if laps is not None:
        laps[name] = now - since
    return now


#: Turns of the event loop :func:`_let_io_start` gives: the produce task
#: hands its records to the producer, the producer's sender task wakes and
#: starts a request, and the request task writes it to the socket.
IO_START_TURNS = 4


async def _let_io_start() -> None:
    """Let produce requests just started reach the socket before the loop
    is held by CPU work (the states' encoding): the broker then acknowledges
    them while the worker encodes, not after."""
    for _ in range(IO_START_TURNS):
        await asyncio.sleep(0)


class BatchProcessor(PartitionUpkeep):
    """Batches in, state and alerts out. One instance per worker."""

    def __init__(
        self,
        config: DetectorConfig,
        store: SessionStore,
        sink: Sink,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        idle_grace_s: float,
        cache_sessions: int,
        feed: ModelFeed | None = None,
        share_hotspots: bool = False,
        flush_s: float = 0.0,
        sweep_interval_s: float = 0.0,
        input_partitions: int = 1,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: wall-clock seconds (epoch), for alert times, idle
        partitions and checkpoint ages. ``idle_grace_s`` and
        ``cache_sessions``: see the settings of the same names. ``flush_s``:
        ``DISENGAGE_STATE_FLUSH_S`` (0, the default here: every batch writes
        the states it changed; else write-behind, and the caller commits the
        input's offsets below :meth:`settle`'s; ``monotonic`` times how long
        a state has been dirty). ``sweep_interval_s``: ``DISENGAGE_SWEEP_INTERVAL_S``,
        of event time here (:meth:`sweeps_behind`; 0, the default here: only the
        caller's wall-clock timer sweeps). ``input_partitions``: the input
        topic's partition count, named in the closure marks (:meth:`send_marks`;
        the worker sets the topic's own count at each assignment). ``feed``:
        the published model versions to serve (``None``: the models stay
        as they start, untrained). ``share_hotspots``: send page visits to
        the shared hotspot monitors (:mod:`stream.worker.hotspot_agent`)
        instead of observing them in each partition's own monitor.

        The processor sets the ``store``'s schedule of hesitation checks
        (``check_at``) to :func:`~detectors.detector.next_check` of its own
        ``config``: the sweep finds the sessions due through the store's
        index, and a schedule of another config would keep returning
        sessions the detector does not check."""
        store.check_at = partial(next_check, config)
        super().__init__(config, store, sink, metrics, clock, cache_sessions, flush_s, monotonic)
        self.feed = feed
        self.share_hotspots = share_hotspots
        self.parser = EventParser(config)
        self.idle_grace_s = idle_grace_s
        self.partitions: dict[int, PartitionState] = {}
        self.sweep_left = False
        self.sweep_every_ms = int(sweep_interval_s * 1000)
        self.input_partitions = input_partitions
        self.marked: dict[int, int | None] = {}
        self.clock_log = Throttled(log, CLOCK_LOG_INTERVAL_S)
        self.slow_log = Throttled(log, 10.0, level=logging.INFO)

    # ------------------------------------------------------------ ownership
    async def assign(self, partitions: Iterable[int]) -> None:
        """Take ownership: claim each new partition (a new ownership epoch:
        from then on a previous owner's writes to it are refused), warm-start
        models from checkpoints, deliver any outbox left behind by a
        previous owner, then send the partitions' first closure marks."""
        new = [p for p in partitions if p not in self.partitions or p in self.fenced]
        self._adopt_models()
        current = self.feed.current if self.feed is not None else None
        for p in new:
            self.epochs[p] = await self._call("claim", self.store.claim, p)
            self.fenced.discard(p)
            models = await self._models(p)
            if current is not None:
                models.adopt(current.learned, current.tag)
            detector = Detector(
                self.config, models, learn=False, share_hotspots=self.share_hotspots
            )
            now = self.clock()
            self.partitions[p] = PartitionState(
                detector,
                StreamClock.for_config(self.config),
                wall_at_watermark=now,
                checkpointed_at=now,
                suppressed_reported=detector.models.suppressed_by_budget,
            )
        if new:
            await self.recover(new)
            # a first mark (0) before any example of theirs: from here on the
            # trainer holds each example for its turn (before any mark it
            # learns them as they come, as from workers of an earlier release)
            try:
                await self.send_marks()
            except Exception as exc:  # the sweep timer sends them
                log.warning("closure marks not sent at assignment: %s", exc)

    async def _models(self, partition: int) -> DetectorModels:
        """Fresh models with the partition's checkpointed local state."""
        models = DetectorModels(self.config)
        blob = await self._call("load_blob", self.store.load_blob, checkpoint_name(partition))
        if isinstance(blob, bytes):
            try:
                models.restore_local(blob)
            except Exception as exc:  # incompatible or corrupt: start fresh, say so
                log.warning("partition %d: ignoring the hotspot checkpoint (%s)", partition, exc)
        return models

    def event_limits(self) -> dict[int, int]:
        flush_ms = int(self.flush_s * 1000)
        return {
            p: part.clock.now - flush_ms for p, part in self.partitions.items() if part.clock.now
        }

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Give up partitions: write their dirty states, checkpoint their
        models, and forget their cached states (the next owner may change them)."""
        revoked = set(partitions)
        await self.flush(revoked)  # their states, before the next owner reads them
        for p in revoked:
            if p in self.partitions:
                await self.checkpoint([p])
                del self.partitions[p]
            self.marked.pop(p, None)
            # (a lost partition stays fenced until it is assigned again: the
            # commit that follows the revocation must not move its offset)
            self.epochs.pop(p, None)
        self.cache.forget(revoked)

    # ------------------------------------------------------------- the batch
    async def process(self, messages: Sequence[Message]) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        stage = metrics.batch_stage_seconds
        self._adopt_models()
        await self.deliver_pending(self.partitions)
        mark = time.perf_counter()
        stage.labels("recover").observe(mark - started)
        laps: dict[str, float] = {"recover": mark - started}
        now = self.clock()
        metrics.batch_size.observe(len(messages))
        if self.fenced:
            # claimed by another worker: theirs to process (see _lose)
            messages = [m for m in messages if m.partition not in self.fenced]
        dead: list[tuple[int, Record]] = []
        events: list[tuple[int, Event, Message]] = []
        for message in messages:
            if message.value is None:
                dead.append(self._dead(message, "tombstone", "null value (a tombstone)", now))
                continue
            try:
                event = parse_event(self.parser, message.value)
            except InvalidEvent as exc:
                metrics.invalid.labels(exc.reason).inc()
                dead.append(self._dead(message, exc.reason, exc.detail, now))
                continue
            events.append((message.partition, event, message))
        mark = _lap(stage, "parse", mark, laps)
        # Own (and recover the outboxes of) every partition of the batch before
        # loading any state: recovery rewrites states, and a copy loaded before
        # it would still carry the outbox it delivered.
        unowned = sorted({p for p, _, _ in events} - set(self.partitions))
        if unowned:
            await self.assign(unowned)
        sids = list(dict.fromkeys(e.session_id for _, e, _ in events))
        states = await self._load(sids)
        mark = _lap(stage, "load", mark, laps)
        touched: dict[str, tuple[int, SessionState]] = {}
        hotspot_alerts: list[Alert] = []
        # metrics are counted per batch: a labelled inc() per event costs more than a lookup
        types: Counter[str] = Counter(e.type for _, e, _ in events)
        statuses: Counter[str] = Counter()
        trust_scores: list[float] = []
        mono = self.monotonic()
        last_offsets: dict[int, int] = {}
        for partition, event, message in events:
            last_offsets[partition] = message.offset
            part = self.partitions[partition]
            detector = part.detector
            self._observe_clock(partition, part, event, now)
            result = detector.process(states.get(event.session_id), event)
            statuses[result.status] += 1
            reason = DEAD_LETTER_STATUSES.get(result.status)
            if reason is not None:
                detail = DEAD_DETAILS[result.status].format(
                    lateness=self.config.allowed_lateness_ms
                )
                metrics.invalid.labels(reason).inc()
                dead.append(self._dead(message, reason, detail, now))
                continue
            if result.status != "applied":
                continue  # a duplicate: applied before, counted above
            state = result.state
            states[event.session_id] = state
            touched[event.session_id] = (partition, state)
            if self.write_behind:
                # dirty from now on: written even if this batch fails later
                # (its retry would see these events as duplicates)
                self.cache.mark(partition, state, mono, part.clock.now, message.offset)
            if state.trust >= 0 and state.trust_ts == event.ts:
                trust_scores.append(state.trust)
            if result.closed and state.outcome:
                metrics.sessions_closed.labels(state.outcome).inc()
                self._take_examples(detector.examples, state, message.offset)
            self._take_alerts(result.alerts, state, hotspot_alerts, message.timestamp_ms)
        self._count(types, statuses, trust_scores)
        if self.write_behind:  # held until their states are written (settle)
            for p, part in self.partitions.items():
                self._take_visits(part.detector, p, last_offsets.get(p, -1))
        mark = _lap(stage, "detect", mark, laps)
        outboxes = [(p, s) for p, s in touched.values() if s.outbox]
        others = [(p, s) for p, s in touched.values() if not s.outbox]
        # an outbox is stored before anything in it is produced
        await self._save(outboxes)
        # the dead letters and alerts go out while the other states are saved;
        # every send and save finishes, whatever fails or is cancelled, before
        # the batch ends (a retry must not race any of them, and a state the
        # batch changed in the cache must reach the store: a retry would see
        # its events as duplicates and not save it again)
        sends: list[Awaitable[object]] = [self._deliver(outboxes, hotspot_alerts)]
        # (a partition lost while its outboxes were saved: its new owner's)
        dead_letters = [record for p, record in dead if p not in self.fenced]
        if dead_letters:
            sends.append(self._send("dead_letters", dead_letters))
        delivery = asyncio.gather(*sends, return_exceptions=True)
        try:
            await _let_io_start()
            if self.write_behind:
                await self.write_due()  # the others wait, dirty, for more of their events
            else:
                await self._save(others)
        except BaseException:
            await asyncio.gather(delivery, return_exceptions=True)
            raise
        mark = _lap(stage, "save", mark, laps)
        # page visits only once every state is saved (after a crash, events
        # redelivered to a saved state are duplicates and record no visit
        # again), while the alerts' acks are awaited; with write-behind,
        # once their states are written (settle)
        tail: list[Awaitable[object]] = [delivery]
        if not self.write_behind:
            for p, part in self.partitions.items():
                self._take_visits(part.detector, p)
            tail.append(self._send_visits())
        outcomes = await asyncio.gather(*tail, return_exceptions=True)
        delivered = outcomes[0]
        if isinstance(delivered, BaseException):
            raise delivered
        assert isinstance(delivered, list)
        for outcome in (*delivered, *outcomes[1:]):
            if isinstance(outcome, BaseException):
                raise outcome
        mark = _lap(stage, "produce", mark, laps)
        self._update_model_gauges()
        _lap(stage, "gauges", mark, laps)
        took = time.perf_counter() - started
        metrics.batch_seconds.observe(took)
        if took > SLOW_BATCH_S:
            stages = ", ".join(f"{k} {v:.2f}" for k, v in laps.items())
            self.slow_log.log(f"a batch of {len(messages)} took {took:.1f} s ({stages})")

    def _count(
        self, types: Counter[str], statuses: Counter[str], trust_scores: list[float]
    ) -> None:
        m = self.metrics
        for etype, n in types.items():
            m.events.labels(etype).inc(n)
        for status, n in statuses.items():
            m.event_status.labels(status).inc(n)
        observe = m.trust_score.observe
        for score in trust_scores:
            observe(score)

    def _dead(self, message: Message, reason: str, detail: str, now: float) -> tuple[int, Record]:
        self.metrics.dlq.labels(reason).inc()
        return message.partition, dead_letter(message, reason, detail, now)

    def _observe_clock(
        self, partition: int, part: PartitionState, event: Event, now: float
    ) -> None:
        """Move the partition's clock with ``event``, or count it as ahead."""
        before = part.clock.now
        if part.clock.observe(event.session_id, event.ts):
            self.metrics.clock_ahead.labels(str(partition)).inc()
            ahead_s = (event.ts - part.clock.now) / 1000
            self.clock_log.log(
                f"partition {partition}: an event {ahead_s:.0f} s ahead of the stream clock "
                "(a wrong client clock?): applied to its session; the clock did not move"
            )
        elif part.clock.now > before:
            part.wall_at_watermark = now
