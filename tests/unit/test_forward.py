"""The pure parts of ``disengage alerts forward``: no network, no Kafka, no
Redis; clocks and randomness are injected."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest

import stream.forward as forward
from detectors.alerts import ALERT_JSON_SCHEMA, Alert, Reason
from stream.alert_view import view_of
from stream.forward import (
    AlertFilter,
    Backoff,
    Digest,
    Forwarder,
    ForwardOptions,
    HoldBack,
    InvalidAlert,
    LruSet,
    OffsetTracker,
    PostResult,
    RateLimit,
    SeenIds,
    TokenBucket,
    build_payload,
    check_webhook_url,
    classify_status,
    dedupe_key,
    default_classifier,
    deliver,
    digest_payload,
    digest_text,
    encode,
    page_type_of,
    parse_alert,
    parse_rate_limit,
    parse_retry_after,
    redact_url,
    retry_cause,
    retry_delay,
    scrub,
)
from stream.metrics import FORWARD_RESULTS, FORWARD_RETRY_CAUSES, ForwarderMetrics
from tests.fakes import FakeClock

T0 = 1_767_261_660_600  # 2026-01-01T10:01:00.600Z
SOURCE = "urn:disengage:detector"
USER_HASH = "9ab370120223fa16"


def session_alert(
    *,
    kind: str = "trust_loss",
    severity: str = "medium",
    sid: str = "sess-42",
    page: str | None = "/checkout/step-2",
    stage: str | None = "decide",
    reasons: int = 2,
    episode: int = 1,
) -> dict[str, Any]:
    """A session alert CloudEvent, built by the core."""
    texts = [
        "3 clicks that did nothing this session (typical: 0.0)",
        "1 rage-click bursts (repeated fast clicks on one spot) this session (typical: 0.0)",
        "2 form errors this session (typical: 0.1)",
        "a fourth reason that must never be shown",
    ]
    return Alert(
        kind=kind,
        severity=severity,
        score=5.0,
        threshold=4.0,
        subject=sid,
        episode=episode,
        session_id=sid,
        user_hash=USER_HASH,
        stage=stage,
        page=page,
        reasons=tuple(Reason(f"s{i}", 1.0, 0.0, 1.0, texts[i]) for i in range(reasons)),
        suggested_action="open chat with a checkout specialist",
        trigger_event_id=f"{sid}-12",
        event_time=T0,
        model_version="trust-lr.v1+hst.v1+adwin.v1@2",
        rule="friction_pileup",
    ).to_cloudevent(SOURCE)


def hotspot_alert(key: str = "checkout/2", severity: str = "high") -> dict[str, Any]:
    """A hotspot alert CloudEvent shaped like ``Detector._hotspot_alert``'s."""
    text = f"46% of visits to {key} now end in friction or abandonment (before: 8%)"
    return Alert(
        kind="friction_hotspot",
        severity=severity,
        score=0.46,
        threshold=0.23,
        subject=f"hotspot/{key}",
        episode=1,
        session_id=None,
        user_hash=None,
        stage="decide",
        page=key,
        reasons=(Reason("problem_rate", 0.46, 0.08, 1.0, text),),
        suggested_action="page owners: check the page for broken elements",
        trigger_event_id="e-1",
        event_time=T0,
        model_version="trust-lr.v1+hst.v1+adwin.v1@2",
        rule="adwin_rate_increase",
        extra={"hotspot_key": key, "rate_before": 0.08, "rate_now": 0.46, "visits": 312},
    ).to_cloudevent(SOURCE)


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


CLASSIFY = default_classifier()


# ---------------------------------------------------------------- parsing
def test_a_real_alert_parses_unchanged() -> None:
    alert = session_alert()
    assert parse_alert(raw(alert)) == alert
    assert parse_alert(raw(hotspot_alert())) == hotspot_alert()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "not_json"),
        (b"", "not_json"),
        (b"not json", "not_json"),
        (b"\xff\xfe{}", "not_json"),
        (b"[" * 100_000, "not_json"),
        (b"[1, 2]", "not_cloudevent"),
        (raw({"specversion": "1.0", "source": "s", "type": "t"}), "not_cloudevent"),
        (raw({**session_alert(), "specversion": "0.3"}), "not_cloudevent"),
        (raw({**session_alert(), "id": "abc\r\nX-Evil: 1"}), "not_cloudevent"),
        (raw({**session_alert(), "id": "x" * 129}), "not_cloudevent"),
        (raw({**session_alert(), "data": "text"}), "not_an_alert"),
        (raw({**session_alert(), "type": "disengage.alert.hesitation"}), "not_an_alert"),
        (raw({**session_alert(), "data": {**session_alert()["data"], "severity": "x"}}), None),
    ],
)
def test_anything_that_is_not_an_alert_raises_one_exception_with_a_reason(
    value: bytes | None, reason: str | None
) -> None:
    with pytest.raises(InvalidAlert) as info:
        parse_alert(value)
    assert info.value.reason == (reason or "not_an_alert")
    assert info.value.detail


