"""The rate limit: token bucket, held-back alerts and their digests."""

from __future__ import annotations

import pytest

from stream.forward.payloads import digest_payload, digest_text
from stream.forward.ratelimit import Digest, HoldBack, RateLimit, TokenBucket, parse_rate_limit
from tests.fakes import FakeClock


@pytest.mark.parametrize(
    ("text", "count", "window"),
    [
        ("30/min", 30, 60.0),
        ("30", 30, 60.0),
        ("5/s", 5, 1.0),
        ("100/h", 100, 3600.0),
        (" 7 / minute ", 7, 60.0),
        ("0", 0, 60.0),
        ("12/M", 12, 60.0),
    ],
)
def test_rate_limits_are_read_per_window(text: str, count: int, window: float) -> None:
    assert parse_rate_limit(text) == RateLimit(count, window)


@pytest.mark.parametrize("text", ["", "fast", "-1/min", "3/day", "1.5/min"])
def test_bad_rate_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate_limit(text)


def test_token_bucket_allows_a_burst_of_n_then_refills_n_per_window() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(3, 60.0), clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    clock.now += 19.9  # 0.995 token: not yet
    assert not bucket.try_take()
    clock.now += 0.2  # 20.1 s for one token at 3/min
    assert bucket.try_take()
    assert not bucket.try_take()
    clock.now += 3600  # idle for an hour: the burst is still capped at N
    assert sum(bucket.try_take() for _ in range(10)) == 3


def test_token_bucket_zero_means_unlimited() -> None:
    bucket = TokenBucket(RateLimit(0, 60.0), FakeClock())
    assert all(bucket.try_take() for _ in range(10_000))


def test_held_back_alerts_become_one_digest_per_window() -> None:
    clock = FakeClock(36_000.0)  # 10:00:00 UTC
    held: HoldBack[int] = HoldBack(60.0, clock)
    assert not held.due()
    kinds = ["trust_loss"] * 8 + ["hesitation"] * 4
    for i, kind in enumerate(kinds):
        clock.now += 1
        held.hold(f"id{i}", kind, "high" if i % 3 == 0 else "medium", i)
    assert held.holds("id3") and not held.holds("id99")
    clock.now = 36_000.0 + 1 + 59.9
    assert not held.due()
    clock.now = 36_000.0 + 1 + 60.0
    assert held.due()
    digest, tokens = held.take()
    assert tokens == list(range(12))
    assert digest.count == 12
    assert digest.by_kind == {"trust_loss": 8, "hesitation": 4}
    assert digest.by_severity == {"high": 4, "medium": 8}
    assert digest_text(digest, RateLimit(30, 60.0)) == (
        "12 more alerts held back by the rate limit (30/min) between 10:00:01 and "
        "10:01:01 UTC: 8 trust_loss, 4 hesitation."
    )
    assert len(held) == 0 and not held.due() and not held.holds("id3")
    held.hold("next", "hesitation", "low", 99)  # a new window opens at the next one
    assert held.started == clock.now


def test_held_back_alerts_of_revoked_partitions_can_be_dropped() -> None:
    held: HoldBack[str] = HoldBack(60.0, FakeClock())
    held.hold("a", "trust_loss", "low", "p0")
    held.hold("b", "trust_loss", "low", "p1")
    assert held.drop(lambda part: part == "p0") == 1
    assert not held.holds("a") and held.holds("b")
    assert held.drop(lambda part: True) == 1
    assert held.started is None


def test_digest_payloads() -> None:
    ids = tuple(f"{i:032x}" for i in range(150))
    digest = Digest(150, {"trust_loss": 150}, {"medium": 150}, 36_000.0, 36_060.0, ids)
    one = Digest(1, {"hesitation": 1}, {"low": 1}, 36_000.0, 36_060.0, ids[:1])
    assert digest_text(one, RateLimit(5, 1.0)).startswith(
        "1 more alert held back by the rate limit (5/s)"
    )
    slack = digest_payload(digest, RateLimit(30, 60.0), "slack")
    assert slack["text"].startswith("150 more alerts held back by the rate limit (30/min)")
    assert slack["text"] in slack["blocks"][0]["text"]["text"]
    as_json = digest_payload(digest, RateLimit(30, 60.0), "json")
    assert as_json["type"] == "disengage.forward.digest"
    assert as_json["id"] == digest.key and as_json["id"].startswith("digest-")
    assert as_json["data"]["held_back"] == 150
    assert as_json["data"]["by_kind"] == {"trust_loss": 150}
    assert as_json["data"]["alert_ids"] == list(ids[:100])
    assert as_json["summary"] == slack["text"]
    shuffled = Digest(150, {}, {}, 0.0, 1.0, tuple(reversed(ids)))
    assert shuffled.key == digest.key  # the same alerts, the same idempotency key
