"""The forwarder's loop, built through its constructor with fakes for every I/O
(tests/fakes.py) and run until the scripted topic is read."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

import stream.forward.loop as loop_module
from stream.forward.delivery import Backoff, PostResult
from stream.forward.filters import AlertFilter
from stream.forward.loop import ForwardLoop
from stream.forward.options import ForwardOptions
from stream.forward.parsing import parse_alert
from stream.forward.payloads import build_payload
from stream.forward.ratelimit import parse_rate_limit
from stream.metrics import ForwarderMetrics
from tests.fakes import (
    FakeClock,
    FakeConsumer,
    FakeDedupe,
    FakeProducer,
    ScriptedPoster,
    TickingClock,
)
from tests.unit.forward.sample_alerts import raw, session_alert


@dataclass
class Rig:
    """A loop and the fakes it was given."""

    loop: ForwardLoop
    consumer: FakeConsumer
    producer: FakeProducer = field(default_factory=FakeProducer)
    poster: ScriptedPoster = field(default_factory=ScriptedPoster)
    dedupe: FakeDedupe = field(default_factory=FakeDedupe)


def rig(
    values: list[bytes | None],
    rate: str = "0",
    clock: FakeClock | None = None,
    poster: ScriptedPoster | None = None,
    **options: Any,
) -> Rig:
    """A loop over ``values`` posting JSON; the monotonic clock stands still,
    so the token bucket never refills."""
    consumer, producer = FakeConsumer(values), FakeProducer()
    poster, dedupe = poster or ScriptedPoster(), FakeDedupe()
    loop = ForwardLoop(
        ForwardOptions(
            "http://127.0.0.1:9/hook",
            fmt="json",
            rate_limit=parse_rate_limit(rate),
            commit_interval_s=0.0,
            **options,
        ),
        consumer=consumer,
        producer=producer,
        poster=poster,
        dedupe=dedupe,
        clock=clock or FakeClock(36_000.0),
        monotonic=FakeClock(36_000.0),
        alerts_topic="alerts",
        metrics=ForwarderMetrics(),
        rng=random.Random(7),
    )
    consumer.listener = loop
    return Rig(loop, consumer, producer, poster, dedupe)


def run(r: Rig) -> None:
    """The loop until the topic is read (then it stops and commits)."""

    async def go() -> None:
        stop = asyncio.Event()
        r.consumer.on_idle = stop.set
        await r.loop.run(stop)

    asyncio.run(go())


def no_commit_past_undelivered(
    r: Rig, ids: list[str], before: frozenset[str] = frozenset()
) -> None:
    """Fail any commit past an alert neither posted, digested nor delivered
    ``before``."""

    def check(offset: int) -> None:
        missing = [i for i in ids[:offset] if i not in r.poster.covered() | before]
        assert not missing, f"committed {offset} before {missing} were delivered"

    r.consumer.on_commit = check


def sample(r: Rig, name: str, **labels: str) -> float | None:
    return r.loop.metrics.registry.get_sample_value(name, labels)


def counted(r: Rig, result: str) -> float | None:
    return sample(r, "disengage_forward_alerts_total", result=result)


def test_alerts_are_posted_in_order_and_committed() -> None:
    alerts = [session_alert(sid=f"s{i}") for i in range(3)]
    r = rig([raw(a) for a in alerts])
    run(r)
    assert [k for k, _ in r.poster.posts] == [a["id"] for a in alerts]
    assert r.consumer.committed == 3
    assert r.dedupe.remembered == [(a["id"],) for a in alerts]
    assert counted(r, "sent") == 3
    # the injected clock
    assert sample(r, "disengage_forward_last_success_timestamp_seconds") == 36_000.0


def test_a_rebalance_mid_batch_never_commits_past_dropped_held_back_alerts() -> None:
    alerts = [session_alert(sid=f"s{i}") for i in range(4)]
    ids = [a["id"] for a in alerts]
    r = rig([raw(a) for a in alerts], rate="1/min")
    # 0 is sent, 1 held back, the partition is revoked and given back while 2
    # is handled; 3 was delivered by an earlier run, so it is done at once:
    # the old loop committed 4 there, past the dropped 1 and 2)
    no_commit_past_undelivered(r, ids, frozenset(ids[3:]))
    r.dedupe.delivered.add(ids[3])
    r.dedupe.hooks[ids[2]] = r.consumer.rebalance  # while alert 2 is being handled
    run(r)
    assert r.consumer.commits[0] == 1 and r.consumer.committed == 4
    assert r.poster.posts[0][0] == ids[0]
    assert r.poster.covered() == set(ids[:3])
    digests = [p for k, p in r.poster.posts if k.startswith("digest-")]
    assert [d["data"]["alert_ids"] for d in digests] == [ids[1:3]]
    # the digested ids are recorded (together): after a crash they are not posted again
    assert tuple(ids[1:3]) in r.dedupe.remembered
    assert r.dedupe.delivered == set(ids)


def test_an_alert_no_payload_can_be_made_of_is_dead_lettered_and_the_loop_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alerts = [session_alert(sid=f"s{i}") for i in range(3)]
    ids = [a["id"] for a in alerts]
    odd = raw(alerts[0]).replace(b'"reasons": [', b'"visits": NaN, "reasons": {"x": [')
    odd = odd.replace(b'"suggested_action"', b'"_": 0}, "suggested_action"', 1)
    assert parse_alert(odd)["data"]["reasons"]["_"] == 0
    real_build = build_payload

    def build(alert: Any, *args: Any) -> dict[str, Any]:
        if alert["id"] == ids[1]:
            raise TypeError("unsupported operand type(s)")
        return real_build(alert, *args)

    monkeypatch.setattr(loop_module, "build_payload", build)
    r = rig([odd, raw(alerts[1]), raw(alerts[2])])
    run(r)
    assert [k for k, _ in r.poster.posts] == [ids[0], ids[2]]
    [(topic, value, headers)] = r.producer.sent
    assert topic == "alerts.forward.dlq" and value == raw(alerts[1])
    assert headers["dlq.reason"] == b"not_an_alert"
    assert b"TypeError: unsupported operand" in headers["dlq.detail"]
    assert headers["dlq.alert.id"] == ids[1].encode()
    assert headers["dlq.time"] == b"36000.000"  # the injected clock
    assert r.consumer.committed == 3


def test_held_back_alerts_are_capped_by_pausing_until_the_digest() -> None:
    alerts = [session_alert(sid=f"s{i}") for i in range(5)]
    ids = [a["id"] for a in alerts]
    # the wall clock moves a second per read: time passes while the loop is paused
    r = rig(
        [raw(a) for a in alerts],
        rate="1/min",
        clock=TickingClock(36_000.0, step=1.0),
        held_max=2,
        pause_step_s=0.001,
    )
    no_commit_past_undelivered(r, ids)
    run(r)
    digests = [p["data"]["alert_ids"] for k, p in r.poster.posts if k.startswith("digest-")]
    assert digests == [ids[1:3], ids[3:5]]
    assert r.consumer.committed == 5


def test_what_is_not_an_alert_is_dead_lettered_filtered_alerts_are_skipped() -> None:
    hesitation = session_alert(kind="hesitation", sid="s1")
    trust = session_alert(kind="trust_loss", sid="s2")
    only_trust = AlertFilter(kinds=frozenset({"trust_loss"}))  # the hesitation is filtered
    r = rig([b"not json", None, raw(hesitation), raw(trust)], filters=only_trust)
    run(r)
    assert [k for k, _ in r.poster.posts] == [trust["id"]]
    assert [h["dlq.reason"] for _, _, h in r.producer.sent] == [b"not_json", b"not_json"]
    assert (counted(r, "invalid"), counted(r, "filtered"), counted(r, "sent")) == (2, 1, 1)
    assert r.consumer.committed == 4


def test_control_alerts_are_never_sent_unless_asked_for() -> None:
    treated = session_alert(sid="s1")
    control = session_alert(sid="s2", treatment="control")
    r = rig([raw(treated), raw(control)])
    run(r)
    assert [k for k, _ in r.poster.posts] == [treated["id"]]
    assert (counted(r, "filtered"), counted(r, "sent")) == (1, 1)
    assert r.consumer.committed == 2
    everyone = rig([raw(treated), raw(control)], filters=AlertFilter(include_control=True))
    run(everyone)
    assert [k for k, _ in everyone.poster.posts] == [treated["id"], control["id"]]


def test_a_duplicate_is_skipped_and_committed() -> None:
    alert = session_alert()
    r = rig([raw(alert), raw(alert)])
    run(r)
    assert [k for k, _ in r.poster.posts] == [alert["id"]]
    assert counted(r, "duplicate") == 1 and r.consumer.committed == 2


def test_a_refused_alert_is_dead_lettered_with_the_answer() -> None:
    alerts = [session_alert(sid="s1"), session_alert(sid="s2")]
    poster = ScriptedPoster([PostResult(400, detail="invalid_payload"), PostResult(200)])
    r = rig([raw(a) for a in alerts], poster=poster)
    run(r)
    [(topic, value, headers)] = r.producer.sent
    assert (topic, value) == ("alerts.forward.dlq", raw(alerts[0]))
    assert headers["dlq.reason"] == b"http_400"
    assert headers["dlq.detail"] == b"answered 400: invalid_payload"
    assert counted(r, "dead_lettered") == 1 and r.consumer.committed == 2


def test_a_dead_letter_kafka_refuses_for_good_is_logged_and_skipped() -> None:
    good = session_alert()
    r = rig([b"not json", raw(good)])
    r.producer.fail = MessageSizeTooLargeError()
    run(r)
    assert [k for k, _ in r.poster.posts] == [good["id"]]
    assert r.consumer.committed == 2


def test_a_dead_letter_write_is_retried_while_kafka_fails() -> None:
    r = rig([b"not json"], backoff=Backoff(0.001, 0.002))
    r.producer.fail_next = [KafkaConnectionError(), KafkaConnectionError()]
    run(r)
    assert [h["dlq.reason"] for _, _, h in r.producer.sent] == [b"not_json"]
    assert r.consumer.committed == 1


def test_a_stop_while_kafka_fails_leaves_the_dead_letter_uncommitted() -> None:
    r = rig([b"not json"])
    r.producer.fail = KafkaConnectionError()

    async def go() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        await r.loop.run(stop)

    asyncio.run(go())
    assert r.producer.sent == [] and r.consumer.commits == []
