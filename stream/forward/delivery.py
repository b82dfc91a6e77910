"""Posting one body to the webhook until it is accepted or refused for good.

* Each post carries an idempotency key (the alert id; digests ``digest-<hash>``)
  in the ``Idempotency-Key`` header, the same on every attempt.
* 2xx is accepted. Timeouts, connection errors, 408, 429 and 5xx are retried
  forever with exponential backoff and full jitter (:class:`Backoff`); a
  ``Retry-After`` (seconds or HTTP date) is honoured instead, up to a maximum.
  Any other status (3xx, 4xx) is permanent: the caller dead-letters the alert.
* Stopping: the attempt in flight completes, no retry starts, and a stop during
  the wait ends it at once. A forwarder that is already stopping still makes one
  attempt (the last digest gets its chance).

The loop is :func:`stream.retry.retry_forever`, the shell's one retry helper;
this module adds what a webhook needs on top: the verdict on a status, the wait
read from ``Retry-After``, and the retry cause for the metrics.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import cached_property
from types import SimpleNamespace
from typing import Literal, Protocol, TypeVar, cast

from tenacity import RetryCallState
from tenacity.wait import wait_base

from stream.retry import Stopped, backoff, retry_forever

T = TypeVar("T")
Verdict = Literal["accepted", "retry", "permanent"]


def classify_status(status: int) -> Verdict:
    """2xx accepted; 408, 429 and 5xx retried; anything else permanent.

    >>> [classify_status(s) for s in (200, 204, 408, 429, 503, 400, 404, 301)]
    ['accepted', 'accepted', 'retry', 'retry', 'retry', 'permanent', 'permanent', 'permanent']
    """
    if 200 <= status < 300:
        return "accepted"
    if status in (408, 429) or 500 <= status < 600:
        return "retry"
    return "permanent"


def retry_cause(status: int | None, timed_out: bool = False) -> str:
    """The ``cause`` label of a retry (see ``stream.metrics.FORWARD_RETRY_CAUSES``)."""
    if status is None:
        return "timeout" if timed_out else "connection"
    if status in (408, 429):
        return f"http_{status}"
    return "http_5xx"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (seconds): retry ``n`` (0 for the
    first) waits uniformly in ``[0, min(cap_s, base_s * 2**n)]``. The
    exponential ceiling is :func:`stream.retry.backoff`'s; the draw uses the
    caller's ``rng``, so a seeded run is reproducible. Defaults:
    ``ForwardOptions.backoff``.

    >>> b = Backoff(0.5, 30.0)
    >>> [b.ceiling(n) for n in (0, 1, 2, 6, 1000)]
    [0.5, 1.0, 2.0, 30.0, 30.0]
    >>> 0.0 <= b.delay(3, random.Random(7)) <= 4.0
    True
    """

    base_s: float
    cap_s: float

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("backoff needs 0 < base <= cap")

    @cached_property
    def _exponential(self) -> wait_base:
        return backoff(self.base_s, self.cap_s)

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the wait before retry ``attempt`` (seconds)."""
        return float(self._exponential(_attempt_state(attempt + 1)))

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))

    def wait(self, rng: random.Random) -> Callable[[RetryCallState], float]:
        """This backoff as the ``wait`` of :func:`stream.retry.retry_forever`."""
        return lambda state: self.delay(state.attempt_number - 1, rng)


def _attempt_state(attempt_number: int) -> RetryCallState:
    # tenacity's wait strategies read nothing but the attempt number
    return cast(RetryCallState, SimpleNamespace(attempt_number=attempt_number))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an
    HTTP date (``now`` is Unix seconds); ``None`` when absent or unreadable.

    >>> parse_retry_after("7", 0.0), parse_retry_after("soon", 0.0)
    (7.0, None)
    >>> parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", 10.0)
    20.0
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN


def retry_delay(
    attempt: int,
    retry_after: str | None,
    backoff: Backoff,
    rng: random.Random,
    now: float,
    retry_after_max_s: float,
) -> float:
    """Seconds before retry ``attempt`` (0-based): the ``Retry-After`` when the
    answer had a readable one (at most ``retry_after_max_s``), else the
    backoff with full jitter."""
    asked = parse_retry_after(retry_after, now)
    if asked is not None:
        return min(asked, retry_after_max_s)
    return backoff.delay(attempt, rng)


@dataclass(frozen=True)
class PostResult:
    """One attempt: the HTTP status (``None`` when nothing was answered),
    ``Retry-After``, and a short detail (the start of the body, or the error)."""

    status: int | None
    retry_after: str | None = None
    detail: str = ""
    timed_out: bool = False


class Poster(Protocol):
    """One POST attempt of ``body``; never raises (failures are results)."""

    async def post(self, body: bytes, idempotency_key: str) -> PostResult: ...


@dataclass(frozen=True)
class Delivery:
    """How a delivery ended: ``accepted`` (2xx), ``rejected`` (permanent
    status), or ``abandoned`` (stopping before an answer worth keeping)."""

    outcome: Literal["accepted", "rejected", "abandoned"]
    status: int | None
    detail: str
    attempts: int


class _RetryablePost(Exception):
    """A post answered with a status worth retrying (or not answered)."""

    def __init__(self, result: PostResult) -> None:
        super().__init__(result.detail or f"answered {result.status}")
        self.result = result


async def retry_until_stopped(
    attempt: Callable[[], Awaitable[T]],
    *,
    wait: Callable[[RetryCallState], float],
    on_failure: Callable[[BaseException, float], None],
    stop: asyncio.Event,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
) -> T:
    """:func:`stream.retry.retry_forever`, except that when ``stop`` is already
    set ``attempt`` still runs once (retry_forever would not try at all): a
    stopping forwarder finishes its post in flight and sends its last digest.
    ``attempt`` must itself return rather than raise once ``stop`` is set.
    Raises :class:`stream.retry.Stopped` when stopped during a wait."""
    if stop.is_set():
        return await attempt()
    return await retry_forever(
        attempt, wait=wait, on_failure=on_failure, stop=stop, retry_on=retry_on
    )


async def deliver(
    poster: Poster,
    body: bytes,
    key: str,
    stop: asyncio.Event,
    *,
    backoff: Backoff,
    rng: random.Random,
    clock: Callable[[], float],
    retry_after_max_s: float,
    on_retry: Callable[[str, float, PostResult, int], None] | None = None,
) -> Delivery:
    """Post until the webhook accepts or refuses for good; retry forever on
    connection errors, timeouts, 408, 429 and 5xx. ``clock`` (Unix seconds)
    dates a ``Retry-After`` given as an HTTP date; ``on_retry(cause, delay_s,
    result, attempts)`` is called before each wait."""
    attempts = 0
    last = PostResult(None)

    async def attempt() -> Delivery:
        nonlocal attempts, last
        last = await poster.post(body, key)
        attempts += 1
        if last.status is not None:
            verdict = classify_status(last.status)
            if verdict == "accepted":
                return Delivery("accepted", last.status, last.detail, attempts)
            if verdict == "permanent":
                return Delivery("rejected", last.status, last.detail, attempts)
        if stop.is_set():
            return Delivery("abandoned", last.status, last.detail, attempts)
        raise _RetryablePost(last)

    def wait(state: RetryCallState) -> float:
        # the Retry-After of the answer that failed, else the backoff
        failure = state.outcome.exception() if state.outcome is not None else None
        assert isinstance(failure, _RetryablePost)
        asked = failure.result.retry_after
        return retry_delay(
            state.attempt_number - 1, asked, backoff, rng, clock(), retry_after_max_s
        )

    def failed(failure: BaseException, delay: float) -> None:
        assert isinstance(failure, _RetryablePost)
        result = failure.result
        if on_retry is not None:
            on_retry(retry_cause(result.status, result.timed_out), delay, result, attempts)

    try:
        return await retry_until_stopped(
            attempt, wait=wait, on_failure=failed, stop=stop, retry_on=_RetryablePost
        )
    except Stopped:
        return Delivery("abandoned", last.status, last.detail, attempts)
