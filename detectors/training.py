"""Labelled sessions: what the models learn from, and how it travels.

When a session closes, :class:`~detectors.detector.Detector` makes one
:class:`Example` of it: its trust snapshots (features only, no model output),
its hesitation moments, its signal counts and its outcome. Offline (replay,
the demo, evaluation) the detector learns the example at once. In the worker
the example goes through the session's outbox onto the training topic, in the
same batch as the session's alerts, and the trainer learns the examples of the
whole deployment in topic order (:meth:`~detectors.models.DetectorModels.learn`).
Both paths run the same learning code on the same examples.

An example's :attr:`Example.id` is deterministic (the session id and the
visit's start time), so the trainer drops a copy re-produced after a crash.

Examples are learned in the order their sessions closed, ``(closed_ts, id)``,
by the offline runner and by the trainer alike
(:mod:`detectors.learning_order`): River's learners depend on the order they
see examples in, and the order in which a deployment's workers produce them
depends on how fast each drains its partitions. Workers therefore interleave
:class:`Mark` records with the examples: input partition ``p`` has put every
example it closed at or before ``ts`` on the topic (before the mark), so the
trainer may learn everything the slowest partition has passed.
:meth:`Example.to_json` / :meth:`Example.from_json` are exact: the vectors are
float32 in the state and travel as their packed bytes (base64).
"""

from __future__ import annotations

import base64
import hashlib
import json
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Version of the JSON form; a reader refuses another.
EXAMPLE_FORMAT = 1
#: The CloudEvents ``type`` of a training record.
EXAMPLE_TYPE = "io.disengage.training.v1"
#: The CloudEvents ``type`` of a closure mark (:class:`Mark`).
MARK_TYPE = "io.disengage.training-mark.v1"

Vectors = tuple[tuple[int, "array[float]"], ...]


class InvalidExample(ValueError):
    """A training record that is not an :class:`Example` of this format."""


def _pack(vectors: Vectors) -> list[list[Any]]:
    return [[ts, base64.b64encode(v.tobytes()).decode()] for ts, v in vectors]


