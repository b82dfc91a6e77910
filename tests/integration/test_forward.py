"""``disengage alerts forward`` as a real subprocess, on the real broker and
Redis, posting to a real local HTTP server that can fail, hang or refuse.

The alerts are real: the offline detector's alerts over simulated traffic
(trust loss, hesitation and a friction hotspot), produced to the test's own
alerts topic.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from detectors.config import DetectorConfig
from detectors.offline.runner import replay_alerts
from detectors.simulation.simulator import SimConfig, Simulator

from .harness import Env, Worker, consume, metric_sum, produce

pytestmark = pytest.mark.integration

#: Fast retries, so the tests wait for behaviour, not for backoff.
FAST = ["--backoff-base", "0.05", "--backoff-cap", "0.2", "--commit-interval", "0.1"]


# ------------------------------------------------------------------ alerts
@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    """Real detector alerts of every kind and severity, as CloudEvents, in
    event order: at most 8 of each (kind, severity) over 3,000 simulated
    sessions. So many sessions because a hotspot needs the simulated incident
    under steady traffic (falling traffic at the end of a file raises none).
    No holdout: the forwarder sends every one (it skips control sessions'
    alerts by design, tests/unit/forward/test_loop.py)."""
    config = DetectorConfig(holdout_share=0.0)
    events = Simulator(SimConfig(sessions=3000, seed=SimConfig.seed), keep_truth=False).events()
    every = [alert.to_cloudevent(config.source) for alert in replay_alerts(events, config)]
    kept: Counter[tuple[str, str]] = Counter()
    out = []
    for alert in every:
        key = (alert["data"]["kind"], alert["data"]["severity"])
        if kept[key] < 8:
            kept[key] += 1
            out.append(alert)
    kinds = Counter(a["data"]["kind"] for a in out)
    assert len(out) >= 30 and set(kinds) == {"trust_loss", "hesitation", "friction_hotspot"}
    assert {a["data"]["severity"] for a in out} == {"low", "medium", "high"}
    assert any(a["data"]["user_hash"] for a in out)
    return out


def alert_records(alerts: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes]]:
    return [(a["subject"].encode(), json.dumps(a).encode()) for a in alerts]


# ----------------------------------------------------------------- webhook
@dataclass(frozen=True)
class Request:
    key: str | None
    body: bytes
    status: int  # 0: never answered (hung)


class Webhook:
    """A local HTTP server that records every POST and answers by mode:
    ``fail`` 503; ``ok`` 200, unless ``accept_limit`` 2xx answers were given
    already, then it hangs until released; ids in ``reject`` get 400."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.mode = "ok"
        self.accept_limit: int | None = None
        self.reject: set[str] = set()
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key")
                status = hook.decide(key, body)
                if status == 0:
                    hook.release.wait(30)
                    status = 503
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"invalid_payload" if status == 400 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/SECRETPART"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def decide(self, key: str | None, body: bytes) -> int:
        with self.lock:
            if key in self.reject:
                status = 400
            elif self.mode == "fail":
                status = 503
            elif self.accept_limit is not None and len(self.accepted()) >= self.accept_limit:
                status = 0
            else:
                status = 200
            self.requests.append(Request(key, body, status))
            return status

    def accepted(self) -> list[Request]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def accepted_ids(self) -> Counter[str | None]:
        with self.lock:
            return Counter(r.key for r in self.accepted())

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


# --------------------------------------------------------------- forwarder
class Forwarder(Worker):
    """A ``disengage alerts forward`` subprocess with metrics on its port."""

    def __init__(self, env: Env, url: str, *args: str, name: str = "fwd") -> None:
        super().__init__(env, name)
        self.args = ["alerts", "forward", "--webhook", url, "--group", group(env)]
        self.args += ["--metrics-port", str(self.port), *args]

    def count(self, result: str) -> float:
        return metric_sum(self.metrics(), "disengage_forward_alerts_total", result=result)


def group(env: Env) -> str:
    return f"fwd-{env.tag}"


def dlq_topic(env: Env) -> str:
    return f"{env.alerts}.forward.dlq"


def wait_until(check: Callable[[], bool], timeout: float, what: str, fwd: Forwarder) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert fwd.proc is not None
        if fwd.proc.poll() is not None:
            raise AssertionError(f"forwarder exited with {fwd.proc.returncode}:\n{fwd.tail()}")
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{fwd.tail()}")


# ------------------------------------------------------------------- kafka
async def _committed(env: Env) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=env.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group(env))
    finally:
        await admin.close()
    return {tp.partition: m.offset for tp, m in offsets.items() if m.offset >= 0}


async def _ends(env: Env) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=env.bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(env.alerts, p) for p in range(env.partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items() if offset > 0}


def committed(env: Env) -> dict[int, int]:
    """Partition -> committed offset of the forwarder's group."""
    return asyncio.run(_committed(env))


def end_offsets(env: Env) -> dict[int, int]:
    """Partition -> end offset of the alerts topic (non-empty partitions)."""
    return asyncio.run(_ends(env))


def headers(message: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers}


