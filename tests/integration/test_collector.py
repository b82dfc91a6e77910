"""``disengage collect`` on the real broker: HTTP in, the input and dead-letter topics out,
and on through a real worker to an alert.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest

from tests.builders import T0

from .harness import COLLECTOR_KEY, CollectorProcess, Env, Worker, consume

pytestmark = pytest.mark.integration

KEY = COLLECTOR_KEY


def pile_up(sid: str, start: int = 0) -> list[dict[str, Any]]:
    """A product view and four dead clicks 2 s apart: a friction pile-up."""
    events: list[dict[str, Any]] = [
        {"session_id": sid, "ts": T0 + start, "type": "page_view", "page": "/products/1"}
    ]
    events += [
        {
            "session_id": sid,
            "ts": T0 + start + 1000 + 2000 * i,
            "type": "click",
            "event_id": f"{sid}-c{i}",
            "props": {"x": 50, "y": 50, "target": "button#buy", "dead": True},
        }
        for i in range(4)
    ]
    return events


async def test_events_reach_the_input_topic_and_refusals_the_dead_letters(env: Env) -> None:
    collector = CollectorProcess(env).start()
    try:
        collector.wait_ready()
        body = [*pile_up("c1"), {"ts": T0, "type": "click"}]
        status, answer = collector.post(f"/e?k={KEY}", gzip.compress(json.dumps(body).encode()),
                                        {"Content-Encoding": "gzip", "Content-Type": "text/plain"})
        assert status == 202 and (answer["accepted"], answer["rejected"]) == (5, 1), answer
        # the answer came after the acks: the records are on the topics already
        events = await consume(env.bootstrap, env.interactions, until=lambda m: len(m) >= 5)
        assert len(events) == 5 and {m.key for m in events} == {b"c1"}
        assert [json.loads(m.value)["type"] for m in events][:1] == ["page_view"]
        dead = await consume(env.bootstrap, env.dlq, until=lambda m: len(m) >= 1)
        headers = {k: v for k, v in dead[0].headers}
        assert headers["dlq.reason"] == b"missing_field"
        assert headers["dlq.source.topic"] == b"http:contract"
        # a Segment call through Basic auth
        basic = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
        page = {
            "anonymousId": "anon-7",
            "messageId": "seg-1",
            "timestamp": "2024-05-01T10:00:00Z",
            "properties": {"path": "/cart"},
        }
        auth = {"Authorization": basic}
        status, answer = collector.post("/v1/page", json.dumps(page).encode(), auth)
        assert status == 202 and answer["accepted"] == 1
        events = await consume(env.bootstrap, env.interactions, until=lambda m: len(m) >= 6)
        values = [json.loads(m.value) for m in events]
        segment = [v for v in values if v["event_id"] == "seg-1"]
        assert segment and segment[0]["type"] == "page_view" and segment[0]["page"] == "/cart"
        status, _ = collector.post("/v1/page", json.dumps(page).encode())
        assert status == 401
        samples = collector.metrics()
        name = "disengage_collector_events_total"
        assert samples[f"{name}{{endpoint=contract,result=accepted,site=shop}}"] == 5
    finally:
        assert collector.stop() == 0, collector.tail()


async def test_a_friction_pile_up_sent_over_http_raises_the_worker_alert(env: Env) -> None:
    collector = CollectorProcess(env).start()
    worker = Worker(env).start()
    try:
        collector.wait_ready()
        worker.wait_ready(partitions=env.partitions)
        status, answer = collector.post(f"/e?k={KEY}", json.dumps(pile_up("http-1")).encode())
        assert status == 202 and answer["accepted"] == 5

        def alerted(messages: list[Any]) -> bool:
            return any(json.loads(m.value)["data"]["session_id"] == "http-1" for m in messages)

        alerts = await consume(env.bootstrap, env.alerts, until=alerted, timeout=60)
        raised = [json.loads(m.value)["data"] for m in alerts]
        ours = [a for a in raised if a["session_id"] == "http-1"]
        rules = {(a["kind"], a["rule"]) for a in ours}
        assert ("trust_loss", "friction_pileup") in rules, raised
    finally:
        assert collector.stop() == 0, collector.tail()
        assert worker.stop() == 0, worker.tail()
