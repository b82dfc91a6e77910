"""The collector's endpoints (``stream.collector.app``) over a fake producer.

The aiohttp app runs on a real local HTTP server (aiohttp's test server);
only Kafka is replaced, by a producer that honours the ``produce`` contract
(returns after the "acks", or raises). Real Kafka: tests/integration/test_collector.py.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from detectors.events import hash_user
from stream.collector.app import Collector
from stream.collector.metrics import CollectorMetrics
from stream.collector.sessions import MemoryVisitorSessions
from stream.records import Record
from stream.settings import Settings
from tests.builders import T0

KEY = "wk_test_0123456789"
SECRET = "whsec_0123456789"
SITES = {
    "shop": {
        "write_key": KEY,
        "origins": ["https://shop.example"],
        "webhook_secret": SECRET,
        "snowplow": True,
    },
    "slow": {"write_key": "wk_slow_0123456789", "rate_per_s": 5, "burst_s": 1},
    "website": {
        "write_key": "wk_website_0123456789",
        "origins": ["https://snowplow.io"],
        "snowplow": True,
    },
}


class FakeKafka:
    """Records per topic, as the brokers acknowledged them; ``fail`` makes
    the next produce raise (a broker that does not acknowledge)."""

    def __init__(self) -> None:
        self.topics: dict[str, list[Record]] = {}
        self.fail: list[Exception] = []

    async def produce(self, topic: str, records: Sequence[Record]) -> None:
        if self.fail and records:
            raise self.fail.pop(0)
        self.topics.setdefault(topic, []).extend(records)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r.value or b"") for r in self.topics.get("interactions", [])]

    def dead(self) -> list[Record]:
        return self.topics.get("interactions.dlq", [])


def settings(**extra: str) -> Settings:
    env = {"DISENGAGE_COLLECTOR_SITES": json.dumps(SITES), **extra}
    return Settings.from_env(env)


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


#: A 30-minute inactivity gap (the detector's default session timeout).
GAP_MS = 30 * 60 * 1000
SALT = Settings().detector.user_salt


@pytest.fixture
def metrics() -> CollectorMetrics:
    return CollectorMetrics()


@pytest.fixture
async def client(
    kafka: FakeKafka, metrics: CollectorMetrics
) -> AsyncIterator[TestClient[Any, Any]]:
    s = settings(DISENGAGE_COLLECTOR_MAX_BODY_BYTES="20000")
    collector = Collector(s, kafka.produce, MemoryVisitorSessions(GAP_MS, SALT), metrics)
    async with TestClient(TestServer(collector.web_app())) as c:
        yield c


def basic_auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def event(sid: str = "s1", t: int = 0, **fields: Any) -> dict[str, Any]:
    return {"session_id": sid, "ts": T0 + t, "type": "click", "event_id": f"{sid}-{t}", **fields}


async def test_a_batch_of_our_events_is_produced_keyed_by_session_after_the_acks(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    body = [event("a", 0), event("b", 1, user_id="alice@example.com"), {"ts": 5}]
    resp = await client.post(f"/dg/e?k={KEY}", json=body)
    assert resp.status == 202
    answer = await resp.json()
    assert (answer["accepted"], answer["rejected"], answer["ignored"]) == (2, 1, 0)
    assert answer["errors"] == [
        {"index": 2, "reason": "missing_field", "detail": "session_id is required"}
    ]
    records = kafka.topics["interactions"]
    assert [r.key for r in records] == [b"a", b"b"]
    produced = kafka.events()
    assert produced[1]["user_id"] == hash_user("alice@example.com", Settings().detector.user_salt)
    assert all(b"alice" not in (r.value or b"") for r in records)
    (dead,) = kafka.dead()
    headers = dict(dead.headers or [])
    assert headers["dlq.reason"] == b"missing_field" and headers["dlq.site"] == b"shop"
    assert headers["dlq.source.topic"] == b"http:contract"


async def test_ndjson_as_text_plain_and_gzip_are_accepted(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    lines = "\n".join(json.dumps(event("n", t)) for t in range(3)) + "\nnot json\n"
    resp = await client.post(
        f"/dg/e?k={KEY}",
        data=gzip.compress(lines.encode()),
        headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"},
    )
    answer = await resp.json()
    assert resp.status == 202 and answer["accepted"] == 3 and answer["rejected"] == 1
    assert answer["errors"][0]["reason"] == "not_json"


async def test_keys_and_origins_are_checked(client: TestClient[Any, Any]) -> None:
    body = [event()]
    assert (await client.post("/dg/e", json=body)).status == 401
    assert (await client.post("/dg/e?k=wk_wrong_0123456789", json=body)).status == 401
    other = await client.post(f"/dg/e?k={KEY}", json=body, headers={"Origin": "https://evil.example"})
    assert other.status == 403
    ok = await client.post(f"/dg/e?k={KEY}", json=body, headers={"Origin": "https://shop.example"})
    assert ok.status == 202
    assert ok.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert (await client.post("/dg/e", json=body, headers=basic_auth())).status == 202


async def test_a_preflight_is_answered_for_allowed_origins_only(
    client: TestClient[Any, Any],
) -> None:
    ok = await client.options(
        "/dg/e",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert ok.status == 204
    assert ok.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    bad = await client.options("/dg/e", headers={"Origin": "https://evil.example"})
    assert bad.status == 403 and "Access-Control-Allow-Origin" not in bad.headers


async def test_limits_answer_413_and_refuse_a_large_event(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    big = [event(str(i), i, props={"pad": "x" * 100}) for i in range(200)]  # > 20,000 bytes
    assert (await client.post(f"/dg/e?k={KEY}", json=big)).status == 413
    bomb = gzip.compress(b"[" + b" " * 1_000_000 + b"]")  # small, but 1 MB inflated
    resp = await client.post(
        f"/dg/e?k={KEY}", data=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert resp.status == 413
    huge = event("h", 0, props={"pad": "y" * 33_000})
    s = settings()
    collector = Collector(s, kafka.produce, MemoryVisitorSessions(1000, SALT), CollectorMetrics())
    async with TestClient(TestServer(collector.web_app())) as c:
        answer = await (await c.post(f"/dg/e?k={KEY}", json=[huge, event("ok")])).json()
    assert answer["accepted"] == 1 and answer["errors"][0]["reason"] == "too_large"
    assert kafka.dead()[-1].value is not None and len(kafka.dead()[-1].value or b"") > 33_000


async def test_the_rate_limit_answers_429_with_retry_after(client: TestClient[Any, Any]) -> None:
    url = "/dg/e?k=wk_slow_0123456789"
    assert (await client.post(url, json=[event("r", t) for t in range(5)])).status == 202
    resp = await client.post(url, json=[event("r", t) for t in range(5, 10)])
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1


async def test_kafka_without_acks_answers_503_and_the_retry_is_the_same_events(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    kafka.fail.append(TimeoutError())
    body = [{"session_id": "x", "ts": T0, "type": "page_view", "page": "/p/1"}]  # no event id
    first = await client.post(f"/dg/e?k={KEY}", json=body)
    assert first.status == 503 and first.headers["Retry-After"] == "1"
    assert not kafka.events()
    again = await client.post(f"/dg/e?k={KEY}", json=body)
    assert again.status == 202
    again2 = await client.post(f"/dg/e?k={KEY}", json=body)
    assert again2.status == 202
    ids = [e["event_id"] for e in kafka.events()]
    assert len(ids) == 2 and ids[0] == ids[1]  # derived from the content: the worker drops one


async def test_segment_batches_need_the_write_key_as_basic_user(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    batch: dict[str, list[dict[str, Any]]] = {
        "batch": [
            {
                "type": "track",
                "event": "Product Added",
                "anonymousId": "anon-1",
                "userId": "u-42",
                "messageId": "m1",
                "timestamp": "2024-05-01T10:00:00Z",
                "properties": {"price": 20, "quantity": 2},
                "context": {"traits": {"email": "bob@example.com"}},
            },
            {"type": "identify", "userId": "u-42", "traits": {"email": "bob@example.com"}},
            {"type": "track", "anonymousId": "anon-1", "timestamp": "2024-05-01T10:01:00Z"},
        ]
    }
    assert (await client.post("/dg/v1/batch", json=batch)).status == 401
    resp = await client.post("/dg/v1/batch", json=batch, headers=basic_auth())
    answer = await resp.json()
    assert resp.status == 202 and (answer["accepted"], answer["rejected"], answer["ignored"]) == (
        1,
        1,
        1,
    )
    (added,) = kafka.events()
    assert added["type"] == "add_to_cart" and added["props"] == {"value": 40.0}
    assert added["event_id"] == "m1" and added["session_id"].startswith("v-")
    dead = kafka.dead()[0].value or b""
    assert b"bob@" not in dead and b"u-42" not in dead  # traits dropped, user ids hashed
    assert b"bob@" not in b"".join(r.value or b"" for r in kafka.topics["interactions"])
    # writeKey in the body works too (Segment's alternative to Basic)
    body = {"writeKey": KEY, "batch": [dict(batch["batch"][0], messageId="m2")]}
    assert (await client.post("/dg/v1/batch", json=body)).status == 202


async def test_visitors_without_a_session_id_are_cut_by_inactivity(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    def page(minute: int) -> dict[str, Any]:
        return {
            "type": "page",
            "anonymousId": "anon-9",
            "messageId": f"p{minute}",
            "timestamp": T0 + minute * 60_000,
            "properties": {"path": "/products/3", "url": "https://shop.example/products/3?q=1"},
        }

    for minute in (0, 10, 50):  # 40 minutes of silence before the last
        resp = await client.post(
            "/dg/v1/page", json=page(minute), headers=basic_auth()
        )
        assert resp.status == 202
    sessions = [e["session_id"] for e in kafka.events()]
    assert sessions[0] == sessions[1] != sessions[2]
    assert all("anon-9" not in s for s in sessions)
    assert kafka.events()[0]["page"] == "/products/3"


async def test_segment_webhooks_are_verified_by_their_signature(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    message = json.dumps(
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": "w1",
            "timestamp": "2024-05-01T10:00:00Z",
            "context": {"sessionId": 1714557600000},
            "properties": {"total": 99.5},
        }
    ).encode()
    good = hmac.new(SECRET.encode(), message, hashlib.sha1).hexdigest()
    bad = await client.post("/dg/v1/webhook/shop", data=message, headers={"X-Signature": "00"})
    assert bad.status == 401
    unknown = await client.post("/dg/v1/webhook/nope", data=message, headers={"X-Signature": good})
    assert unknown.status == 404
    ok = await client.post("/dg/v1/webhook/shop", data=message, headers={"X-Signature": good})
    assert ok.status == 202
    (order,) = kafka.events()
    assert order["type"] == "purchase" and order["session_id"] == "1714557600000"
    assert order["props"] == {"value": 99.5}


async def test_snowplow_get_answers_a_pixel_after_the_event_is_stored(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    query = {
        "e": "pv",
        "aid": "shop",
        "eid": "e-1",
        "sid": "sess-1",
        "dtm": str(T0),
        "url": "https://shop.example/checkout?email=x@y.z",
        "uid": "carol",
    }
    resp = await client.get("/dg/i", params=query)
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/gif"
    (view,) = kafka.events()
    assert view["page"] == "/checkout" and view["session_id"] == "sess-1"
    assert view["user_id"] == hash_user("carol", Settings().detector.user_salt)
    assert (await client.get("/dg/i", params={**query, "aid": "unknown"})).status == 401


async def test_metrics_count_requests_and_results_by_site(
    client: TestClient[Any, Any], metrics: CollectorMetrics
) -> None:
    await client.post(f"/dg/e?k={KEY}", json=[event("m"), {"bad": 1}])
    await client.post("/dg/e", json=[event("m")])

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert value("disengage_collector_requests_total", endpoint="contract", status="202") == 1
    assert value("disengage_collector_requests_total", endpoint="contract", status="401") == 1
    assert value("disengage_collector_events_total", endpoint="contract", site="shop",
                 result="accepted") == 1
    assert value("disengage_collector_rejected_total", reason="missing_field") == 1


def test_a_collector_without_sites_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="DISENGAGE_COLLECTOR_SITES"):
        Collector(
            Settings(), FakeKafka().produce, MemoryVisitorSessions(1, SALT), CollectorMetrics()
        )


async def test_a_snowplow_tp2_body_from_the_docs_is_stored_and_answered_200(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    fixture = Path(__file__).parent.parent / "fixtures" / "collector" / "snowplow_tp2.json"
    body = json.loads(fixture.read_text())
    body["data"] = body["data"][:4]  # the items of app id "website"
    resp = await client.post(
        "/dg/com.snowplowanalytics.snowplow/tp2",
        json=body,
        headers={"Origin": "https://snowplow.io"},
    )
    assert resp.status == 200 and (await resp.json())["accepted"] == 4
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    types = [e["type"] for e in kafka.events()]
    assert types == ["page_view", "custom", "custom", "custom"]
    mixed = {**body, "data": [body["data"][0], {**body["data"][1], "aid": "shop"}]}
    assert (await client.post("/dg/com.snowplowanalytics.snowplow/tp2", json=mixed)).status == 400


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        (f"/dg/e?k={KEY}", b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}),
        (f"/dg/e?k={KEY}", b"[" * 300 + b"]" * 300, {}),
        ("/dg/v1/batch", b'{"batch": [{"type": [], "context": 5}]}', {"Authorization": "Basic é"}),
        ("/dg/v1/batch", b'{"batch": [{"type": []}], "context": {}}', {}),
        ("/dg/v1/webhook/shop", b"{}", {"X-Signature": "é" * 40}),
        ("/dg/com.snowplowanalytics.snowplow/tp2", b'{"schema": 1, "data": 2}', {}),
    ],
)
async def test_malformed_requests_get_a_4xx_never_a_500(
    client: TestClient[Any, Any], path: str, body: bytes, headers: dict[str, str]
) -> None:
    resp = await client.post(path, data=body, headers=headers)
    assert 400 <= resp.status < 500, (resp.status, await resp.text())


async def test_a_batch_message_with_a_bad_type_is_refused_alone(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    body = {"writeKey": KEY, "batch": [{"type": []}, {"type": "page", "anonymousId": "a"}]}
    answer = await (await client.post("/dg/v1/batch", json=body)).json()
    assert (answer["accepted"], answer["rejected"]) == (1, 1)


async def test_dead_letters_are_scrubbed_of_urls_ids_and_values(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    refused = {
        "e": "ue",
        "aid": "shop",
        "duid": "visitor-123",
        "url": "https://shop.example/checkout?email=bob@example.com",
        "ue_px": "eyJ2YWx1ZSI6ICJzZWNyZXQifQ",  # {"value": "secret"}: not a valid event
    }
    resp = await client.get("/dg/i", params=refused)
    assert resp.status == 200
    (dead,) = kafka.dead()
    value = json.loads(dead.value or b"")
    assert value["url"] == "/checkout" and "ue_px" not in value
    assert value["duid"] != "visitor-123" and len(value["duid"]) == 16


async def test_pages_of_our_contract_lose_their_query(
    client: TestClient[Any, Any], kafka: FakeKafka
) -> None:
    body = [{"session_id": "q", "ts": T0, "type": "page_view", "page": "/p?email=a@b.c#x"}]
    assert (await client.post(f"/dg/e?k={KEY}", json=body)).status == 202
    assert kafka.events()[0]["page"] == "/p"


async def test_more_calls_than_a_segment_batch_allows_is_413(client: TestClient[Any, Any]) -> None:
    resp = await client.post(f"/dg/e?k={KEY}", json=[1] * 2501)
    assert resp.status == 413


async def test_snowplow_is_refused_for_a_site_that_did_not_enable_it(
    client: TestClient[Any, Any],
) -> None:
    query = {"e": "pv", "aid": "slow", "sid": "s", "url": "/"}
    assert (await client.get("/dg/i", params=query)).status == 401


async def test_an_unreachable_session_store_answers_503(kafka: FakeKafka) -> None:
    class Down:
        async def resolve(self, visits: Sequence[Any]) -> list[str]:
            raise ConnectionError("redis down")

    collector = Collector(settings(), kafka.produce, Down(), CollectorMetrics())
    async with TestClient(TestServer(collector.web_app())) as c:
        page = {"anonymousId": "a", "messageId": "m", "timestamp": T0}
        resp = await c.post("/dg/v1/page", json=page, headers=basic_auth())
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert not kafka.events()