# -------------------------------------------------------------- page type
def test_page_type_comes_from_the_alert_then_the_hotspot_key_then_the_path() -> None:
    explicit = session_alert(page="/checkout/step-2")
    explicit["data"]["page_type"] = "pricing"
    assert page_type_of(explicit, CLASSIFY) == "pricing"
    assert page_type_of(hotspot_alert("checkout/2"), CLASSIFY) == "checkout"
    assert page_type_of(hotspot_alert("product"), CLASSIFY) == "product"
    no_key = hotspot_alert("cart/1")
    del no_key["data"]["hotspot_key"]
    assert page_type_of(no_key, CLASSIFY) == "cart"  # from the subject
    assert page_type_of(session_alert(page="/checkout/step-2"), CLASSIFY) == "checkout"
    assert page_type_of(session_alert(page="https://x.example/p/shoe?a=1"), CLASSIFY) == "product"
    assert page_type_of(session_alert(page="/nowhere-known"), CLASSIFY) is None
    assert page_type_of(session_alert(page=None), CLASSIFY) is None


# ---------------------------------------------------------------- filters
def test_filters_by_kind_severity_and_page_type() -> None:
    trust = session_alert(kind="trust_loss", severity="medium")
    low = session_alert(kind="hesitation", severity="low")
    hotspot = hotspot_alert(severity="high")

    only_session = AlertFilter(kinds=frozenset({"trust_loss", "hesitation"}))
    assert only_session.rejects(trust, "checkout") is None
    assert only_session.rejects(low, "checkout") is None
    assert only_session.rejects(hotspot, "checkout") == "kind"

    at_least_medium = AlertFilter(min_severity="medium")
    assert at_least_medium.rejects(low, None) == "severity"
    assert at_least_medium.rejects(trust, None) is None
    assert at_least_medium.rejects(hotspot, None) is None
    only_high = AlertFilter(severities=frozenset({"high"}))
    assert only_high.rejects(trust, None) == "severity"
    assert only_high.rejects(hotspot, None) is None
    both = AlertFilter(severities=frozenset({"low", "high"}), min_severity="medium")
    assert [both.rejects(a, None) for a in (low, trust, hotspot)] == ["severity", "severity", None]

    checkout = AlertFilter(page_types=frozenset({"checkout"}))
    assert checkout.rejects(trust, "checkout") is None
    assert checkout.rejects(trust, "product") == "page_type"
    assert checkout.rejects(trust, None) == "page_type"
    assert AlertFilter(page_types=frozenset({"unknown"})).rejects(trust, None) is None

    assert AlertFilter().rejects(low, None) is None


def test_filters_refuse_unknown_values() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        AlertFilter(kinds=frozenset({"rage"}))
    with pytest.raises(ValueError, match="severity"):
        AlertFilter(min_severity="critical")
    with pytest.raises(ValueError, match="page type"):
        AlertFilter(page_types=frozenset({"basket"}))


# --------------------------------------------------------------- payloads
def test_slack_message_says_what_happened_where_and_what_to_do() -> None:
    alert = session_alert(reasons=4)
    payload = build_payload(alert, "checkout", "slack", include_session=True)
    text = payload["text"]
    for part in (
        "trust_loss",
        "Trust loss",
        "severity medium",
        "/checkout/step-2",
        "page type checkout",
        "stage decide",
        "3 clicks that did nothing this session (typical: 0.0)",
        "1 rage-click bursts (repeated fast clicks on one spot)",
        "2 form errors this session",
        "Suggested action: open chat with a checkout specialist",
        f"Alert id: {alert['id']}",
        "Session: sess-42",
    ):
        assert part in text, part
    assert "a fourth reason" not in json.dumps(payload)  # at most three reasons
    assert USER_HASH not in json.dumps(payload)  # never the user
    # blocks: mrkdwn sections and a context line, carrying the same facts
    kinds = [b["type"] for b in payload["blocks"]]
    assert kinds[0] == "section" and kinds[-1] == "context"
    blocks = json.dumps(payload["blocks"])
    for part in ("/checkout/step-2", "decide", "2 form errors", "checkout specialist", alert["id"]):
        assert part in blocks, part
    for block in payload["blocks"]:
        texts = [block["text"]] if "text" in block else block.get("fields", block.get("elements"))
        assert all(t["type"] == "mrkdwn" for t in texts)