# ------------------------------------------------------------------- tests
def test_offsets_wait_for_the_webhook_then_every_alert_is_accepted_once(
    env: Env, webhook: Webhook, alerts: list[dict[str, Any]]
) -> None:
    asyncio.run(produce(env.bootstrap, env.alerts, alert_records(alerts)))
    ends = end_offsets(env)
    webhook.mode = "fail"
    fwd = Forwarder(env, webhook.url, "--rate-limit", "0", *FAST).start()

    wait_until(lambda: len(webhook.snapshot()) >= 8, 30, "retries against the 503s", fwd)
    time.sleep(0.5)  # five commit intervals
    failing = webhook.snapshot()
    assert committed(env) == {}, "offsets were committed while the webhook failed"
    assert {r.status for r in failing} == {503}
    assert len({r.key for r in failing}) == 1, "it must retry the first alert, not skip it"
    assert fwd.count("sent") == 0
    assert metric_sum(fwd.metrics(), "disengage_forward_retries_total", cause="http_5xx") >= 7
    # SIGTERM while failing: the post in flight ends, nothing is committed, exit 0
    started = time.monotonic()
    assert fwd.stop(timeout=15) == 0
    assert time.monotonic() - started < 5
    assert committed(env) == {}

    fwd = Forwarder(env, webhook.url, "--rate-limit", "0", *FAST, name="again").start()
    wait_until(lambda: len(webhook.snapshot()) > len(failing), 30, "the restart to retry", fwd)
    webhook.mode = "ok"
    ids = {a["id"] for a in alerts}
    wait_until(lambda: set(webhook.accepted_ids()) == ids, 30, "every alert accepted", fwd)
    wait_until(lambda: committed(env) == ends, 15, "offsets committed to the end", fwd)
    assert fwd.count("sent") == len(ids)
    assert fwd.stop() == 0
    assert webhook.accepted_ids() == Counter({i: 1 for i in ids})

    by_id = {a["id"]: a for a in alerts}
    for request in webhook.accepted():
        assert request.key is not None
        text = json.loads(request.body)["text"]
        data = by_id[request.key]["data"]
        assert request.key in text and data["kind"] in text and data["suggested_action"] in text
        if data["user_hash"]:
            assert data["user_hash"] not in request.body.decode()
    log = fwd.log_path.read_text()
    assert "SECRETPART" not in log and "/services/" not in log, "the webhook secret was logged"


def test_a_kill_after_posts_never_posts_an_alert_twice(
    env: Env, webhook: Webhook, alerts: list[dict[str, Any]]
) -> None:
    asyncio.run(produce(env.bootstrap, env.alerts, alert_records(alerts)))
    ends = end_offsets(env)
    webhook.accept_limit = 10  # then the webhook hangs
    slow_commits = ["--backoff-base", "0.05", "--backoff-cap", "0.2", "--commit-interval", "3600"]
    first = Forwarder(env, webhook.url, "--rate-limit", "0", *slow_commits, name="first").start()
    wait_until(
        lambda: any(r.status == 0 for r in webhook.snapshot()), 30, "10 posts, then a hang", first
    )
    assert len(webhook.accepted_ids()) == 10
    assert committed(env) == {}, "posted, but nothing committed yet: the case Redis covers"
    first.kill9()
    webhook.accept_limit = None
    webhook.release.set()

    second = Forwarder(env, webhook.url, "--rate-limit", "0", *FAST, name="second").start()
    ids = {a["id"] for a in alerts}
    wait_until(lambda: set(webhook.accepted_ids()) == ids, 30, "every alert accepted", second)
    wait_until(lambda: committed(env) == ends, 15, "offsets committed to the end", second)
    assert webhook.accepted_ids() == Counter({i: 1 for i in ids})
    assert second.count("duplicate") == 10  # known from Redis, not posted again
    assert second.count("sent") == len(ids) - 10
    assert second.stop() == 0


def test_a_refused_alert_is_dead_lettered_and_the_forwarder_moves_on(
    env: Env, webhook: Webhook, alerts: list[dict[str, Any]]
) -> None:
    refused = alerts[3]["id"]
    webhook.reject.add(refused)
    not_an_alert = {**alerts[0], "id": "f" * 32, "type": "com.example.other"}
    records = [
        *alert_records(alerts[:10]),
        (b"junk", b"this is not json"),
        (b"other", json.dumps(not_an_alert).encode()),
        *alert_records(alerts[10:]),
    ]
    asyncio.run(produce(env.bootstrap, env.alerts, records))
    ends = end_offsets(env)
    fwd = Forwarder(env, webhook.url, "--rate-limit", "0", "--format", "json", *FAST).start()

    others = {a["id"] for a in alerts} - {refused}
    wait_until(lambda: set(webhook.accepted_ids()) == others, 30, "the other alerts", fwd)
    wait_until(lambda: committed(env) == ends, 15, "offsets committed to the end", fwd)
    dead = asyncio.run(
        consume(env.bootstrap, dlq_topic(env), until=lambda m: len(m) >= 3, timeout=20)
    )
    by_reason = {headers(m)["dlq.reason"]: m for m in dead}
    assert set(by_reason) == {"http_400", "not_json", "not_an_alert"}
    http = headers(by_reason["http_400"])
    assert http["dlq.alert.id"] == refused
    assert "invalid_payload" in http["dlq.detail"]
    assert http["dlq.source.topic"] == env.alerts
    assert json.loads(by_reason["http_400"].value)["id"] == refused  # the original alert
    assert by_reason["not_json"].value == b"this is not json"
    assert [r.key for r in webhook.snapshot()].count(refused) == 1, "a 400 is not retried"
    assert (fwd.count("dead_lettered"), fwd.count("invalid")) == (1, 2)
    assert fwd.count("sent") == len(others)
    for request in webhook.accepted():
        payload = json.loads(request.body)
        assert payload["id"] == request.key and payload["data"]["user_hash"] is None
        assert payload["summary"]
    assert fwd.stop() == 0


