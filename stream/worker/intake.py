"""The worker's input: the interactions topic, read a batch at a time.

Faust pays per message on its agent path: the fetcher thread hands every
record over with its own future, the stream iterator yields (``sleep(0)``)
per event, and acks are taken per event under a lock. ``take_events`` only
batches the code after all that. Measured on 2026-11-30 on the CI machine
(2 cores, broker and Redis on the same cores), the same
:class:`~stream.worker.pipeline.BatchProcessor` on the same 100,000-event
backlog, without the trainer, did 5,100 (batches of 500) to 6,500 (batches
of 1,000) events/s behind a plain aiokafka ``getmany`` loop, against a raw
consume, parse and produce loop of 14,000 in the same runs. Behind Faust's
agent, ``bench_worker`` (with the trainer) had measured 1,700-2,300.

So :class:`Intake` is the worker's consumer of the interactions topic: an
aiokafka consumer in the worker's consumer group, in the Faust app's event
loop, that hands whole fetches to the batch processor. Faust still runs the
rest of the worker (the shared hotspot agent on the page-visits topic, the
timers, the producer, the web pages) under the app id
``<consumer group>-pages``.

Delivery is unchanged: at least once, with idempotent effects. A batch's
offsets are committed only after :meth:`BatchProcessor.process` returned
(states saved, alerts acknowledged by the broker; with write-behind, below
the first record whose state is not written yet), every
:data:`COMMIT_INTERVAL_S`, when partitions are revoked and at stop. A failed
batch is retried in place and never skipped. A revocation waits for the
batch in flight (the batch lock), checkpoints the partitions' monitors and
commits what was processed before the group moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.kafka_io import client_options, stop_consumer
from stream.records import Message
from stream.retry import Stopped, backoff, retry_forever
from stream.settings import Settings
from stream.worker.faults import Fault
from stream.worker.stalls import BatchLock

log = logging.getLogger("disengage.worker")

#: Seconds between commits of the processed offsets (as Faust's
#: ``broker_commit_interval`` was); also on revocation and at stop.
COMMIT_INTERVAL_S = 1.0
#: Longest gap between two polls before the group drops the worker (ms): a
#: batch retried while Redis is down must not cost the worker its partitions
#: for an outage of minutes (Faust's default, 1,000 s).
MAX_POLL_INTERVAL_MS = 1_000_000

#: Longest wait at stop for the owned partitions' checkpoint, and then for
#: the final commit (seconds each): a stop must not hang on a dead Redis or broker.
LEAVE_TIMEOUT_S = 10.0
#: Longest a rebalance may take the revocation callback (the batch in
#: flight, the checkpoints, the commit) before the group moves on (ms; as
#: Faust's ``broker_rebalance_timeout``).
REBALANCE_TIMEOUT_MS = 60_000

Partitions = Callable[[list[int]], Awaitable[None]]


class Intake(ConsumerRebalanceListener):  # type: ignore[misc]
    """Reads ``settings.topic_interactions`` in the worker's consumer group.

    ``process(messages, generation)`` handles one batch (it retries its own
    failures and returns once the batch is done, or raises :class:`Stopped`
    at stop); it must drop the batch, under the lock, when
    :attr:`generation` is no longer ``generation`` (the partitions were
    revoked while it waited to try again);
    ``assigned`` and ``revoked`` get the partition numbers of a rebalance;
    ``lock`` is the batch lock the revocation takes before committing;
    ``settle`` (see :meth:`commit`), called under the lock before each
    commit, returns per partition the first offset whose state is not
    written yet (write-behind), or -1 for a partition another worker claimed:
    the commit stays below it. ``fenced`` returns the partitions found
    claimed by another worker (:class:`detectors.store.Fenced`): while one of
    them is still assigned here, the consumer rejoins the group once, so the
    rebalance settles who owns it (a worker the group dropped rejoins anyway;
    one whose claim was lost with Redis data claims it again).
    """

    def __init__(
        self,
        settings: Settings,
        process: Callable[[list[Message], int], Awaitable[None]],
        assigned: Partitions,
        revoked: Partitions,
        lock: BatchLock,
        *,
        settle: Callable[[], Awaitable[dict[int, int]]] | None = None,
        fenced: Callable[[], set[int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.settle = settle
        self.fenced = fenced
        #: a rejoin was asked for fenced partitions since the last assignment
        self._rejoin_asked = False
        self.process = process
        self.assigned = assigned
        self.revoked = revoked
        self.lock = lock
        self.clock = clock
        self.consumer: AIOKafkaConsumer | None = None
        #: a rebalance is under way (between a revocation and the next assignment)
        self.rebalancing = True
        #: next offset to read, per partition, of the batches processed
        self.processed: dict[TopicPartition, int] = {}
        #: the last offsets committed to the group, per partition
        self.committed: dict[TopicPartition, int] = {}
        #: revocations so far: a batch whose partitions were revoked while it
        #: ran does not record its offsets
        self.generation = 0
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        self.commits = Fault("Offset commits", log)
        self._last_commit = 0.0
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- run
    async def run(self) -> None:
        """Consume until :meth:`stop`; a start that fails is retried."""
        self._task = asyncio.current_task()
        try:
            try:
                consumer = await retry_forever(
                    self._started,
                    wait=backoff(2.0, 10.0),
                    on_failure=lambda exc, delay: log.warning(
                        "the input consumer did not start (%s): retried in %.0f s", exc, delay
                    ),
                    stop=self.stopping,
                )
            except Stopped:
                return
            self.consumer = consumer
            consumer.subscribe([self.settings.topic_interactions], listener=self)
            try:
                await self._consume(consumer)
            finally:
                await self._leave(consumer)
        finally:
            self.stopped.set()

    async def _started(self) -> AIOKafkaConsumer:
        """A started consumer in the worker's group (one that failed to start is closed)."""
        s = self.settings
        consumer = AIOKafkaConsumer(
            **client_options(s),
            group_id=s.consumer_group,
            client_id=f"{s.consumer_group}-intake",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.batch_size,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
        )
        try:
            await consumer.start()
        except BaseException:
            await stop_consumer(consumer)
            raise
        return consumer

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        timeout_ms = max(1, int(self.settings.batch_timeout_s * 1000))
        size = self.settings.batch_size
        while not self.stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=size)
            if fetched:
                messages = [Message.of(m) for records in fetched.values() for m in records]
                generation = self.generation
                try:
                    await self.process(messages, generation)
                except Stopped:
                    return  # stopping while the batch failed: not committed
                if generation == self.generation:
                    # (after a revocation in between, the next owner reads
                    # the batch again, and its effects are idempotent)
                    for tp, records in fetched.items():
                        self.processed[tp] = records[-1].offset + 1
            if self.clock() - self._last_commit >= COMMIT_INTERVAL_S:
                await self.commit()
            self._rejoin_if_fenced(consumer)

    def _rejoin_if_fenced(self, consumer: AIOKafkaConsumer) -> None:
        """Ask the group coordinator for a rebalance, once, when a partition
        assigned here was found claimed by another worker."""
        if self.fenced is None or self._rejoin_asked:
            return
        fenced = self.fenced()
        if not fenced:
            return
        lost = sorted(fenced & {tp.partition for tp in consumer.assignment()})
        if not lost:
            return
        self._rejoin_asked = True
        # aiokafka has no public call for it: request_rejoin() is what its
        # own coordinator calls on a failed heartbeat (aiokafka 0.14)
        coordinator = getattr(consumer, "_coordinator", None)
        request = getattr(coordinator, "request_rejoin", None)
        if request is None:
            log.error(
                "partition(s) %s are claimed by another worker, and this aiokafka cannot be "
                "asked to rejoin the group: they stay idle here until the next rebalance",
                lost,
            )
            return
        log.warning(
            "partition(s) %s are claimed by another worker while assigned here: rejoining the "
            "group so that the rebalance settles who owns them",
            lost,
        )
        request()

    async def _leave(self, consumer: AIOKafkaConsumer) -> None:
        """At stop: checkpoint the owned partitions and commit (as a
        revocation would; leaving the group calls no callback), then leave,
        so the next owner starts from both. Each wait is bounded."""
        try:
            parts = sorted(tp.partition for tp in consumer.assignment())
            if parts:
                await asyncio.wait_for(self._revoke_locked(parts), LEAVE_TIMEOUT_S)
            await asyncio.wait_for(self.commit(force=True), LEAVE_TIMEOUT_S)
        except Exception as exc:
            log.warning("the input's partitions were not checkpointed at stop: %s", exc)
        finally:
            self.consumer = None
            await stop_consumer(consumer)

    async def _revoke_locked(self, parts: list[int]) -> None:
        async with self.lock.hold("rebalance"):
            self.generation += 1
            await self.revoked(parts)

    async def stop(self, timeout_s: float) -> None:
        """Finish the batch in flight, checkpoint, commit and leave the group;
        after ``timeout_s`` seconds (a batch retrying against a dead Redis),
        the loop is cancelled, and what it had not committed is read again
        by the next owner."""
        self.stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.stopped.wait(), timeout_s)
        except TimeoutError:
            log.warning("the batch in flight did not end in %.0f s: cancelled", timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), 2 * LEAVE_TIMEOUT_S + 5)

    # -------------------------------------------------------------- commits
    async def commit(self, force: bool = False) -> None:
        """Commit the processed offsets not yet committed; a failure is
        logged (once per outage) and retried at the next interval."""
        consumer = self.consumer
        self._last_commit = self.clock()
        if consumer is None:
            return
        limits: dict[int, int] = {}
        if self.settle is not None:
            try:
                async with self.lock.hold("commit"):
                    limits = await self.settle()
            except Exception as exc:
                self.commits.failed(exc, "the state writes and page visits before a commit")
                return
        owned = consumer.assignment()
        due = {}
        for tp, processed in self.processed.items():
            # below the first record whose state is not written yet (write-behind)
            offset = min(processed, limits.get(tp.partition, processed))
            if tp in owned and offset > self.committed.get(tp, -1):
                due[tp] = offset
        if not due:
            return
        try:
            await consumer.commit(due)
        except Exception as exc:
            # the next owner reads these again: processing is idempotent
            what = "commit at a revocation or stop" if force else "periodic commit"
            self.commits.failed(exc, what)
            return
        self.commits.ok()
        self.committed.update(due)

    async def lag(self, timeout_s: float) -> dict[int, int]:
        """Records not processed yet per owned partition: from the offset
        after the last batch processed (else the committed one; the commit
        trails by up to ``DISENGAGE_STATE_FLUSH_S`` with write-behind) to the
        partitions' end offsets now (a request to the brokers, so a stuck
        batch shows as a growing lag)."""
        consumer = self.consumer
        if consumer is None or self.rebalancing:
            return {}
        tps = sorted(consumer.assignment())
        if not tps:
            return {}
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout_s)
        for tp in tps:
            if tp not in self.committed:
                committed = await asyncio.wait_for(consumer.committed(tp), timeout_s)
                self.committed[tp] = committed if committed is not None else 0
        return {
            tp.partition: max(0, ends[tp] - self.processed.get(tp, self.committed[tp]))
            for tp in tps
            if tp in ends
        }

    # ------------------------------------------------------------ rebalance
    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Before the group moves partitions: the batch in flight ends (the
        lock), the partitions are checkpointed, and the offsets committed.
        aiokafka still reports the old assignment here, so the commit counts."""
        self.rebalancing = True
        tps = list(revoked)
        parts = sorted(tp.partition for tp in tps)
        if not parts:
            return
        try:
            await self._revoke_locked(parts)
            await self.commit(force=True)
        finally:
            for tp in tps:
                self.processed.pop(tp, None)
                self.committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._rejoin_asked = False
        parts = sorted(tp.partition for tp in assigned)
        try:
            if parts:
                async with self.lock.hold("rebalance"):
                    await self.assigned(parts)
        finally:
            self.rebalancing = False


def pages_group(settings: Settings) -> str:
    """The consumer group (and Faust app id) of the page-visits agent."""
    return f"{settings.consumer_group}-pages"


async def carry_over_page_offsets(settings: Settings) -> dict[int, int]:
    """Upgrade from a release whose Faust app read both topics in
    ``DISENGAGE_CONSUMER_GROUP``: copy that group's committed page-visits
    offsets to :func:`pages_group` when it has none, so the hotspot monitors
    go on where they were instead of reading the topic's retention again.
    Returns the offsets copied (partition -> offset; empty when there was
    nothing to copy). Run before the Faust app starts, while no member is in
    the pages group."""
    topic = settings.topic_page_visits
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        new = await admin.list_consumer_group_offsets(pages_group(settings))
        if any(tp.topic == topic for tp in new):
            return {}
        old = await admin.list_consumer_group_offsets(settings.consumer_group)
    finally:
        await admin.close()
    offsets = {tp: m.offset for tp, m in old.items() if tp.topic == topic and m.offset >= 0}
    if not offsets:
        return {}
    consumer = AIOKafkaConsumer(
        **client_options(settings), group_id=pages_group(settings), enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await stop_consumer(consumer)
    log.info("page-visits offsets carried over to group %s", pages_group(settings))
    return {tp.partition: offset for tp, offset in offsets.items()}