def test_slack_message_without_the_session_id() -> None:
    alert = session_alert(sid="sess-secretive")
    payload = build_payload(alert, "checkout", "slack", include_session=False)
    assert "sess-secretive" not in json.dumps(payload)
    assert alert["id"] in payload["text"]


def test_slack_message_escapes_what_the_page_path_could_smuggle_in() -> None:
    alert = session_alert(page="/p/<!channel>&<https://evil.example|click>")
    payload = build_payload(alert, None, "slack", include_session=True)
    dumped = json.dumps(payload)
    assert "<!channel>" not in dumped and "<https://evil" not in dumped
    assert "&lt;!channel&gt;&amp;&lt;https://evil.example|click&gt;" in payload["text"]


def test_slack_message_of_a_hotspot_has_its_key_and_rates() -> None:
    alert = hotspot_alert("checkout/2")
    text = build_payload(alert, "checkout", "slack", include_session=True)["text"]
    assert "friction_hotspot" in text
    assert "Hotspot: checkout/2 (page type checkout), stage decide" in text
    assert "Problem rate: 8% before, 46% now over 312 visits" in text
    assert "46% of visits to checkout/2 now end in friction" in text
    assert f"Alert id: {alert['id']}" in text
    assert "Session" not in text


def test_json_payload_is_the_cloudevent_without_the_user_plus_a_summary() -> None:
    alert = session_alert()
    before = json.dumps(alert)
    payload = build_payload(alert, "checkout", "json", include_session=True)
    assert json.dumps(alert) == before  # the input is not modified
    summary = payload.pop("summary")
    jsonschema.Draft202012Validator(ALERT_JSON_SCHEMA).validate(payload)
    assert payload["id"] == alert["id"]
    assert payload["data"]["user_hash"] is None
    assert payload["data"]["session_id"] == "sess-42"
    assert {k: v for k, v in payload["data"].items() if k != "user_hash"} == {
        k: v for k, v in alert["data"].items() if k != "user_hash"
    }
    assert summary.startswith("Trust loss (trust_loss, medium) on /checkout/step-2 (checkout)")
    assert "3 clicks that did nothing" in summary
    assert "Suggested action: open chat with a checkout specialist." in summary
    assert "\n" not in summary

    hidden = build_payload(alert, "checkout", "json", include_session=False)
    assert "sess-42" not in json.dumps(hidden)
    assert hidden["subject"] == "redacted"
    hidden.pop("summary")
    jsonschema.Draft202012Validator(ALERT_JSON_SCHEMA).validate(hidden)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        build_payload(session_alert(), None, "xml", include_session=True)


# ------------------------------------------------------------- rate limit


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
    same = [Backoff().delay(3, random.Random(1)) for _ in range(2)]
    assert same[0] == same[1]  # seeded: reproducible
    with pytest.raises(ValueError):
        Backoff(base_s=0.0)
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
    assert retry_delay(0, "7", backoff, rng, now) == 7.0  # beyond the backoff's 0.5
    assert retry_delay(9, "1", backoff, rng, now) == 1.0  # and below it
    assert retry_delay(0, "86400", backoff, rng, now, retry_after_max_s=600.0) == 600.0
    assert 0.0 <= retry_delay(2, "soon", backoff, rng, now) <= 2.0  # unreadable: backoff


def test_which_answers_are_retried() -> None:
    assert [classify_status(s) for s in (200, 201, 202, 204, 299)] == ["accepted"] * 5
    assert [classify_status(s) for s in (408, 429, 500, 502, 503, 504, 599)] == ["retry"] * 7
    permanent = (301, 302, 400, 401, 403, 404, 410, 413, 422, 100)
    assert [classify_status(s) for s in permanent] == ["permanent"] * len(permanent)
    causes = [retry_cause(None), retry_cause(None, True), retry_cause(408), retry_cause(503)]
    assert causes == ["connection", "timeout", "http_408", "http_5xx"]
    assert set(causes) <= set(FORWARD_RETRY_CAUSES)


