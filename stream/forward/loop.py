"""The forwarder's loop: alerts topic -> filters -> dedupe -> rate limit -> webhook.

:class:`ForwardLoop` is given everything it talks to: the Kafka consumer and
producer, the webhook poster, the dedupe store and the clocks (``app.py`` builds
the real ones; the unit tests pass fakes). Each message is handled once, in
partition order, and its offset is committed when it is fully handled
(``offsets.py``).

* Rebalances: a revocation commits what was handled and drops the held-back
  alerts of the revoked partitions. The rest of a batch fetched before a
  rebalance is abandoned, not handled: the consumer resumes a (re)assigned
  partition from its committed offset, so those messages, and the dropped
  held-back ones, are read again and never committed past unseen.
* Stopping (``stop`` set): the post in flight finishes and no retry starts, a
  pending digest gets one attempt, what was handled is committed (waiting at
  most ``final_commit_timeout_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stream.forward.dead_letters import ConsumedRecord, DeadLetters, Producer, position
from stream.forward.dedupe import DedupeStore
from stream.forward.delivery import Delivery, Poster, PostResult, deliver
from stream.forward.filters import default_classifier, page_type_of
from stream.forward.offsets import Commits, CommittingConsumer
from stream.forward.options import ForwardOptions
from stream.forward.parsing import InvalidAlert, parse_alert
from stream.forward.payloads import build_payload, digest_payload, digest_text, encode
from stream.forward.ratelimit import HoldBack, TokenBucket
from stream.forward.webhook_url import redact_url
from stream.metrics import ForwarderMetrics

log = logging.getLogger("disengage.forward")


class Consumer(CommittingConsumer, Protocol):
    """aiokafka's consumer as far as the loop goes (subscribed and started)."""

    async def getmany(
        self, timeout_ms: int = ..., max_records: int | None = ...
    ) -> Mapping[Any, Sequence[ConsumedRecord]]: ...


@dataclass
class _Held:
    """A held-back message: where it is, and its bytes for a dead letter."""

    part: Any
    message: ConsumedRecord


