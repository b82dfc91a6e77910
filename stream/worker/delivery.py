"""Session state and alert delivery of the worker: the store round trips
and the outbox protocol, below the batch logic of :mod:`stream.worker.pipeline`.

A session alert, and the training example of a session that closed, is
written into its session's *outbox*, in the same atomic write as the state,
before it is produced; the outbox is cleared only after
the broker acknowledged it. :meth:`SessionDelivery.recover` delivers outboxes
left pending by a crash or a failed produce, skipping ids the alerts topic
already has, so an alert is neither lost nor produced twice. A failed
produce marks the processor :attr:`~SessionDelivery.undelivered` until
:meth:`~SessionDelivery.deliver_pending` has run. Store calls are retried
forever with backoff (:func:`retry`): a batch is never skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

from detectors.alerts import Alert, rfc3339
from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import parse_ts
from detectors.hotspots import PageVisit, visits_to_json
from detectors.session import SessionState
from detectors.store import Fenced, SessionStore
from detectors.training import EXAMPLE_TYPE, Example, example_event
from stream.metrics import Metrics
from stream.records import Record, Sink, alert_record, record_from_json
from stream.retry import backoff, retry_forever
from stream.worker.faults import Fault
from stream.worker.state_cache import StateCache

log = logging.getLogger("disengage.pipeline")

T = TypeVar("T")

#: Sort key of an example closed by the sweep (after every input-closed one).
_SWEPT = 2**63

#: Backoff between tries of a failed store call: 0.1 s, doubling, at most 5 s.
STORE_BACKOFF = (0.1, 5.0)


async def retry(
    op: str, call: Callable[[], Awaitable[T]], *, metrics: Metrics, fault: Fault | None = None
) -> T:
    """``await call()`` until it succeeds, backing off :data:`STORE_BACKOFF`.

    A batch must not be skipped (that would lose events), so a Redis outage
    stalls the partition instead of crashing the worker or dropping data.
    Every failed try (a timeout included) is counted per operation; ``fault``
    logs the outage once when it starts and once when it ends.
    """

    def failed(exc: BaseException, delay: float) -> None:
        # any client error: the store is unavailable
        metrics.redis_errors.labels(op).inc()
        if fault is not None:
            fault.failed(exc, f"store {op}")

    # a fenced save is an answer, not an outage: retrying it cannot succeed
    result = await retry_forever(
        call, wait=backoff(*STORE_BACKOFF), on_failure=failed, give_up_on=(Fenced,)
    )
    if fault is not None:
        fault.ok()
    return result


class SessionDelivery:
    """States through the cache to the store, alerts through outboxes to the sink."""

    def __init__(
        self,
        config: DetectorConfig,
        store: SessionStore,
        sink: Sink,
        metrics: Metrics,
        clock: Callable[[], float],
        cache_sessions: int,
        flush_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        #: write-behind: a batch leaves the states it changed dirty in the
        #: cache, and writes those dirty for ``flush_s`` seconds (0: a batch
        #: writes every state it changed; see :meth:`write_due`)
        self.flush_s = flush_s
        self.write_behind = flush_s > 0
        self.monotonic = monotonic
        #: at most this many dirty states: a batch writes the oldest beyond it
        self.max_dirty = max(cache_sessions, 1_000)
        #: page visits of events whose states may not be written yet, per
        #: partition and the batch's last offset in it (write-behind only):
        #: released to :attr:`visit_backlog` by :meth:`settle`
        self.visits_held: list[tuple[int, int, list[PageVisit]]] = []
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.cache = StateCache(cache_sessions)
        #: a produce failed since the last delivery of every pending outbox
        self.undelivered = False
        #: hotspot alerts of a failed produce (they have no outbox): sent by
        #: :meth:`deliver_pending`, in memory only (see the README)
        self.hotspot_backlog: list[Alert] = []
        #: page visits for the shared hotspot monitors not yet acknowledged
        #: (in memory only; their states are written, so a crash loses them)
        self.visit_backlog: list[PageVisit] = []
        self._backlog_since_ms = 0
        #: the ownership epoch of each owned partition (:meth:`SessionStore.claim`)
        self.epochs: dict[int, int] = {}
        #: owned partitions found claimed by another worker (:meth:`_lose`):
        #: nothing of theirs is written, produced or committed any more
        self.fenced: set[int] = set()
        self.store_fault = Fault("Redis", log)
        self.produce_fault = Fault("Kafka produce", log)

    async def _call(self, op: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await retry(op, partial(fn, *args), metrics=self.metrics, fault=self.store_fault)

    async def _load(self, sids: Sequence[str]) -> dict[str, SessionState]:
        """States from the cache, the rest from the store (one round trip)."""
        states: dict[str, SessionState] = {}
        missing = []
        for sid in sids:
            hit = self.cache.get(sid)
            if hit is None:
                missing.append(sid)
            else:
                states[sid] = hit
        if missing:
            states.update(await self._call("load", self.store.load, missing))
        return states

    async def _save(self, items: Iterable[tuple[int, SessionState]]) -> None:
        """Write states (each with its partition), with the partitions'
        ownership epochs; those of a partition another worker claimed meanwhile
        are not written, and the partition is lost (:meth:`_lose`)."""
        items = [(p, s) for p, s in items if p not in self.fenced]
        by_partition: dict[int, list[SessionState]] = {}
        for partition, state in items:
            by_partition.setdefault(partition, []).append(state)
            self.cache.put(partition, state)
        if not by_partition:
            return
        epochs = {p: self.epochs[p] for p in by_partition if p in self.epochs}
        try:
            await self._call("save", self.store.save_many, by_partition, epochs)
        except Fenced as exc:
            # clean only once written (below), then forget the lost ones
            self.cache.written((p, s) for p, s in items if p not in exc.partitions)
            self._lose(exc.partitions)
            return
        # clean only once written: a cancelled write leaves them dirty, so
        # the commit stays below them
        self.cache.written(items)

    def _lose(self, partitions: Iterable[int]) -> None:
        """Another worker claimed these partitions: the group dropped this one
        (missed heartbeats) and gave them away. Their unwritten states and
        held page visits are dropped, not written over the new owner's, and
        nothing of theirs is produced or committed any more (the commit
        stays where it was, so the new owner reads their events again) until
        the rebalance that follows revokes them or gives them back."""
        lost = set(partitions) - self.fenced
        if not lost:
            return
        self.fenced |= lost
        self.cache.forget(lost)
        self.visits_held = [held for held in self.visits_held if held[0] not in lost]
        self.metrics.partitions_fenced.inc(len(lost))
        self.metrics.dirty_states.set(self.cache.dirty_count)
        log.warning(
            "partition(s) %s were claimed by another worker (this one was dropped from the "
            "group): their unwritten states are dropped and nothing of theirs is written, "
            "produced or committed until the rebalance",
            sorted(lost),
        )

    def event_limits(self) -> dict[int, int]:
        """Per partition, the event time (epoch ms) at or before which a
        state's first unwritten event makes it due: its watermark less the
        flush interval (none here; the batch processor knows the clocks)."""
        return {}

    async def write_due(self) -> int:
        """Write-behind: write the states dirty for the flush interval (in
        wall or in event time, :meth:`event_limits`), and the oldest beyond
        :attr:`max_dirty`. Returns the number written."""
        due = self.cache.due(
            self.monotonic() - self.flush_s, self.event_limits(), keep=self.max_dirty
        )
        return await self._write_dirty(due)

    async def _write_dirty(self, items: list[tuple[int, SessionState]]) -> int:
        await self._save(items)
        self.metrics.states_flushed.inc(len(items))
        self.metrics.dirty_states.set(self.cache.dirty_count)
        return len(items)

    async def flush(self, partitions: Iterable[int] | None = None) -> int:
        """Write every dirty state (of ``partitions``, default all), then send
        the page visits that waited for them; at a revocation or a stop.
        Returns the number of states written."""
        if not self.write_behind:
            return 0  # every batch wrote its states, and sent its visits
        wanted = None if partitions is None else set(partitions)
        written = await self._write_dirty(self.cache.dirty(wanted))
        await self.settle(wanted)
        return written

    async def settle(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Before the input's offsets are committed: write the states due
        (:meth:`write_due`), send the held page visits whose events' states
        are all written (of ``partitions``, default all), and return, per
        partition with dirty states, the first input offset not yet written
        to the store; the offsets committed stay below it, so a crash loses
        no state (the next owner reads those records again, and the events
        the written states hold are duplicates). Visits wait for the same
        reason: an event read again records its visit again only when its
        state was not written. Visits the broker refuses stay queued for
        :meth:`deliver_pending`."""
        if self.write_behind:
            await self.write_due()  # between batches too: the input may have gone quiet
        first = self.cache.first_offsets()
        for p in self.fenced:
            first[p] = -1  # the new owner's now: nothing more is committed
        wanted = None if partitions is None else set(partitions)
        held = []
        for partition, last, visits in self.visits_held:
            done = last < first.get(partition, last + 1)
            if done and (wanted is None or partition in wanted):
                self.visit_backlog.extend(visits)
            else:
                held.append((partition, last, visits))
        self.visits_held = held
        # visits the broker refuses stay queued for deliver_pending (logged
        # and counted by _send); holding the commit for them would protect
        # nothing, their states are written
        with contextlib.suppress(Exception):
            await self._send_visits()
        return first

    def _take_examples(
        self, examples: list[Example], state: SessionState, offset: int | None
    ) -> None:
        """Put the training examples of ``state``'s session (closed just now
        by the input record at ``offset``, or by the sweep: ``None``) into its
        outbox, to go to the training topic with its alerts."""
        if not examples:
            return
        produced_at = rfc3339(int(self.clock() * 1000))
        for example in examples:
            event = example_event(example, self.config.source, produced_at)
            event["producedat"] = produced_at
            if offset is not None:
                event["inputoffset"] = offset
            state.outbox.append(json.dumps(event, separators=(",", ":")))
        examples.clear()

    def _take_visits(
        self, detector: Detector, partition: int, last_offset: int | None = None
    ) -> None:
        """Queue the page visits ``detector`` recorded (``share_hotspots``)
        for ``partition``; with write-behind and the ``last_offset`` of the
        batch's events that recorded them, held until :meth:`settle`. Those
        of a partition another worker claimed are dropped: its new owner
        records them again."""
        if not detector.visits:
            return
        if partition not in self.fenced:
            if self.write_behind and last_offset is not None:
                self.visits_held.append((partition, last_offset, list(detector.visits)))
            else:
                self.visit_backlog.extend(detector.visits)
        detector.visits.clear()

    async def _send_visits(self) -> None:
        """Produce the queued page visits, one record per hotspot key (the
        record key, so one partition of the page-visits topic, and one
        shared monitor, sees every visit of a page). Raised on failure; the
        visits stay queued for :meth:`deliver_pending`."""
        if not self.visit_backlog:
            return
        by_key: dict[str, list[PageVisit]] = {}
        for visit in self.visit_backlog:
            by_key.setdefault(visit.key, []).append(visit)
        records = [Record(key.encode(), visits_to_json(group)) for key, group in by_key.items()]
        await self._send("visits", records)
        self.metrics.page_visits.labels("sent").inc(len(self.visit_backlog))
        self.visit_backlog = []

    def _take_alerts(
        self,
        alerts: list[Alert],
        state: SessionState,
        hotspots: list[Alert],
        record_ms: int | None,
    ) -> None:
        if not alerts:
            return  # most events raise none
        produced_at = rfc3339(int(self.clock() * 1000))
        for alert in alerts:
            if alert.kind == "friction_hotspot":
                hotspots.append(alert)
            else:
                record = alert_record(alert, self.config.source, produced_at, record_ms)
                assert record.value is not None
                state.outbox.append(record.value.decode())

    async def _send(self, what: str, records: Sequence[Record]) -> None:
        """Produce alerts, dead letters or training examples; a failure marks the processor
        :attr:`undelivered` (see :meth:`deliver_pending`) and is raised."""
        send = {
            "alerts": self.sink.send_alerts,
            "dead_letters": self.sink.send_dead_letters,
            "training": self.sink.send_training,
            "visits": self.sink.send_visits,
        }[what]
        try:
            await send(records)
        except Exception as exc:
            self.undelivered = True
            self.metrics.produce_failures.labels(what).inc()
            self.produce_fault.failed(exc, f"producing {len(records)} {what.replace('_', ' ')}")
            raise
        except BaseException:
            # cancelled mid-produce: the records may not have gone out, and a
            # retried batch sees its events as duplicates (nor would a closure
            # mark wait for them): the pending outboxes are delivered first
            self.undelivered = True
            raise
        self.produce_fault.ok()

    async def _deliver(
        self,
        states: Sequence[tuple[int, SessionState]],
        hotspots: Sequence[Alert],
        skip_ids: set[str] | None = None,
    ) -> int:
        """Produce outbox and hotspot alerts and the outboxes' training
        examples, await the acks, then clear the outboxes. Returns the number
        of alerts produced."""
        records: list[Record] = []
        training: list[tuple[tuple[int, int, str], Record]] = []
        kinds: list[tuple[str, str, int]] = []
        # a lost partition's alerts are its new owner's to produce
        with_outbox = [(p, s) for p, s in states if s.outbox and p not in self.fenced]
        for _, state in with_outbox:
            for text in state.outbox:
                event = json.loads(text)
                if event.get("type") == EXAMPLE_TYPE:
                    # at least once: the trainer drops a copy by its id
                    order = (
                        event.get("inputoffset", _SWEPT),
                        event["data"]["closed_ts"],
                        state.sid,
                    )
                    training.append((order, Record(state.sid.encode(), text.encode())))
                    continue
                if skip_ids and event["id"] in skip_ids:
                    continue
                records.append(record_from_json(event, text))
                data = event["data"]
                kinds.append((data["kind"], data["severity"], parse_ts(data["event_time"])))
        produced_at = rfc3339(int(self.clock() * 1000))
        for alert in hotspots:
            records.append(alert_record(alert, self.config.source, produced_at))
            kinds.append((alert.kind, alert.severity, alert.event_time))
        if records:
            try:
                await self._send("alerts", records)
            except Exception:
                if hotspots and not self.hotspot_backlog:
                    self._backlog_since_ms = int(self.clock() * 1000)
                self.hotspot_backlog.extend(h for h in hotspots if h not in self.hotspot_backlog)
                raise
            acked = self.clock()
            for kind, severity, event_ms in kinds:
                self.metrics.alerts.labels(kind, severity).inc()
                self.metrics.event_to_alert.labels(kind).observe(max(0.0, acked - event_ms / 1000))
        if training:
            # in the order their sessions closed in the input, whatever the
            # batch boundaries or a recovery's order: one partition's
            # examples reach the trainer in the same order on every run
            training.sort(key=lambda item: item[0])
            await self._send("training", [record for _, record in training])
            self.metrics.training_examples.inc(len(training))
        if with_outbox:
            for _, state in with_outbox:
                state.outbox = []
            if self.write_behind:
                # written by the next write of due states (beside the next
                # batch's produce, or the next commit's settle), not in a
                # round trip at the end of this batch: until then the stored
                # copies still hold the outboxes, which only a recovery reads,
                # and it skips what the alerts topic already has (the trainer
                # drops a copy of an example), so no commit waits for it
                for p, state in with_outbox:
                    if p not in self.fenced:  # (lost while producing: the new owner's)
                        self.cache.mark_due(p, state)
                self.metrics.dirty_states.set(self.cache.dirty_count)
            else:
                await self._save(with_outbox)
        return len(records)

    async def recover(self, partitions: Iterable[int]) -> int:
        """Deliver outboxes left pending in ``partitions`` by a crash, skipping
        ids the alerts topic already has. Returns the number delivered."""
        delivered = 0
        for p in partitions:
            pending = await self._call("pending", self.store.pending, p)
            if not pending:
                continue
            loaded = await self._call("load", self.store.load, pending)
            for sid in pending:
                cached = self.cache.get(sid)  # never older than the store's copy
                if cached is not None:
                    loaded[sid] = cached
            states = [(p, s) for s in loaded.values() if s.outbox]
            oldest = min(
                (parse_ts(json.loads(t)["producedat"]) for _, s in states for t in s.outbox),
                default=None,
            )
            skip = set() if oldest is None else await self.sink.alert_ids_since(oldest - 5000)
            sent = await self._deliver(states, [], skip_ids=skip)
            delivered += sent
            log.info("partition %d: delivered %d pending alert(s) after a restart", p, sent)
        return delivered

    async def deliver_pending(self, partitions: Iterable[int]) -> int:
        """After a failed produce: deliver every pending outbox of the owned
        ``partitions``, the queued page visits and the hotspot backlog (skipping ids already on the
        alerts topic) before anything else is processed or committed.
        Returns the number delivered."""
        if not self.undelivered:
            return 0
        delivered = await self.recover([p for p in partitions if p not in self.fenced])
        if self.hotspot_backlog:
            hotspots = self.hotspot_backlog
            skip = await self.sink.alert_ids_since(self._backlog_since_ms - 5000)
            delivered += await self._deliver([], [h for h in hotspots if h.id not in skip])
            self.hotspot_backlog = []
        await self._send_visits()
        self.undelivered = False
        return delivered
