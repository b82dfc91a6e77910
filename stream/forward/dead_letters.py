"""The forward dead-letter topic: messages the webhook will never take, kept with why.

An alert the webhook refused for good (``dlq.reason`` = ``http_<status>``),
input that is not an alert (``not_json``, ``not_cloudevent``, ``not_an_alert``)
and an alert no payload could be built of (``not_an_alert``, the detail names
the error) are written here with the headers of :func:`stream.records.dead_letter`
plus ``dlq.alert.id``; one odd message never stops the forwarder. The topic is
``--dlq-topic``, by default ``<alerts topic>.forward.dlq`` (``options.DLQ_SUFFIX``).

Writes are retried while Kafka fails (with :func:`stream.retry.retry_forever`),
except when Kafka refuses the record itself (too large, say): that is logged
as an error with its position and skipped, since no retry can fix it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiokafka import errors as kafka_errors

from stream.forward.delivery import Backoff, retry_until_stopped
from stream.forward.parsing import alert_id_of
from stream.records import Message, Record, dead_letter
from stream.retry import Stopped

log = logging.getLogger("disengage.forward")

#: aiokafka errors of a dead-letter write that no retry can fix (the record
#: itself is refused): logged and skipped. Every other error is retried.
PERMANENT_DLQ_ERRORS: tuple[str, ...] = (
    "MessageSizeTooLargeError",
    "RecordTooLargeError",
    "RecordListTooLargeError",
    "CorruptRecordException",
)
_PERMANENT: tuple[type[BaseException], ...] = tuple(
    getattr(kafka_errors, name) for name in PERMANENT_DLQ_ERRORS if hasattr(kafka_errors, name)
)
# positions listed in the log line of a skipped write
_LOGGED_POSITIONS = 20


class ConsumedRecord(Protocol):
    """What the forwarder reads of a consumed record (aiokafka's ConsumerRecord)."""

    @property
    def value(self) -> bytes | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...


class Producer(Protocol):
    """aiokafka's producer as far as dead letters go: ``send`` returns once
    the record is queued, with an awaitable for its acknowledgement."""

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None = ..., headers: Any = ...
    ) -> Awaitable[Any]: ...


def position(message: ConsumedRecord) -> str:
    """``topic/partition@offset``, for logs."""
    return f"{message.topic}/{message.partition}@{message.offset}"


class DeadLetters:
    """Writes messages to the forward DLQ through ``producer``. ``clock``
    returns Unix seconds (the ``dlq.time`` header); retries wait ``backoff``
    drawn from ``rng``."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        *,
        backoff: Backoff,
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.backoff = backoff
        self.rng = rng
        self.clock = clock

    def records(
        self, messages: Sequence[ConsumedRecord], reason: str, detail: str, alert_id: str | None
    ) -> list[Record]:
        """The dead letters of ``messages``, with ``dlq.alert.id`` when known."""
        now = self.clock()
        out = []
        for m in messages:
            record = dead_letter(
                Message.of(m),
                reason,
                detail,
                now,
            )
            aid = alert_id or alert_id_of(m.value)
            headers = [*record.headers, *([("dlq.alert.id", aid.encode())] if aid else [])]
            out.append(Record(record.key, record.value, headers))
        return out

    async def write(
        self,
        messages: Sequence[ConsumedRecord],
        reason: str,
        detail: str,
        alert_id: str | None,
        stop: asyncio.Event,
    ) -> bool:
        """Write ``messages``, retrying while Kafka fails; False when stopping
        first (the messages stay unhandled). A record Kafka refuses for good
        (``PERMANENT_DLQ_ERRORS``) is logged and counts as written."""
        records = self.records(messages, reason, detail, alert_id)

        async def attempt() -> bool:
            try:
                acks = [
                    await self.producer.send(self.topic, r.value, key=r.key, headers=r.headers)
                    for r in records
                ]
                await asyncio.gather(*acks)
            except _PERMANENT as exc:
                log.error(
                    "dead-letter write to %s refused for good (%s: %s); skipped: %s",
                    self.topic,
                    type(exc).__name__,
                    exc,
                    ", ".join(position(m) for m in messages[:_LOGGED_POSITIONS])
                    + (
                        f" and {len(messages) - _LOGGED_POSITIONS} more"
                        if len(messages) > _LOGGED_POSITIONS
                        else ""
                    ),
                )
            except Exception:  # broker trouble: retry, never drop
                if stop.is_set():
                    return False
                raise
            return True

        def failed(exc: BaseException, _delay: float) -> None:
            log.warning("dead-letter write to %s failed (%s); retrying", self.topic, exc)

        try:
            return await retry_until_stopped(
                attempt,
                wait=self.backoff.wait(self.rng),
                on_failure=failed,
                stop=stop,
                retry_on=Exception,
            )
        except Stopped:
            return False
