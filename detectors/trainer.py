"""The trainer's learning step, independent of Kafka and Redis.

:class:`Trainer` learns training records (:mod:`detectors.training`) into one
:class:`~detectors.models.DetectorModels`: the models of the whole deployment.
It learns the examples in the order their sessions closed
(:mod:`detectors.learning_order`), as the offline runner does: each example
is held until every input partition's closure mark
(:class:`~detectors.training.Mark`) has passed its close, so the models do not
depend on how fast each worker drained its partitions. Until the first mark
(workers of an earlier release send none) examples are learned in topic order.

It drops a record whose example id it learned recently or holds (a copy
re-produced by a worker's outbox recovery) and refuses a malformed one
without raising. Its position (the next offset), its recent ids, the marks,
the watermark and the offsets of the examples it holds are part of every
published version (:attr:`Trainer.position`), so a restarted trainer
resumes exactly: it reads the topic again from the first held example, holds
those again and skips the rest below its position. Learning is
deterministic, and the same records in the same order give the same models.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from detectors.config import DetectorConfig
from detectors.detector import OUTCOMES
from detectors.features import TRUST_FEATURES
from detectors.hesitation import HAZARD_FEATURES
from detectors.learning_order import HOLD_MAX, CloseOrder
from detectors.models import DetectorModels
from detectors.signals import SIGNALS
from detectors.training import Example, InvalidExample, Mark, read_training

#: Example ids remembered against duplicates. A copy is produced only by an
#: outbox recovery, seconds to minutes after the original, so this covers
#: hours of closes at the rates one trainer learns (~300 sessions/s).
RECENT_IDS = 20_000

#: What :meth:`Trainer.apply` can say of a record: an example ``learned`` at
#: once (no marks yet), ``held`` for its turn, ``late`` (it closed before the
#: watermark: learned at once, out of order), ``ahead`` (it closed further
#: ahead of the time it was produced than a client clock may be wrong,
#: ``max_clock_skew_ms``: no mark would pass it for that long, so it is
#: learned at once), a ``mark``, a ``duplicate`` or an ``invalid`` record.
TRAINER_STATUSES = ("learned", "held", "late", "ahead", "mark", "duplicate", "invalid")


@dataclass
class Position:
    """Where a trainer stands, beside its models: what a restart needs to go
    on exactly. ``marks`` maps input partitions to their closure marks (event
    time, ms; ``None``: no events), ``watermark`` is the close up to which
    held examples were released, ``held`` the training-topic offsets of the
    examples held, ``ready`` those of the examples due to be learned next,
    in the order they will be."""

    offset: int = 0
    recent_ids: list[str] = field(default_factory=list)
    marks: dict[int, int | None] = field(default_factory=dict)
    partitions: int = 0
    watermark: int | None = None
    held: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)


class Trainer:
    """Learn training records in close order, each once.

    What a record makes due to be learned (a release of held examples, an
    example learned at once) joins the *ready* queue, in order; the models
    learn it from the front: at once (the default), or, with ``lazy``, as
    the caller asks (:meth:`learn_ready`), so that the thousands of examples
    one mark may release do not hold a service's event loop. The sequence
    learned is the same either way.

    >>> from array import array
    >>> from detectors.training import Example, example_event, mark_event
    >>> import json
    >>> vector = array("f", [0.0] * len(TRUST_FEATURES))
    >>> def record(sid, closed):
    ...     e = Example(sid, 0, closed, closed, "exit", ((0, vector),), (), (0,) * len(SIGNALS))
    ...     return json.dumps(example_event(e, "test", "now")).encode()
    >>> def mark(ts):
    ...     return json.dumps(mark_event(Mark(0, 1, ts), "test", "now")).encode()
    >>> t = Trainer(DetectorConfig())
    >>> t.apply(0, record("a", 9)), t.apply(1, record("a", 9)), t.apply(2, b"{}")
    ('learned', 'duplicate', 'invalid')
    >>> t.apply(3, mark(10)), t.apply(4, record("c", 30)), t.apply(5, record("b", 20))
    ('mark', 'held', 'held')
    >>> t.apply(6, mark(25)), t.models.examples, t.held, t.offset, t.resume_offset
    ('mark', 2, 1, 7, 4)
    """

    def __init__(
        self,
        config: DetectorConfig,
        models: DetectorModels | None = None,
        *,
        position: Position | None = None,
        hold_max: int = HOLD_MAX,
        lazy: bool = False,
    ) -> None:
        pos = position if position is not None else Position()
        self.models = models if models is not None else DetectorModels(config)
        self.lazy = lazy
        #: how far ahead of its production an example may have closed (ms)
        self.max_ahead_ms = config.max_clock_skew_ms
        #: the next training-topic offset to read
        self.offset = pos.offset
        self._recent: deque[str] = deque(pos.recent_ids, maxlen=RECENT_IDS)
        self._seen = set(self._recent)
        self.order = CloseOrder(hold_max)
        self.order.watermark = pos.watermark
        #: each input partition's closure mark (``None``: it had no events)
        self.marks: dict[int, int | None] = dict(pos.marks)
        #: the input topic's partition count, from the marks (0: none seen yet)
        self.partitions = pos.partitions
        # examples due to be learned, in order, with their offsets
        self._ready: deque[tuple[Example, int]] = deque()
        # offsets below ``offset`` of examples held or ready when the position
        # was taken: read again, they are held again, or queued again in
        # their order once all of them are read
        self._reload = set(pos.held)
        self._reload_ready = list(pos.ready)
        self._reloaded: dict[int, Example] = {}
        #: the reason of the last invalid record
        self.last_error = ""
        #: examples held or due when the position was taken that were not
        #: there to read again (the topic's retention removed them)
        self.lost = 0

    @property
    def held(self) -> int:
        """Examples held for their turn."""
        return len(self.order)

    @property
    def ready(self) -> int:
        """Examples due to be learned (:meth:`learn_ready`)."""
        return len(self._ready) + len(self._reload_ready)

    @property
    def reloading(self) -> bool:
        """Whether examples due when the position was taken are still to be
        read again (nothing is learned until they are)."""
        return bool(self._reload_ready)

    @property
    def resume_offset(self) -> int:
        """Where to read from to go on exactly: the first example held or
        ready, or the position."""
        return min(
            (
                *self._reload,
                *self._reload_ready,
                *self.order.offsets(),
                *self._ready_offsets(),
                self.offset,
            )
        )

    def _ready_offsets(self) -> list[int]:
        return [offset for _, offset in self._ready]

    @property
    def position(self) -> Position:
        """What a restart needs besides the models (see :class:`Position`)."""
        return Position(
            self.offset,
            list(self._recent),
            dict(self.marks),
            self.partitions,
            self.order.watermark,
            sorted({*self._reload, *self.order.offsets()}),
            self._reload_ready + self._ready_offsets(),
        )

    def watermark(self) -> int | None:
        """The slowest input partition's mark (ms): every example closed at or
        before it is on the topic. ``None`` while a partition has none."""
        if not self.partitions:
            return None
        marks = []
        for p in range(self.partitions):
            if p not in self.marks:
                return None
            mark = self.marks[p]
            if mark is not None:
                marks.append(mark)
        return min(marks, default=None)

    def apply(self, offset: int, value: bytes | None) -> str:
        """Read the record at ``offset`` (one of :data:`TRAINER_STATUSES`).
        A record before :attr:`offset` was read already: ``duplicate``,
        unless it is an example held or ready when the position was taken
        (``held`` again: a restart counts those twice)."""
        status = self._apply(offset, value)
        if not self.lazy:
            self.learn_ready()
        return status

    def _apply(self, offset: int, value: bytes | None) -> str:
        if offset < self.offset:
            return self._read_again(offset, value)
        if self._reload or self._reload_ready:  # past the position: not there to read
            self.lost += len(self._reload)
            self._reload = set()
            self._end_reload()
        self.offset = offset + 1
        if value is None:
            self.last_error = "null value"
            return "invalid"
        try:
            record, produced = read_training(value)
            if isinstance(record, Mark):
                self._mark(record)
                return "mark"
            example = check(record)
        except InvalidExample as exc:
            self.last_error = str(exc)
            return "invalid"
        if example.id in self._seen or example.id in self.order:
            return "duplicate"
        if not self.partitions:
            self._queue(example, offset)
            return "learned"
        if produced is not None and example.closed_ts > produced + self.max_ahead_ms:
            # a client clock far ahead closed it: held, it would pin the
            # resume offset until the marks caught up (hours, or never)
            self._queue(example, offset)
            return "ahead"
        if self.order.is_late(example):
            self._queue(example, offset)
            return "late"
        self.order.hold(example, offset)
        for early, at in self.order.overflow():
            self._queue(early, at)
        return "held"

    def _read_again(self, offset: int, value: bytes | None) -> str:
        """A record below the position: an example held or ready then is
        taken again; anything else was dealt with."""
        if offset in self._reload:
            self._reload.discard(offset)
            example, _ = read_training(value or b"")
            assert isinstance(example, Example)  # it was held: a valid example
            self.order.hold(example, offset)
            return "held"
        if offset not in self._reload_ready or offset in self._reloaded:
            return "duplicate"
        example, _ = read_training(value or b"")
        assert isinstance(example, Example)
        self._reloaded[offset] = example
        if len(self._reloaded) == len(self._reload_ready):  # all read: in their order
            self._end_reload()
        return "held"

    def _end_reload(self) -> None:
        """The examples due when the position was taken go back to the front
        of the queue, in their order (their ids are among the recent ones
        already). Called when all were read again, or at the first record past
        the position: those not read then are gone from the topic (retention)
        and are counted in :attr:`lost`."""
        again = [(self._reloaded[o], o) for o in self._reload_ready if o in self._reloaded]
        self.lost += len(self._reload_ready) - len(again)
        self._ready.extendleft(reversed(again))
        self._reload_ready, self._reloaded = [], {}

    def _mark(self, mark: Mark) -> None:
        self.partitions = max(self.partitions, mark.partitions)
        old = self.marks.get(mark.partition)
        if mark.ts is None or old is None:
            self.marks[mark.partition] = mark.ts
        else:
            self.marks[mark.partition] = max(old, mark.ts)
        watermark = self.watermark()
        if watermark is not None:
            released = self.order.release(watermark)
        elif self.marks.keys() >= set(range(self.partitions)):
            # no partition had events: nothing closes before the held ones
            # any more, so they are learned (the watermark stays where it was)
            released = list(self.order.drain())
        else:
            released = []
        for example, offset in released:
            self._queue(example, offset)

    def _queue(self, example: Example, offset: int) -> None:
        """Due to be learned: from now on a copy is a duplicate (whether the
        models learned it yet or not, so slicing changes nothing)."""
        self._ready.append((example, offset))
        if len(self._recent) == self._recent.maxlen:
            self._seen.discard(self._recent[0])
        self._recent.append(example.id)
        self._seen.add(example.id)

    def learn_ready(self, limit: int | None = None) -> int:
        """Learn up to ``limit`` (default: all) of the examples due, in order;
        none while some are still to be read again after a restart. Returns
        the number learned."""
        if self._reload_ready:
            return 0
        learned = 0
        ready = self._ready
        while ready and (limit is None or learned < limit):
            example, _ = ready.popleft()
            self.models.learn(example)
            learned += 1
        return learned


def check(example: Example) -> Example:
    """``example`` when the models can learn it: a known outcome and vectors
    and counts of this version's lengths; else :class:`InvalidExample`
    (learning half of it would leave the models changed)."""
    if example.outcome not in OUTCOMES:
        raise InvalidExample(f"unknown outcome {example.outcome!r}")
    if any(len(v) != len(TRUST_FEATURES) for _, v in example.snapshots):
        raise InvalidExample(f"a snapshot is not {len(TRUST_FEATURES)} trust features long")
    if any(len(v) != len(HAZARD_FEATURES) for _, v in example.moments):
        raise InvalidExample(f"a moment is not {len(HAZARD_FEATURES)} hazard features long")
    if len(example.signal_counts) != len(SIGNALS):
        raise InvalidExample(f"signal_counts is not {len(SIGNALS)} counts long")
    return example
