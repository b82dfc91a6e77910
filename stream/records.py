"""The records the shell reads and writes on Kafka, independent of any client.

A :class:`Message` is one consumed record, a :class:`Record` one to produce; a
:class:`Sink` is where the worker's alerts and dead letters go. The builders here
are the only places that decide the bytes and headers of an alert or a dead
letter, so the worker, the forwarder and the tests agree on them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from detectors.alerts import Alert, rfc3339
from detectors.events import Event, EventParser

Headers = list[tuple[str, bytes]]

#: 19 digits in a row: maybe an integer beyond 64 bits, which orjson reads as a
#: float (so a derived event id would change); such a payload takes the core's path.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
#: More brackets than this: maybe nested deeper than the core's parser (Python's
#: recursion limit) reads, while orjson reads 1023 levels; the core decides.
_MAX_BRACKETS = 200


def parse_event(parser: EventParser, value: bytes) -> Event:
    """``parser.parse(value)``, with the JSON read by orjson (about 3x the
    standard library's speed). Whatever orjson refuses (not UTF-8, not JSON, a
    byte-order mark, NaN, a lone surrogate, deep nesting) and every payload
    over the size cap goes through the core's parser, which names the reason,
    so the outcome is the core's, and so does any payload with 19 digits in a
    row (orjson would read an integer beyond 64 bits as a float) or with more
    than 200 brackets (orjson reads deeper nesting than the core). Raises only
    :class:`~detectors.events.InvalidEvent`.
    """
    if (
        len(value) <= parser.config.max_message_bytes
        and value.count(b"[") + value.count(b"{") <= _MAX_BRACKETS
        and not _LONG_DIGITS.search(value)
    ):
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(obj, dict):
                return parser.parse(obj)
    return parser.parse(value)


@dataclass(frozen=True, slots=True)
class Message:
    """One consumed Kafka record. ``value`` is ``None`` for a tombstone."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    @classmethod
    def of(cls, record: Any) -> Message:
        """A consumed aiokafka ``ConsumerRecord`` as a :class:`Message`."""
        return cls(
            record.value, record.key, record.topic, record.partition, record.offset,
            record.timestamp,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Record:
    """One record to produce (``value`` ``None``: a tombstone, kept as such
    when dead-lettered)."""

    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)


class Sink(Protocol):
    """Where alerts, dead letters, training examples and page visits go; ``send_*``
    return after the acks."""

    async def send_alerts(self, records: Sequence[Record]) -> None: ...

    async def send_dead_letters(self, records: Sequence[Record]) -> None: ...

    async def send_training(self, records: Sequence[Record]) -> None: ...

    async def send_visits(self, records: Sequence[Record]) -> None: ...

    async def alert_ids_since(self, since_ms: int) -> set[str]:
        """Ids of alerts on the alerts topic with a timestamp >= ``since_ms``."""
        ...


def dead_letter(message: Message, reason: str, detail: str, now: float) -> Record:
    """The original bytes (a null value stays null) with headers saying why
    and where from."""
    headers: Headers = [
        ("dlq.reason", reason.encode()),
        ("dlq.detail", detail[:200].encode("utf-8", "replace")),
        ("dlq.source.topic", message.topic.encode()),
        ("dlq.source.partition", str(message.partition).encode()),
        ("dlq.source.offset", str(message.offset).encode()),
        ("dlq.time", f"{now:.3f}".encode()),
    ]
    return Record(message.key, message.value, headers)


def alert_record(
    alert: Alert, source: str, produced_at: str, record_ms: int | None = None
) -> Record:
    """The alert as a Kafka record. ``producedat`` is when the worker decided
    it; ``recordtime`` the Kafka timestamp of the triggering input record, so
    ``producedat - recordtime`` is the time spent in the broker and worker."""
    event = alert.to_cloudevent(source)
    event["producedat"] = produced_at
    if record_ms is not None:
        event["recordtime"] = rfc3339(record_ms)
    return record_from_json(event, json.dumps(event, separators=(",", ":")))


def record_from_json(event: dict[str, Any], text: str) -> Record:
    """The Kafka record of an alert CloudEvent whose JSON text is ``text``:
    keyed by session id (hotspots: subject), with CloudEvents headers."""
    data = event["data"]
    assert isinstance(data, dict)
    key = str(data.get("session_id") or event["subject"]).encode()
    headers: Headers = [
        ("ce_id", str(event["id"]).encode()),
        ("ce_type", str(event["type"]).encode()),
        ("content-type", b"application/cloudevents+json"),
    ]
    return Record(key, text.encode(), headers)