class ScriptedPoster:
    """Answers from a script; records what was posted."""

    def __init__(self, answers: list[PostResult], stop: asyncio.Event | None = None) -> None:
        self.answers = answers
        self.calls: list[tuple[bytes, str]] = []
        self.stop_after: int | None = None
        self.stop = stop

    async def post(self, body: bytes, idempotency_key: str) -> PostResult:
        self.calls.append((body, idempotency_key))
        if self.stop is not None and len(self.calls) == self.stop_after:
            self.stop.set()
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def run_deliver(
    poster: ScriptedPoster, stop: asyncio.Event | None = None, max_after: float = 0.001
) -> tuple[Any, list[tuple[str, float]]]:
    retries: list[tuple[str, float]] = []

    async def go() -> Any:
        return await deliver(
            poster,
            b"{}",
            "key-1",
            stop or asyncio.Event(),
            Backoff(0.001, 0.002),
            random.Random(1),
            on_retry=lambda cause, delay, _, n: retries.append((cause, delay)),
            retry_after_max_s=max_after,
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
        poster = ScriptedPoster([PostResult(503)], stop)
        poster.stop_after = 3  # SIGTERM arrives during the third attempt
        result = await deliver(poster, b"{}", "k", stop, Backoff(0.001, 0.002), random.Random(1))
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


# ------------------------------------------------------------- bookkeeping
def test_offsets_are_committable_up_to_the_first_unhandled_message() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in (5, 6, 7):
        tracker.start("p0", offset)
    tracker.start("p1", 0)
    assert tracker.committable() == {}  # nothing handled: nothing to commit
    tracker.done("p0", 5)
    tracker.done("p0", 7)  # 6 is held back (waiting for a digest)
    assert tracker.committable() == {"p0": 6}
    tracker.done("p1", 0)
    tracker.done("p0", 6)
    assert tracker.committable() == {"p0": 8, "p1": 1}
    tracker.forget("p0")
    tracker.done("p0", 9)  # a message of a revoked partition finishing late
    assert tracker.committable() == {"p1": 1}


def test_lru_keeps_the_most_recent_ids() -> None:
    lru = LruSet(capacity=3)
    for item in "abcd":
        lru.add(item)
    assert "a" not in lru and all(i in lru for i in "bcd") and len(lru) == 3
    lru.add("b")  # refreshed
    lru.add("e")
    assert "b" in lru and "c" not in lru


class FakeRedis:
    """The two commands the dedupe uses, in memory; can be made to fail."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[str, int | None]] = {}
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("Connection refused")

    async def exists(self, key: str) -> int:
        self._check()
        return int(key in self.data)

    def pipeline(self, transaction: bool = True) -> FakeRedis._Pipeline:
        return FakeRedis._Pipeline(self)

    class _Pipeline:
        """Buffered SETs, applied in one call (one round trip)."""

        def __init__(self, redis: FakeRedis) -> None:
            self.redis = redis
            self.queued: list[tuple[str, str, int | None]] = []

        def set(self, key: str, value: str, ex: int | None = None) -> None:
            self.queued.append((key, value, ex))

        async def execute(self) -> list[bool]:
            self.redis._check()
            for key, value, ex in self.queued:
                self.redis.data[key] = (value, ex)
            return [True] * len(self.queued)


def test_delivered_ids_survive_a_restart_through_redis() -> None:
    redis = FakeRedis()

    async def go() -> tuple[bool, bool, bool]:
        first = SeenIds("fwd", redis)
        assert not await first.seen("a1")
        await first.remember("a1")
        restarted = SeenIds("fwd", redis)  # empty LRU
        other_group = SeenIds("other", redis)
        return await restarted.seen("a1"), await restarted.seen("a2"), await other_group.seen("a1")

    assert asyncio.run(go()) == (True, False, False)
    assert redis.data[dedupe_key("fwd", "a1")][1] == 7 * 24 * 3600
    assert dedupe_key("fwd", "a1") == "dg:fwd:{fwd}:a1"


def test_a_redis_outage_does_not_stop_forwarding() -> None:
    redis = FakeRedis()
    clock = FakeClock()
    errors: list[str] = []

    async def go() -> list[bool]:
        seen = SeenIds(
            "fwd", redis, on_error=lambda op, exc: errors.append(op), pause_s=5.0, clock=clock
        )
        await seen.remember("a1")
        redis.down = True
        out = [await seen.seen("a1")]  # the LRU still answers
        out.append(await seen.seen("a2"))  # Redis fails: assume not delivered
        calls = redis.calls
        out.append(await seen.seen("a3"))  # paused: Redis is not even asked
        await seen.remember("a3")
        assert redis.calls == calls
        clock.now += 5.0
        redis.down = False
        await seen.remember("a4")  # back: written again
        out.append(dedupe_key("fwd", "a4") in redis.data)
        return out

    assert asyncio.run(go()) == [True, False, False, True]
    assert errors == ["check"]


# ----------------------------------------------------------------- metrics
def test_forwarder_metrics_are_primed_with_closed_label_sets() -> None:
    metrics = ForwarderMetrics()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }
    for result in FORWARD_RESULTS:
        assert samples[("disengage_forward_alerts_total", (("result", result),))] == 0
    for cause in FORWARD_RETRY_CAUSES:
        assert samples[("disengage_forward_retries_total", (("cause", cause),))] == 0
    assert samples[("disengage_forward_last_success_timestamp_seconds", ())] == 0
    assert ("disengage_forward_post_seconds_bucket", (("le", "10.0"),)) in samples


def test_metrics_reference_lists_the_forwarder() -> None:
    from stream.metrics import markdown_table

    table = markdown_table()
    assert "| `disengage_forward_alerts_total` | counter | `result` |" in table
    assert "`disengage_forward_last_success_timestamp_seconds` | gauge" in table


# --------------------------------------------------------------------- CLI
def test_cli_needs_a_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.cli import main

    monkeypatch.delenv("DISENGAGE_WEBHOOK_URL", raising=False)
    with pytest.raises(SystemExit, match="--webhook URL"):
        main(["alerts", "forward"])
    monkeypatch.setenv("DISENGAGE_WEBHOOK_URL", "ftp://hooks.example/services/SECRET")
    with pytest.raises(SystemExit) as info:
        main(["alerts", "forward"])
    assert "ftp://hooks.example" in str(info.value) and "SECRET" not in str(info.value)


def test_cli_parses_the_forward_options() -> None:
    from stream.cli import build_parser

    args = build_parser().parse_args(
        [
            "alerts",
            "forward",
            "--webhook",
            "http://h/x",
            "--kind",
            "trust_loss",
            "--kind",
            "hesitation",
            "--min-severity",
            "medium",
            "--page-type",
            "checkout",
            "--rate-limit",
            "10/min",
            "--format",
            "json",
            "--no-redis",
            "--no-session-id",
        ]
    )
    assert args.kind == ["trust_loss", "hesitation"]
    assert (args.min_severity, args.page_type, args.rate_limit) == (
        "medium",
        ["checkout"],
        "10/min",
    )
    assert (args.format, args.no_redis, args.no_session_id) == ("json", True, True)
    assert (args.group, args.offset_reset, args.timeout) == ("disengage-forwarder", "earliest", 10)


# ------------------------------------------------ odd but parseable alerts
@pytest.mark.parametrize(
    "data",
    [
        {"reasons": {"text": "a dict, not a list"}},
        {"reasons": 7},
        {"reasons": "a string"},
        {"reasons": [1, None, {"text": 5}]},
        {"visits": float("nan")},
        {"visits": float("inf"), "rate_before": float("-inf"), "rate_now": float("nan")},
        {"visits": 10**400},
        {"visits": "__1e400__", "rate_now": 1.5},
        {"page": {"nested": [1, 2]}, "stage": 3, "suggested_action": ["x"]},
    ],
)
@pytest.mark.parametrize("fmt", ["slack", "json"])
def test_odd_but_parseable_alerts_still_make_a_strict_json_payload(
    data: dict[str, Any], fmt: str
) -> None:
    alert = hotspot_alert()
    alert["data"].update(data)
    text = json.dumps(alert).replace('"__1e400__"', "1e400")  # also NaN, Infinity
    parsed = parse_alert(text.encode())
    view = view_of(parsed, "checkout", True)
    for number in (view.rate_before, view.rate_now):
        assert number is None or number == number
    body = encode(build_payload(parsed, "checkout", fmt, True))
    json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in the payload"))


# ---------------------------------------------- the loop, with fakes for I/O
@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Msg:
    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: int = 0


class FakeConsumer:
    """One partition; like aiokafka, a re-assignment resumes at the committed
    offset. ``on_idle`` runs when there is nothing left to read."""

    def __init__(self, values: list[bytes]) -> None:
        self.tp = TP("alerts", 0)
        self.messages = [Msg(v, None, "alerts", 0, i) for i, v in enumerate(values)]
        self.position = 0
        self.committed: int | None = None
        self.commits: list[int] = []
        self.on_commit: Any = None
        self.on_idle: Any = None

    def assignment(self) -> set[TP]:
        return {self.tp}

    async def getmany(self, timeout_ms: int = 0, max_records: int = 100) -> dict[TP, list[Msg]]:
        await asyncio.sleep(0)
        batch = self.messages[self.position : self.position + max_records]
        self.position += len(batch)
        if not batch and self.on_idle is not None:
            self.on_idle()
        return {self.tp: batch} if batch else {}

    async def commit(self, offsets: dict[TP, int]) -> None:
        self.committed = offsets[self.tp]
        self.commits.append(self.committed)
        if self.on_commit is not None:
            self.on_commit(self.committed)

    def reassign(self) -> None:
        self.position = self.committed or 0


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes, dict[str, bytes]]] = field(default_factory=list)
    fail: Exception | None = None

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[None]:
        if self.fail is not None:
            raise self.fail
        self.sent.append((topic, value, dict(headers or [])))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class AcceptingPoster:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []

    async def post(self, body: bytes, idempotency_key: str) -> PostResult:
        self.posts.append((idempotency_key, json.loads(body)))
        return PostResult(200)

    def covered(self) -> set[str]:
        """Ids posted one by one or listed in a digest."""
        out = set()
        for key, payload in self.posts:
            if key.startswith("digest-"):
                out |= set(payload["data"]["alert_ids"])
            else:
                out.add(key)
        return out


class HookedRedis(FakeRedis):
    """FakeRedis that runs ``hooks[id]`` (once) when that alert is looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: dict[str, Any] = {}

    async def exists(self, key: str) -> int:
        for alert_id in list(self.hooks):
            if key.endswith(":" + alert_id):
                await self.hooks.pop(alert_id)()
        return await super().exists(key)


def looped(values: list[bytes], rate: str = "0") -> tuple[Forwarder, FakeConsumer]:
    options = ForwardOptions(
        "http://127.0.0.1:9/hook",
        fmt="json",
        rate_limit=parse_rate_limit(rate),
        commit_interval_s=0.0,
    )
    fwd = Forwarder(SimpleNamespace(detector=None, topic_alerts="alerts"), options)
    consumer = FakeConsumer(values)
    fwd.consumer = consumer
    fwd.producer = FakeProducer()
    fwd.poster = AcceptingPoster()
    fwd.seen = SeenIds("fwd", HookedRedis())
    clock = FakeClock(36_000.0)
    fwd.bucket = TokenBucket(options.rate_limit, clock)  # never refills
    fwd.held = HoldBack(options.rate_limit.window_s, clock)
    return fwd, consumer


def run_loop(fwd: Forwarder, consumer: FakeConsumer) -> None:
    """The loop until the topic is read, then the exit commit (as ``run``)."""

    async def go() -> None:
        stop = asyncio.Event()
        consumer.on_idle = stop.set
        await fwd._loop(stop)
        await fwd._commit(force=True)

    asyncio.run(go())


def no_commit_past_undelivered(
    fwd: Forwarder, consumer: FakeConsumer, ids: list[str], before: frozenset[str] = frozenset()
) -> None:
    """Fail any commit past an alert neither posted, digested nor delivered
    ``before``."""
    poster = fwd.poster
    assert isinstance(poster, AcceptingPoster)

    def check(offset: int) -> None:
        missing = [i for i in ids[:offset] if i not in poster.covered() | before]
        assert not missing, f"committed {offset} before {missing} were delivered"

    consumer.on_commit = check


def test_a_rebalance_mid_batch_never_commits_past_dropped_held_back_alerts() -> None:
    alerts = [session_alert(sid=f"s{i}") for i in range(4)]
    ids = [a["id"] for a in alerts]
    fwd, consumer = looped([raw(a) for a in alerts], rate="1/min")
    # 0 is sent, 1 held back, the partition is revoked and given back while 2
    # is handled; 3 was delivered by an earlier run, so it is done at once:
    # the old loop committed 4 there, past the dropped 1 and 2)
    no_commit_past_undelivered(fwd, consumer, ids, frozenset(ids[3:]))

    async def rebalance() -> None:  # while alert 2 is being handled
        await fwd.revoked([consumer.tp])  # commits 1, drops the held 1
        consumer.reassign()
        await fwd.assigned([consumer.tp])

    redis = fwd.seen.redis
    assert isinstance(redis, HookedRedis)
    redis.data[dedupe_key("fwd", ids[3])] = ("1", None)
    redis.hooks[ids[2]] = rebalance
    run_loop(fwd, consumer)
    assert consumer.commits[0] == 1 and consumer.committed == 4
    poster = fwd.poster
    assert isinstance(poster, AcceptingPoster)
    assert poster.posts[0][0] == ids[0]
    assert poster.covered() == set(ids[:3])
    digests = [p for k, p in poster.posts if k.startswith("digest-")]
    assert [d["data"]["alert_ids"] for d in digests] == [ids[1:3]]
    # the digested ids are recorded: after a crash they are not posted again
    assert all(dedupe_key("fwd", i) in redis.data for i in ids[1:3])
    assert all(i in fwd.seen.lru for i in ids)


def test_an_alert_no_payload_can_be_made_of_is_dead_lettered_and_the_loop_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alerts = [session_alert(sid=f"s{i}") for i in range(3)]
    ids = [a["id"] for a in alerts]
    odd = raw(alerts[0]).replace(b'"reasons": [', b'"visits": NaN, "reasons": {"x": [')
    odd = odd.replace(b'"suggested_action"', b'"_": 0}, "suggested_action"', 1)
    assert parse_alert(odd)["data"]["reasons"]["_"] == 0
    real_build = forward.build_payload

    def build(alert: Any, *args: Any) -> dict[str, Any]:
        if alert["id"] == ids[1]:
            raise TypeError("unsupported operand type(s)")
        return real_build(alert, *args)

    monkeypatch.setattr(forward, "build_payload", build)
    fwd, consumer = looped([odd, raw(alerts[1]), raw(alerts[2])])
    run_loop(fwd, consumer)
    poster = fwd.poster
    assert isinstance(poster, AcceptingPoster)
    assert [k for k, _ in poster.posts] == [ids[0], ids[2]]
    producer = fwd.producer
    assert isinstance(producer, FakeProducer)
    [(topic, value, headers)] = producer.sent
    assert topic == "alerts.forward.dlq" and value == raw(alerts[1])
    assert headers["dlq.reason"] == b"not_an_alert"
    assert b"TypeError: unsupported operand" in headers["dlq.detail"]
    assert headers["dlq.alert.id"] == ids[1].encode()
    assert consumer.committed == 3


def test_held_back_alerts_are_capped_by_pausing_until_the_digest() -> None:
    alerts = [session_alert(sid=f"s{i}") for i in range(5)]
    ids = [a["id"] for a in alerts]
    fwd, consumer = looped([raw(a) for a in alerts], rate="1/min")
    no_commit_past_undelivered(fwd, consumer, ids)
    fwd.max_held = 2
    fwd.pause_step_s = 0.001
    ticks = iter(range(10**6))
    fwd.held.clock = lambda: 36_000.0 + next(ticks)  # time passes while paused
    run_loop(fwd, consumer)
    poster = fwd.poster
    assert isinstance(poster, AcceptingPoster)
    digests = [p["data"]["alert_ids"] for k, p in poster.posts if k.startswith("digest-")]
    assert digests == [ids[1:3], ids[3:5]]
    assert consumer.committed == 5


def test_a_dead_letter_kafka_refuses_for_good_is_logged_and_skipped() -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    good = session_alert()
    fwd, consumer = looped([b"not json", raw(good)])
    producer = fwd.producer
    assert isinstance(producer, FakeProducer)
    producer.fail = MessageSizeTooLargeError()
    run_loop(fwd, consumer)
    poster = fwd.poster
    assert isinstance(poster, AcceptingPoster)
    assert [k for k, _ in poster.posts] == [good["id"]]
    assert consumer.committed == 2
