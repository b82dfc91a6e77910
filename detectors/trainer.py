"""The trainer's learning step, independent of Kafka and Redis.

:class:`Trainer` learns training records (:mod:`detectors.training`) in topic
order into one :class:`~detectors.models.DetectorModels`: the models of the
whole deployment. It drops a record whose example id it learned recently (a
copy re-produced by a worker's outbox recovery) and refuses a malformed one
without raising. Its position (the next offset) and its recent ids are part
of every published version, so a restarted trainer resumes exactly: learning
is deterministic, and the same records in the same order give the same models.
"""

from __future__ import annotations

from collections import deque

from detectors.config import DetectorConfig
from detectors.detector import OUTCOMES
from detectors.features import TRUST_FEATURES
from detectors.hesitation import HAZARD_FEATURES
from detectors.models import DetectorModels
from detectors.signals import SIGNALS
from detectors.training import Example, InvalidExample, example_from_event

#: Example ids remembered against duplicates. A copy is produced only by an
#: outbox recovery, seconds to minutes after the original, so this covers
#: hours of closes at the rates one trainer learns (~300 sessions/s).
RECENT_IDS = 20_000

#: What :meth:`Trainer.apply` can say of a record.
TRAINER_STATUSES = ("learned", "duplicate", "invalid")


class Trainer:
    """Learn training records in order, each once.

    >>> from array import array
    >>> from detectors.training import Example, example_event
    >>> import json
    >>> vector = array("f", [0.0] * len(TRUST_FEATURES))
    >>> e = Example("s", 0, 9, 9, "exit", ((0, vector),), (), (0,) * len(SIGNALS))
    >>> value = json.dumps(example_event(e, "test", "now")).encode()
    >>> t = Trainer(DetectorConfig())
    >>> t.apply(0, value), t.apply(1, value), t.apply(2, b"{}"), t.offset
    ('learned', 'duplicate', 'invalid', 3)
    """

    def __init__(
        self,
        config: DetectorConfig,
        models: DetectorModels | None = None,
        *,
        offset: int = 0,
        recent_ids: list[str] | None = None,
    ) -> None:
        self.models = models if models is not None else DetectorModels(config)
        #: the next training-topic offset to learn
        self.offset = offset
        self._recent: deque[str] = deque(recent_ids or (), maxlen=RECENT_IDS)
        self._seen = set(self._recent)
        #: the reason of the last invalid record
        self.last_error = ""

    @property
    def recent_ids(self) -> list[str]:
        """The ids remembered, oldest first."""
        return list(self._recent)

    def apply(self, offset: int, value: bytes | None) -> str:
        """Learn the record at ``offset`` (one of :data:`TRAINER_STATUSES`).
        A record before :attr:`offset` was learned already: ``duplicate``."""
        if offset < self.offset:
            return "duplicate"
        self.offset = offset + 1
        if value is None:
            self.last_error = "null value"
            return "invalid"
        try:
            example = check(example_from_event(value))
        except InvalidExample as exc:
            self.last_error = str(exc)
            return "invalid"
        if example.id in self._seen:
            return "duplicate"
        if len(self._recent) == self._recent.maxlen:
            self._seen.discard(self._recent[0])
        self._recent.append(example.id)
        self._seen.add(example.id)
        self.models.learn(example)
        return "learned"


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