class ForwardLoop:
    """Forwards what ``consumer`` reads until stopped.

    ``clock`` returns Unix seconds (digest windows, dead-letter times, the
    last-success gauge, ``Retry-After`` dates); ``monotonic`` returns seconds
    for intervals (the token bucket, commits), ``clock`` when not given.
    ``classify`` infers page types from paths (default: the core's patterns).
    """

    def __init__(
        self,
        options: ForwardOptions,
        *,
        consumer: Consumer,
        producer: Producer,
        poster: Poster,
        dedupe: DedupeStore,
        clock: Callable[[], float],
        alerts_topic: str,
        monotonic: Callable[[], float] | None = None,
        classify: Callable[[str], str | None] | None = None,
        metrics: ForwarderMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.consumer = consumer
        self.poster = poster
        self.dedupe = dedupe
        self.clock = clock
        self.monotonic = monotonic or clock
        self.classify = classify or default_classifier()
        self.metrics = metrics or ForwarderMetrics()
        self.rng = rng or random.Random()
        self.webhook = redact_url(options.webhook_url)
        self.dead_letters = DeadLetters(
            producer,
            options.dlq_topic_for(alerts_topic),
            backoff=options.backoff,
            rng=self.rng,
            clock=clock,
        )
        self.bucket = TokenBucket(options.rate_limit, self.monotonic)
        self.held: HoldBack[_Held] = HoldBack(options.rate_limit.window_s, clock)
        self.commits = Commits(consumer, options.commit_interval_s, self.monotonic)
        #: incremented by every revocation and assignment: a batch fetched in
        #: an older generation is stale
        self.generation = 0

    # ------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop`` is set; then commit what was handled."""
        self.commits.restart_interval()  # the first commit after one interval
        try:
            await self._forward(stop)
        finally:
            try:
                await asyncio.wait_for(
                    self.commits.commit(force=True), self.options.final_commit_timeout_s
                )
            except Exception as exc:  # a Kafka outage must not keep us from exiting
                log.warning("last commit failed (%s: %s)", type(exc).__name__, exc)

    async def _forward(self, stop: asyncio.Event) -> None:
        consumer = self.consumer
        while not stop.is_set():
            batch = await consumer.getmany(
                timeout_ms=self.options.poll_timeout_ms,
                max_records=self.options.poll_max_records,
            )
            generation = self.generation
            for part, messages in batch.items():
                for message in messages:
                    if stop.is_set() or self.generation != generation:
                        break
                    if part not in consumer.assignment():
                        break
                    await self._handle(part, message, stop, generation)
                    await self._maybe_digest(stop)
                    await self._wait_for_room(stop)
                    await self.commits.commit()
                if stop.is_set() or self.generation != generation:
                    if self.generation != generation:
                        log.info("rebalanced: the rest of the batch is read again")
                    break
            await self._maybe_digest(stop)
            await self.commits.commit()
        if len(self.held):
            await self._send_digest(stop)  # stop is set: one attempt

    async def _wait_for_room(self, stop: asyncio.Event) -> None:
        """With ``held_max`` alerts held back, read nothing more until the
        digest of the window went out (or a revocation dropped them)."""
        held_max = self.options.held_max
        if len(self.held) < held_max:
            return
        log.warning(
            "%d alerts held back by the rate limit: pausing until the digest in %.0fs",
            len(self.held),
            self.held.remaining(),
        )
        while len(self.held) >= held_max and not stop.is_set() and not self.held.due():
            delay = max(0.0, min(self.options.pause_step_s, self.held.remaining()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        await self._maybe_digest(stop)

    # ------------------------------------------------------------ rebalances
    async def revoked(self, parts: Iterable[Any]) -> None:
        """Commit and forget partitions taken away by a rebalance."""
        gone = set(parts)
        if not gone:
            return
        await self.commits.commit(force=True, parts=gone)
        dropped = self.held.drop(lambda item: item.part in gone)
        if dropped:
            log.info("%d held-back alerts left to the new owner of their partitions", dropped)
        self.commits.forget(gone)
        self.generation += 1

    async def assigned(self, parts: Iterable[Any]) -> None:
        """Start afresh on (re)assigned partitions: the consumer reads them
        again from their committed offsets."""
        self.commits.forget(parts)
        self.generation += 1

    # --------------------------------------------------------------- handling
    async def _handle(
        self, part: Any, message: ConsumedRecord, stop: asyncio.Event, generation: int
    ) -> None:
        self.commits.start(part, message.offset)
        try:
            alert = parse_alert(message.value)
        except InvalidAlert as exc:
            if await self.dead_letters.write([message], exc.reason, exc.detail, None, stop):
                self._count("invalid")
                log.warning("invalid alert at %s: %s", position(message), exc)
                self.commits.done(part, message.offset)
            return
        alert_id = alert["id"]
        try:
            page_type = page_type_of(alert, self.classify)
            why = self.options.filters.rejects(alert, page_type)
        except Exception as exc:  # odd but parseable: dead-letter, never crash
            await self._unusable(part, message, alert_id, exc, stop)
            return
        if why is not None:
            self._count("filtered")
            log.debug("alert %s filtered out by %s", alert_id, why)
            self.commits.done(part, message.offset)
            return
        if self.held.holds(alert_id) or await self.dedupe.seen(alert_id):
            self._count("duplicate")
            log.debug("alert %s already delivered", alert_id)
            self.commits.done(part, message.offset)
            return
        if self.generation != generation:
            return  # rebalanced meanwhile: read again from the committed offset
        data = alert["data"]
        if not self.bucket.try_take():
            self.held.hold(alert_id, data["kind"], data["severity"], _Held(part, message))
            self._count("rate_limited")
            log.debug("alert %s held back by the rate limit", alert_id)
            return  # handled once a digest is accepted
        try:
            body = encode(
                build_payload(alert, page_type, self.options.fmt, self.options.include_session)
            )
        except Exception as exc:  # odd but parseable: dead-letter, never crash
            await self._unusable(part, message, alert_id, exc, stop)
            return
        result = await self._deliver(body, alert_id, stop)
        if result.outcome == "accepted":
            await self.dedupe.remember(alert_id)
            self._accepted()
            self._count("sent")
            log.info("sent alert %s (%s, %s)", alert_id, data["kind"], data["severity"])
            self.commits.done(part, message.offset)
        elif result.outcome == "rejected":
            reason, detail = f"http_{result.status}", _answer(result)
            if await self.dead_letters.write([message], reason, detail, alert_id, stop):
                self._count("dead_lettered")
                log.error(
                    "%s refused alert %s for good (%s): dead-lettered to %s",
                    self.webhook,
                    alert_id,
                    detail,
                    self.dead_letters.topic,
                )
                self.commits.done(part, message.offset)
        else:
            log.info("stopping: alert %s left for the next run", alert_id)

    async def _unusable(
        self,
        part: Any,
        message: ConsumedRecord,
        alert_id: str,
        exc: Exception,
        stop: asyncio.Event,
    ) -> None:
        """An alert no payload could be made of: to the forward DLQ."""
        detail = f"cannot build the payload: {type(exc).__name__}: {str(exc)[:200]}"
        if await self.dead_letters.write([message], "not_an_alert", detail, alert_id, stop):
            self._count("invalid")
            log.warning("unusable alert %s at %s: %s", alert_id, position(message), detail)
            self.commits.done(part, message.offset)

    # ---------------------------------------------------------------- digests
    async def _maybe_digest(self, stop: asyncio.Event) -> None:
        if self.held.due():
            await self._send_digest(stop)

    async def _send_digest(self, stop: asyncio.Event) -> None:
        digest, held = self.held.take()
        if not held:
            return
        limit = self.options.rate_limit
        text = digest_text(digest, limit)
        body = encode(digest_payload(digest, limit, self.options.fmt))
        result = await self._deliver(body, digest.key, stop)
        if result.outcome == "accepted":
            self._accepted()
            self.metrics.digests.inc()
            log.info("sent digest: %s", text)
            await self.dedupe.remember(*digest.ids)  # never posted one by one after a restart
            for item in held:
                self.commits.done(item.part, item.message.offset)
        elif result.outcome == "rejected":
            reason = f"http_{result.status}"
            detail = "rate-limit digest refused: " + _answer(result)
            messages = [item.message for item in held]
            if await self.dead_letters.write(messages, reason, detail, None, stop):
                log.error(
                    "%s refused a digest (%s): its alerts dead-lettered", self.webhook, detail
                )
                for item in held:
                    self.commits.done(item.part, item.message.offset)
        else:
            log.info("stopping: digest of %d alerts not sent; they stay uncommitted", len(held))

    # --------------------------------------------------------------- delivery
    async def _deliver(self, body: bytes, key: str, stop: asyncio.Event) -> Delivery:
        def on_retry(cause: str, delay: float, result: PostResult, attempt: int) -> None:
            self.metrics.retries.labels(cause).inc()
            answer = f"answered {result.status}" if result.status is not None else result.detail
            # attempts 1, 2, 4, 8, ... at WARNING: an outage is visible, not a flood
            level = logging.WARNING if attempt & (attempt - 1) == 0 else logging.DEBUG
            log.log(
                level,
                "%s %s for %s (attempt %d); retrying in %.2fs",
                self.webhook,
                answer or cause,
                key,
                attempt,
                delay,
            )

        return await deliver(
            self.poster,
            body,
            key,
            stop,
            backoff=self.options.backoff,
            rng=self.rng,
            clock=self.clock,
            retry_after_max_s=self.options.retry_after_max_s,
            on_retry=on_retry,
        )

    # ---------------------------------------------------------------- metrics
    def _count(self, result: str) -> None:
        self.metrics.alerts.labels(result).inc()

    def _accepted(self) -> None:
        self.metrics.last_success.set(self.clock())


def _answer(result: Delivery) -> str:
    return f"answered {result.status}" + (f": {result.detail[:150]}" if result.detail else "")
