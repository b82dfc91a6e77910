"""Posting with retries: backoff, Retry-After, verdicts, stopping; the webhook URL's secrets."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from stream.forward.delivery import (
    Backoff,
    PostResult,
    classify_status,
    deliver,
    parse_retry_after,
    retry_cause,
    retry_delay,
)
from stream.forward.options import option_default
from stream.forward.webhook_url import check_webhook_url, redact_url, scrub
from stream.metrics import FORWARD_RETRY_CAUSES
from tests.fakes import FakeClock, ScriptedPoster

RETRY_AFTER_MAX_S = option_default("retry_after_max_s")


# ----------------------------------------------------------------- retries
def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30.0
    rng = random.Random(7)
    for attempt in range(12):
        delays = [backoff.delay(attempt, rng) for _ in range(300)]
        top = backoff.ceiling(attempt)
        assert all(0.0 <= d <= top for d in delays)
        # full jitter: the whole range is used, not just the top
        assert min(delays) < 0.1 * top and max(delays) > 0.9 * top
    default = option_default("backoff")
    assert (default.base_s, default.cap_s) == (0.5, 30.0)
    same = [default.delay(3, random.Random(1)) for _ in range(2)]
    assert same[0] == same[1]  # seeded: reproducible
    with pytest.raises(ValueError):
        Backoff(base_s=0.0, cap_s=30.0)
    with pytest.raises(ValueError):
        Backoff(base_s=5.0, cap_s=1.0)


def test_retry_after_is_honoured_in_seconds_or_as_a_date() -> None:
    now = 1_767_261_600.0  # Thu, 01 Jan 2026 10:00:00 GMT
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("-5", now) == 0.0
    assert parse_retry_after("Thu, 01 Jan 2026 10:00:42 GMT", now) == 42.0
    assert parse_retry_after("Thu, 01 Jan 2026 09:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after("in a while", now) is None
    rng = random.Random(3)
    backoff = Backoff(0.5, 30.0)
    assert RETRY_AFTER_MAX_S == 600.0  # 10 minutes at most, by default
    assert retry_delay(0, "7", backoff, rng, now, RETRY_AFTER_MAX_S) == 7.0  # beyond 0.5
    assert retry_delay(9, "1", backoff, rng, now, RETRY_AFTER_MAX_S) == 1.0  # and below it
    assert retry_delay(0, "86400", backoff, rng, now, RETRY_AFTER_MAX_S) == 600.0
    assert 0.0 <= retry_delay(2, "soon", backoff, rng, now, RETRY_AFTER_MAX_S) <= 2.0  # backoff


def test_which_answers_are_retried() -> None:
    assert [classify_status(s) for s in (200, 201, 202, 204, 299)] == ["accepted"] * 5
    assert [classify_status(s) for s in (408, 429, 500, 502, 503, 504, 599)] == ["retry"] * 7
    permanent = (301, 302, 400, 401, 403, 404, 410, 413, 422, 100)
    assert [classify_status(s) for s in permanent] == ["permanent"] * len(permanent)
    causes = [retry_cause(None), retry_cause(None, True), retry_cause(408), retry_cause(503)]
    assert causes == ["connection", "timeout", "http_408", "http_5xx"]
    assert set(causes) <= set(FORWARD_RETRY_CAUSES)


def run_deliver(
    poster: ScriptedPoster,
    stop: asyncio.Event | None = None,
    max_after: float = 0.001,
    clock: FakeClock | None = None,
) -> tuple[Any, list[tuple[str, float]]]:
    retries: list[tuple[str, float]] = []

    async def go() -> Any:
        return await deliver(
            poster,
            b"{}",
            "key-1",
            stop or asyncio.Event(),
            backoff=Backoff(0.001, 0.002),
            rng=random.Random(1),
            clock=clock or FakeClock(),
            retry_after_max_s=max_after,
            on_retry=lambda cause, delay, _, n: retries.append((cause, delay)),
        )

    return asyncio.run(go()), retries


def test_delivery_retries_transient_failures_until_accepted() -> None:
    poster = ScriptedPoster(
        [
            PostResult(None, detail="ClientConnectorError"),
            PostResult(None, detail="timed out", timed_out=True),
            PostResult(503),
            PostResult(429, retry_after="30"),
            PostResult(408),
            PostResult(200, detail="ok"),
        ]
    )
    result, retries = run_deliver(poster)
    assert (result.outcome, result.status, result.attempts) == ("accepted", 200, 6)
    assert [c for c, _ in retries] == ["connection", "timeout", "http_5xx", "http_429", "http_408"]
    assert retries[3][1] == 0.001  # the Retry-After, capped by retry_after_max_s
    assert {key for _, key in poster.calls} == {"key-1"}  # the same key on every attempt


def test_delivery_gives_up_at_once_on_a_permanent_answer() -> None:
    result, retries = run_deliver(ScriptedPoster([PostResult(400, detail="invalid_payload")]))
    assert (result.outcome, result.status, result.detail) == ("rejected", 400, "invalid_payload")
    assert result.attempts == 1 and retries == []


def test_delivery_stops_retrying_when_asked_to_stop() -> None:
    async def go() -> tuple[Any, ScriptedPoster]:
        stop = asyncio.Event()
        # SIGTERM arrives during the third attempt
        poster = ScriptedPoster([PostResult(503)], stop, stop_after=3)
        result = await deliver(
            poster,
            b"{}",
            "k",
            stop,
            backoff=Backoff(0.001, 0.002),
            rng=random.Random(1),
            clock=FakeClock(),
            retry_after_max_s=RETRY_AFTER_MAX_S,
        )
        return result, poster

    result, poster = asyncio.run(go())
    assert result.outcome == "abandoned" and len(poster.calls) == 3

    stopped = asyncio.Event()
    stopped.set()  # already stopping: exactly one attempt
    once, _ = run_deliver(ScriptedPoster([PostResult(200)]), stopped)
    assert once.outcome == "accepted"
    failed = ScriptedPoster([PostResult(503)])
    gave_up, _ = run_deliver(failed, stopped)
    assert gave_up.outcome == "abandoned" and len(failed.calls) == 1


def test_a_stop_during_the_wait_ends_it_at_once() -> None:
    async def go() -> tuple[Any, float]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, stop.set)
        started = loop.time()
        poster = ScriptedPoster([PostResult(503, retry_after="5")])
        result = await deliver(
            poster,
            b"{}",
            "k",
            stop,
            backoff=Backoff(0.001, 0.002),
            rng=random.Random(1),
            clock=FakeClock(),
            retry_after_max_s=RETRY_AFTER_MAX_S,
        )
        return result, loop.time() - started

    result, took = asyncio.run(go())
    assert (result.outcome, result.status, result.attempts) == ("abandoned", 503, 1)
    assert took < 1.0  # not the 5 s the webhook asked for


def test_a_retry_after_date_is_read_on_the_injected_clock() -> None:
    now = 1_767_261_600.0  # Thu, 01 Jan 2026 10:00:00 GMT
    poster = ScriptedPoster(
        [PostResult(503, retry_after="Thu, 01 Jan 2026 10:00:00 GMT"), PostResult(200)]
    )
    result, retries = run_deliver(poster, max_after=1.0, clock=FakeClock(now - 0.004))
    assert result.outcome == "accepted"
    [(cause, delay)] = retries
    assert cause == "http_5xx" and delay == pytest.approx(0.004, abs=1e-6)


# --------------------------------------------------------- webhook secrets
def test_only_scheme_and_host_of_the_webhook_are_shown() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    assert redact_url(url) == "https://hooks.slack.com"
    assert redact_url("http://u:pw@[::1]:8080/x?token=s") == "http://[::1]:8080"
    message = f"Cannot connect to {url}"
    assert "SECRET" not in scrub(message, url)
    assert "SECRET" not in scrub("path /services/T000/B000/XXXXSECRET", url)
    assert check_webhook_url(url) == url
    for bad in ("hooks.slack.com/services/x", "ftp://h/x", "http:///nohost", "http://h:99999/"):
        with pytest.raises(ValueError) as info:
            check_webhook_url(bad)
        assert "services" not in str(info.value)
