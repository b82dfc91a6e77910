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
from detectors.training import Example, InvalidExample, Mark, training_record

#: Example ids remembered against duplicates. A copy is produced only by an
#: outbox recovery, seconds to minutes after the original, so this covers
#: hours of closes at the rates one trainer learns (~300 sessions/s).
RECENT_IDS = 20_000

#: What :meth:`Trainer.apply` can say of a record: an example ``learned`` at
#: once (no marks yet), ``held`` for its turn, ``late`` (it closed before the
#: watermark: learned at once, out of order), a ``mark``, a ``duplicate`` or
#: an ``invalid`` record.
TRAINER_STATUSES = ("learned", "held", "late", "mark", "duplicate", "invalid")


@dataclass
class Position:
    """Where a trainer stands, beside its models: what a restart needs to go
    on exactly. ``marks`` maps input partitions to their closure marks (event
    time, ms; ``None``: no events), ``watermark`` is the close up to which
    held examples were released, ``held`` the training-topic offsets of the
    examples held."""

    offset: int = 0
    recent_ids: list[str] = field(default_factory=list)
    marks: dict[int, int | None] = field(default_factory=dict)
    partitions: int = 0
    watermark: int | None = None
    held: list[int] = field(default_factory=list)


class Trainer:
    """Learn training records in close order, each once.

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
    ) -> None:
        pos = position if position is not None else Position()
        self.models = models if models is not None else DetectorModels(config)
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
        # offsets below ``offset`` of examples held when the position was
        # taken: read again, they are held again
        self._reload = set(pos.held)
        #: the reason of the last invalid record
        self.last_error = ""

    @property
    def held(self) -> int:
        """Examples held for their turn."""
        return len(self.order)

    @property
    def resume_offset(self) -> int:
        """Where to read from to go on exactly: the first held example, or
        the position."""
        return min((*self._reload, *self.order.offsets(), self.offset))

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
        unless it is an example held when the position was taken."""
        if offset < self.offset:
            if offset not in self._reload:
                return "duplicate"
            self._reload.discard(offset)
            reloaded = training_record(value or b"")
            assert isinstance(reloaded, Example)  # it was held: a valid example
            self.order.hold(reloaded, offset)
            return "held"
        self.offset = offset + 1
        if value is None:
            self.last_error = "null value"
            return "invalid"
        try:
            record = training_record(value)
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
            self._learn(example)
            return "learned"
        if self.order.is_late(example):
            self._learn(example)
            return "late"
        self.order.hold(example, offset)
        for early, _ in self.order.overflow():
            self._learn(early)
        return "held"

    def _mark(self, mark: Mark) -> None:
        self.partitions = max(self.partitions, mark.partitions)
        old = self.marks.get(mark.partition)
        if mark.ts is None or old is None:
            self.marks[mark.partition] = mark.ts
        else:
            self.marks[mark.partition] = max(old, mark.ts)
        watermark = self.watermark()
        if watermark is not None:
            for example, _ in self.order.release(watermark):
                self._learn(example)

    def _learn(self, example: Example) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._seen.discard(self._recent[0])
        self._recent.append(example.id)
        self._seen.add(example.id)
        self.models.learn(example)


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
