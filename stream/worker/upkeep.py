"""What the worker does for its partitions between batches: the expiry
sweep, the quiet-session checks, the checkpoint of their local state,
serving a newer model version, the model gauges.
:class:`~stream.worker.pipeline.BatchProcessor` inherits it, and its batches
call the model steps too.

The sweep runs under the batch lock, one partition and one slice at a time
(``stream.worker.app``'s sweep timer, and after a batch that moved a
partition's event time a sweep interval on: :meth:`PartitionUpkeep.sweeps_behind`),
so a waiting batch goes in between:

* sessions idle past the session timeout in event time are closed (outcome
  ``timeout``), their examples and alerts delivered through the outbox as a
  batch's are;
* quiet sessions in evaluate or decide are checked for hesitation when the
  store's check index says they are due (:func:`~detectors.detector.next_check`);
* a partition with no traffic lets its watermark follow the wall clock after
  ``idle_grace_s``, so its sessions still time out.

After the timer's sweep the worker sends each owned partition's *closure
mark* to the training topic when it moved (:meth:`PartitionUpkeep.send_marks`,
:class:`~detectors.training.Mark`): every example of a session the partition
closed at or before it is on the topic already, so the trainer can learn the
examples in the order they closed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from detectors.alerts import Alert, rfc3339
from detectors.clock import StreamClock
from detectors.detector import Detector
from detectors.session import SessionState
from detectors.training import Mark, mark_event
from stream.records import Record
from stream.worker.delivery import SessionDelivery
from stream.worker.model_feed import ModelFeed


@dataclass
class PartitionState:
    """What a worker keeps per owned input partition. Wall times are seconds
    of the processor's clock; the two are set when the partition is taken."""

    detector: Detector
    clock: StreamClock  # the partition's event time (ms)
    wall_at_watermark: float  # when the clock last moved
    checkpointed_at: float  # when the models were last saved
    #: the model's budget-suppression count already added to the metric (a
    #: warm-started model starts from its checkpoint's count)
    suppressed_reported: int = 0
    #: the partition's event time (ms) when a sweep last went through it
    swept_at: int = 0


def checkpoint_name(partition: int) -> str:
    """The store blob of a partition's local state (hotspots and alert budget)."""
    return f"local-p{partition}"