def _unpack(rows: Any) -> Vectors:
    out = []
    for ts, text in rows:
        vector = array("f")
        vector.frombytes(base64.b64decode(text))
        out.append((int(ts), vector))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Example:
    """One closed session, labelled.

    Times are epoch ms of event time. ``snapshots`` are trust feature
    vectors (:data:`~detectors.features.TRUST_FEATURES` order) taken while
    the session ran; ``moments`` are hesitation moments
    (:data:`~detectors.hesitation.HAZARD_FEATURES` order); ``signal_counts``
    follow :data:`~detectors.signals.SIGNALS`.

    >>> v = array("f", [0.5, 1.0])
    >>> e = Example("s1", 1000, 5000, 4000, "exit", ((2000, v),), (), (1, 0))
    >>> Example.from_json(e.to_json()) == e, e.converted, len(e.id)
    (True, False, 32)
    """

    sid: str
    start_ts: int  # the visit's first event (a reopened session id is a new visit)
    closed_ts: int
    last_ts: int  # the session's last event
    outcome: str  # one of detectors.detector.OUTCOMES
    snapshots: Vectors
    moments: Vectors
    signal_counts: tuple[int, ...]
    #: an alerted session's holdout group ("treated" or "control") and its
    #: alerts' slices ("kind/action"); ``None`` and empty when not alerted
    treatment: str | None = None
    alert_marks: tuple[str, ...] = ()
    #: for the console (:mod:`detectors.trust_map`): the trust marks
    #: (key, occurrences, sum of trust changes, scored steps) and the prefix
    #: (score, events, seconds) or ``None``; the models do not learn them
    trust_marks: tuple[tuple[str, int, float, int], ...] = ()
    prefix: tuple[float, int, float] | None = None

    @property
    def converted(self) -> bool:
        return self.outcome == "converted"

    @property
    def id(self) -> str:
        """Deterministic: 32 hex digits of SHA-256 over session id and visit start."""
        return visit_id(self.sid, self.start_ts)

    def to_json(self) -> dict[str, Any]:
        out = {
            "format": EXAMPLE_FORMAT,
            "sid": self.sid,
            "start_ts": self.start_ts,
            "closed_ts": self.closed_ts,
            "last_ts": self.last_ts,
            "outcome": self.outcome,
            "snapshots": _pack(self.snapshots),
            "moments": _pack(self.moments),
            "signal_counts": list(self.signal_counts),
        }
        if self.treatment is not None:  # alerted: the uplift's inputs
            out["treatment"] = self.treatment
            out["alert_marks"] = list(self.alert_marks)
        if self.trust_marks:
            out["trust_marks"] = [list(m) for m in self.trust_marks]
        if self.prefix is not None:
            out["prefix"] = list(self.prefix)
        return out

    @staticmethod
    def from_json(data: Any) -> Example:
        """Inverse of :meth:`to_json`; :class:`InvalidExample` for anything else."""
        if not isinstance(data, dict) or data.get("format") != EXAMPLE_FORMAT:
            raise InvalidExample(f"not a training example of format {EXAMPLE_FORMAT}")
        try:
            return Example(
                str(data["sid"]),
                int(data["start_ts"]),
                int(data["closed_ts"]),
                int(data["last_ts"]),
                str(data["outcome"]),
                _unpack(data["snapshots"]),
                _unpack(data["moments"]),
                tuple(int(c) for c in data["signal_counts"]),
                _treatment(data.get("treatment")),
                tuple(str(m) for m in data.get("alert_marks") or ()),
                tuple(
                    (str(k), int(n), float(d), int(c))
                    for k, n, d, c in data.get("trust_marks") or ()
                ),
                _prefix(data.get("prefix")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidExample(f"malformed training example: {exc}") from exc


def visit_id(sid: str, start_ts: int) -> str:
    """The id of a visit (a session id from its first event, epoch ms): 32
    hex digits of SHA-256 over both."""
    return hashlib.sha256(f"{sid}\x00{start_ts}".encode()).hexdigest()[:32]


def _prefix(value: Any) -> tuple[float, int, float] | None:
    if value is None:
        return None
    score, events, seconds = value
    return (float(score), int(events), float(seconds))


def _treatment(value: Any) -> str | None:
    if value is None:
        return None
    if value in ("treated", "control"):
        return str(value)
    raise ValueError(f"unknown treatment {value!r}")


def example_event(example: Example, source: str, produced_at: str) -> dict[str, Any]:
    """The example as a CloudEvent (JSON form), the value of a training record."""
    return {
        "specversion": "1.0",
        "id": example.id,
        "source": source,
        "type": EXAMPLE_TYPE,
        "subject": example.sid,
        "time": produced_at,
        "datacontenttype": "application/json",
        "data": example.to_json(),
    }


def example_from_event(value: bytes | str) -> Example:
    """The :class:`Example` in a training record's value."""
    record = training_record(value)
    if not isinstance(record, Example):
        raise InvalidExample(f"not a {EXAMPLE_TYPE} event")
    return record


@dataclass(frozen=True, slots=True)
class Mark:
    """A worker's promise about one input partition: every session of input
    partition ``partition`` (of ``partitions``) that closed at or before
    ``ts`` (event time, epoch ms) has its example on the training topic
    before this record. ``ts`` is ``None`` for a partition that had no events
    (it holds nothing back).

    The worker sends the lower of the partition's last finished expiry sweep
    and its clock less the allowed lateness (a purchase may arrive that late),
    so an example closed at or before ``ts`` arrives after the mark only when
    its event was later than the allowed lateness, or after a takeover
    (``late``: the trainer learns it at once).

    >>> m = Mark(3, 8, 1_700_000_000_000)
    >>> training_record(json.dumps(mark_event(m, "test", "now"))) == m
    True
    """

    partition: int
    partitions: int
    ts: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": EXAMPLE_FORMAT,
            "partition": self.partition,
            "partitions": self.partitions,
            "ts": self.ts,
        }

    @staticmethod
    def from_json(data: Any) -> Mark:
        """Inverse of :meth:`to_json`; :class:`InvalidExample` for anything else."""
        if not isinstance(data, dict) or data.get("format") != EXAMPLE_FORMAT:
            raise InvalidExample(f"not a closure mark of format {EXAMPLE_FORMAT}")
        try:
            partition, partitions = int(data["partition"]), int(data["partitions"])
            ts = None if data["ts"] is None else int(data["ts"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidExample(f"malformed closure mark: {exc}") from exc
        if not 0 <= partition < partitions:
            raise InvalidExample(f"partition {partition} is not one of {partitions}")
        return Mark(partition, partitions, ts)


def mark_event(mark: Mark, source: str, produced_at: str) -> dict[str, Any]:
    """The mark as a CloudEvent (JSON form), the value of a training record."""
    return {
        "specversion": "1.0",
        "id": f"mark-{mark.partition}-{mark.ts}",
        "source": source,
        "type": MARK_TYPE,
        "subject": str(mark.partition),
        "time": produced_at,
        "datacontenttype": "application/json",
        "data": mark.to_json(),
    }


def training_record(value: bytes | str) -> Example | Mark:
    """What a training record's value holds: an :class:`Example` or a
    :class:`Mark`; :class:`InvalidExample` for anything else."""
    return read_training(value)[0]


def read_training(value: bytes | str) -> tuple[Example | Mark, int | None]:
    """:func:`training_record`, and when the record was produced (epoch ms of
    its CloudEvent ``time``; ``None`` when absent or unreadable)."""
    try:
        event = json.loads(value)
    except ValueError as exc:
        raise InvalidExample(f"not JSON: {exc}") from exc
    kind = event.get("type") if isinstance(event, dict) else None
    if kind == EXAMPLE_TYPE:
        record: Example | Mark = Example.from_json(event.get("data"))
    elif kind == MARK_TYPE:
        record = Mark.from_json(event.get("data"))
    else:
        raise InvalidExample(f"not a {EXAMPLE_TYPE} or {MARK_TYPE} event")
    try:
        produced: int | None = _epoch_ms(event["time"])
    except (KeyError, TypeError, ValueError):
        produced = None
    return record, produced


def _epoch_ms(text: str) -> int:
    """Epoch ms of an RFC 3339 time (``ValueError`` otherwise)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no time zone")
    return int(moment.timestamp() * 1000)


def examples_of(values: Sequence[bytes | str | None]) -> list[Example]:
    """The examples among training records' values, in order (marks left out)."""
    out = []
    for value in values:
        record = training_record(value or b"")
        if isinstance(record, Example):
            out.append(record)
    return out


def same_examples(a: Sequence[Example], b: Sequence[Example]) -> bool:
    """Whether two sequences hold the same examples by id and content,
    regardless of order or duplicates."""
    return {e.id: e.to_json() for e in a} == {e.id: e.to_json() for e in b}