def test_filters_and_the_rate_limit_end_to_end(
    env: Env, webhook: Webhook, alerts: list[dict[str, Any]]
) -> None:
    asyncio.run(produce(env.bootstrap, env.alerts, alert_records(alerts)))
    ends = end_offsets(env)
    args = ["--kind", "trust_loss", "--kind", "hesitation", "--min-severity", "medium"]
    fwd = Forwarder(
        env, webhook.url, *args, "--rate-limit", "5/s", "--format", "json", *FAST
    ).start()
    wanted = {
        a["id"]
        for a in alerts
        if a["data"]["kind"] != "friction_hotspot" and a["data"]["severity"] != "low"
    }
    assert 0 < len(wanted) < len(alerts)

    def digests() -> list[dict[str, Any]]:
        return [
            json.loads(r.body)
            for r in webhook.accepted()
            if r.key is not None and r.key.startswith("digest-")
        ]

    def covered() -> set[str]:
        posted = {k for k in webhook.accepted_ids() if k and not k.startswith("digest-")}
        return posted | {i for d in digests() for i in d["data"]["alert_ids"]}

    wait_until(lambda: covered() == wanted, 30, "every wanted alert posted or digested", fwd)
    wait_until(lambda: committed(env) == ends, 15, "offsets committed to the end", fwd)
    posted = [k for k in webhook.accepted_ids() if k and not k.startswith("digest-")]
    held = [i for d in digests() for i in d["data"]["alert_ids"]]
    assert len(posted) + len(held) == len(wanted), "an alert was both posted and digested"
    assert held, "the 5/s limit should have held some alerts back"
    assert all(webhook.accepted_ids()[k] == 1 for k in posted)
    for d in digests():
        assert d["type"] == "disengage.forward.digest"
        assert d["data"]["held_back"] == len(d["data"]["alert_ids"])
        assert "held back by the rate limit (5/s)" in d["summary"]
    assert fwd.count("filtered") == len(alerts) - len(wanted)
    assert fwd.count("rate_limited") == len(held)
    assert fwd.count("sent") == len(posted)
    assert fwd.stop() == 0


def test_odd_but_parseable_alerts_never_stop_the_forwarder(
    env: Env, webhook: Webhook, alerts: list[dict[str, Any]]
) -> None:
    """Alerts with a reasons object or number, NaN/Infinity/1e400 numbers
    (``json.loads`` takes them) or deep nesting once crashed the forwarder
    for good; they are delivered as strict JSON and the next alerts too."""
    changes: list[dict[str, Any]] = [
        {"reasons": {"text": "an object, not a list"}},
        {"reasons": 7},
        {"visits": "__NaN__", "rate_before": "__Infinity__", "rate_now": "__1e400__"},
        {"visits": "__1e400__", "page": {"not": "a string"}, "stage": 3},
        {"deep": "__DEEP__"},
    ]
    records: list[tuple[bytes | None, bytes]] = []
    for alert, change in zip(alerts, changes, strict=False):
        odd = json.loads(json.dumps(alert))
        odd["data"].update(change)
        text = json.dumps(odd).replace('"__DEEP__"', "[" * 400 + "]" * 400)
        for token in ("NaN", "Infinity", "1e400"):
            text = text.replace(f'"__{token}__"', token)
        records.append((alert["subject"].encode(), text.encode()))
    good = alerts[len(changes) : len(changes) + 3]
    records += alert_records(good)
    asyncio.run(produce(env.bootstrap, env.alerts, records))
    ends = end_offsets(env)
    fwd = Forwarder(env, webhook.url, "--rate-limit", "0", "--format", "json", *FAST).start()

    wanted = {a["id"] for a in alerts[: len(changes) + 3]}
    wait_until(lambda: set(webhook.accepted_ids()) == wanted, 30, "every alert", fwd)
    wait_until(lambda: committed(env) == ends, 15, "offsets committed to the end", fwd)

    def strict(constant: str) -> Any:
        raise AssertionError(f"{constant} posted: not JSON")

    for request in webhook.accepted():
        payload = json.loads(request.body, parse_constant=strict)
        assert payload["id"] == request.key and payload["summary"]
    assert fwd.count("sent") == len(wanted) and fwd.count("invalid") == 0
    assert fwd.stop() == 0