class PartitionUpkeep(SessionDelivery):
    """The sweep and the served models of the owned partitions; the batch
    processor sets the attributes declared here."""

    #: the owned input partitions
    partitions: dict[int, PartitionState]
    #: seconds without traffic after which a partition's event time follows the wall clock
    idle_grace_s: float
    #: whether the last :meth:`sweep` stopped at its limit somewhere
    #: (sessions still due: the caller sweeps again after a batch's turn)
    sweep_left: bool
    #: a partition is swept after a batch once its event time moved this far
    #: since its last sweep (ms; 0: only the wall-clock timer sweeps)
    sweep_every_ms: int
    #: the published model versions to serve (``None``: the models stay untrained)
    feed: ModelFeed | None
    #: page visits go to the shared hotspot monitors, not each partition's own
    share_hotspots: bool
    #: the input topic's partition count (named in the closure marks)
    input_partitions: int
    #: the closure mark last sent per owned partition
    marked: dict[int, int | None]

    def closure_mark(self, part: PartitionState) -> int | None:
        """Partition ``part``'s closure mark (event time, ms): the lower of
        its last finished sweep (every session idle past the timeout then is
        closed) and its clock less the allowed lateness (a purchase or exit
        closes its session when it arrives, and it may arrive that late); 0
        before its first sweep since it was taken. ``None`` once it had no
        event for the idle grace since it was taken (it holds nothing back)."""
        if not part.clock.now:
            return None if self.clock() - part.wall_at_watermark > self.idle_grace_s else 0
        return max(0, min(part.swept_at, part.clock.now - self.config.allowed_lateness_ms))

    async def send_marks(self) -> int:
        """Produce the closure mark of each owned partition whose mark moved
        since it was last sent, after the examples it covers (never while an
        outbox waits for delivery: :meth:`deliver_pending` goes first).
        Returns the number sent."""
        await self.deliver_pending(self.partitions)
        produced_at = rfc3339(int(self.clock() * 1000))
        sent: dict[int, int | None] = {}
        records = []
        for p, part in self.partitions.items():
            if p in self.fenced:
                continue
            ts = self.closure_mark(part)
            if p in self.marked and self.marked[p] == ts:
                continue
            mark = Mark(p, max(self.input_partitions, p + 1), ts)
            value = json.dumps(mark_event(mark, self.config.source, produced_at))
            records.append(Record(f"mark-{p}".encode(), value.encode()))
            sent[p] = ts
        if records:
            await self._send("training", records)
            self.marked.update(sent)
        return len(records)

    async def checkpoint(self, partitions: Iterable[int] | None = None) -> None:
        """Save the local state (hotspot monitor, alert budget; ~20 KB) of the
        given (default: all owned) partitions. With hotspot scope
        ``partition`` their dirty session states are written first: a replay
        after a crash starts below those, and must not count their page
        visits twice in a restored monitor. With the shared monitors (the
        default) the local state is the alert budget, which a ``kill -9``
        leaves inexact anyway (see the README), and writing every dirty state
        at once would hold the batches up (~13,000 states at 3,000 events/s,
        ~60 µs each to encode and write: most of a second)."""
        wanted = list(self.partitions if partitions is None else partitions)
        if not self.share_hotspots:
            await self.flush(wanted)
        for p in wanted:
            part = self.partitions.get(p)
            if part is None or p in self.fenced:
                continue  # (a lost partition's local state is its new owner's)
            blob = part.detector.models.dumps_local()
            await self._call("save_blob", self.store.save_blob, checkpoint_name(p), blob)
            part.checkpointed_at = self.clock()

    def _adopt_models(self) -> None:
        """Serve the version the feed loaded since the last batch, if any."""
        loaded = self.feed.take() if self.feed is not None else None
        if loaded is None:
            return
        for part in self.partitions.values():
            part.detector.models.adopt(loaded.learned, loaded.tag)

    def sweeps_behind(self) -> list[int]:
        """The owned partitions whose event time moved :attr:`sweep_every_ms`
        or more since their last sweep (or that stopped at a slice's limit
        then): swept after the batch, so that in a backlog, where minutes of
        event time go by between two ticks of the wall-clock timer, sessions
        time out in the order of event time, as in the replay, instead of in
        bursts (the trainer then learns closes in the order they happened)."""
        every = self.sweep_every_ms
        if every <= 0:
            return []
        return [
            p
            for p, part in self.partitions.items()
            if p not in self.fenced and part.clock.now and part.clock.now - part.swept_at >= every
        ]

    async def sweep(self, limit: int = 1000, partitions: Iterable[int] | None = None) -> int:
        """Close sessions idle for longer than the timeout in the given
        (default: every owned) partitions, and check the quiet ones in
        evaluate or decide for hesitation
        (:meth:`~detectors.detector.Detector.tick`), at most ``limit`` of
        each per partition. Event time drives both; a partition with no
        traffic lets its watermark advance with the wall clock after
        ``idle_grace_s``. The worker sweeps one partition and one slice per
        call, so the batches waiting for the lock go in between; when a slice
        stopped at ``limit`` (:attr:`sweep_left`), the next call goes on
        where it stopped."""
        self._adopt_models()
        await self.deliver_pending(self.partitions)
        closed = 0
        self.sweep_left = False
        now = self.clock()
        wanted = None if partitions is None else set(partitions)
        for p, part in list(self.partitions.items()):
            if (wanted is not None and p not in wanted) or p in self.fenced:
                continue
            idle_s = now - part.wall_at_watermark
            watermark = part.clock.now
            if not watermark:
                continue
            if idle_s > self.idle_grace_s:  # no traffic: event time follows the wall clock
                watermark += int((idle_s - self.idle_grace_s) * 1000)
                part.clock.advance(watermark)
                part.wall_at_watermark = now - self.idle_grace_s
            done, left, finished = await self._sweep_partition(p, part, watermark, limit)
            closed += done
            if left:
                self.sweep_left = True
            if finished:  # (a slice that stops at its limit, or fails, leaves it behind)
                part.swept_at = watermark
        self._update_model_gauges()
        return closed

    async def _sweep_partition(
        self, p: int, part: PartitionState, watermark: int, limit: int
    ) -> tuple[int, bool, bool]:
        """One slice of :meth:`sweep` in partition ``p`` at ``watermark``:
        the quiet sessions' checks, then the timeouts. Returns the sessions
        closed, whether another slice should follow at once (either part
        stopped at ``limit`` having changed something: more may be due), and
        whether the partition is swept through ``watermark`` (neither part
        stopped at ``limit``)."""
        closed = 0
        timeout = self.config.session_timeout_ms
        left = await self._tick_quiet(p, part, watermark, limit)
        due = await self._call("due", self.store.due, p, watermark - timeout, limit)
        # a full slice may hide more due sessions further down the index
        finished = not left and len(due) < limit
        if not due:
            return 0, left, finished
        loaded = await self._load(due)
        hotspots: list[Alert] = []
        to_save: list[tuple[int, SessionState]] = []
        for sid in due:
            state = loaded.get(sid)
            if state is None or state.outcome is not None:
                continue
            if state.last_ts + timeout > watermark:
                continue  # touched since it was indexed
            hotspots += part.detector.close(state, "timeout", state.last_ts + timeout)
            self._take_examples(part.detector.examples, state, None)
            self.metrics.sessions_closed.labels("timeout").inc()
            to_save.append((p, state))
            closed += 1
        # expired states that vanished (TTL) or closed elsewhere: untrack them
        stale = [SessionState(sid, outcome="timeout") for sid in due if sid not in loaded]
        if len(due) >= limit and (to_save or stale):
            # more may be due; a slice that untracked nothing (every entry
            # touched since it was indexed, and not written yet) does not ask
            # for another one, nor count as swept through: the sessions due
            # behind those entries are not closed yet, and a closure mark
            # past them would make their examples late
            left = True
        await self._save(to_save + [(p, s) for s in stale])
        await self._deliver(to_save, hotspots)
        self._take_visits(part.detector, p)
        if not self.write_behind:  # else at the flush, with the batches' visits
            await self._send_visits()
        return closed, left, finished

    async def _tick_quiet(self, p: int, part: PartitionState, watermark: int, limit: int) -> bool:
        """Check the quiet sessions of partition ``p`` whose hesitation check
        is due at the partition's ``watermark`` (at most ``limit``; the
        store's check index, see :func:`~detectors.detector.next_check`),
        save them (which moves each to its next check, or out of the index)
        and deliver their alerts through the outbox, as a batch does. True
        when it stopped at ``limit`` (more may be due)."""
        sids = await self._call("checks_due", self.store.checks_due, p, watermark, limit)
        if not sids:
            return False
        loaded = await self._load(sids)
        checked: list[tuple[int, SessionState]] = []
        for state in loaded.values():
            alerts = part.detector.tick(state, watermark)
            self._take_alerts(alerts, state, [], None)
            # saved whether or not the check ran (a state the index had
            # wrong is indexed again as it is): nothing stays due forever
            checked.append((p, state))
        # due sessions whose state expired (TTL): a closed stub leaves the index
        checked += [(p, SessionState(sid, outcome="timeout")) for sid in sids if sid not in loaded]
        await self._save(checked)
        await self._deliver(checked, [])
        return len(sids) >= limit

    def _update_model_gauges(self) -> None:
        if not self.partitions:
            return
        m = self.metrics
        # every partition serves the same published version (or none yet)
        trust = next(iter(self.partitions.values())).detector.models.trust
        if trust.auc is not None:  # a model without enough outcomes has no AUC yet
            m.trust_auc.set(trust.auc)
        if trust.learned:
            m.trust_log_loss.set(trust.log_loss)
        m.trust_learned.set(trust.closed)
        for part in self.partitions.values():
            suppressed = part.detector.models.suppressed_by_budget
            if suppressed > part.suppressed_reported:
                m.budget_suppressed.inc(suppressed - part.suppressed_reported)
            part.suppressed_reported = suppressed
        if self.share_hotspots:
            return  # the shared monitors' gauges: stream.worker.hotspot_agent
        m.show_hotspots({n: part.detector.models.hotspots for n, part in self.partitions.items()})
