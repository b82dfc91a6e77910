"""The page's intervention channel (``stream.collector.channel`` and its
endpoints), over the collector's aiohttp app with a fake producer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from detectors.alerts import Alert, Reason
from stream.collector.app import Collector
from stream.collector.channel import (
    ChannelTokens,
    Intervention,
    SessionChannels,
    TokenError,
    page_view_of,
)
from stream.collector.metrics import CollectorMetrics
from stream.collector.sessions import MemoryVisitorSessions
from tests.builders import T0
from tests.unit.test_collector import GAP_MS, KEY, SALT, FakeKafka, event, settings

ORIGIN = {"Origin": "https://shop.example"}


def alert_event(
    sid: str, episode: int = 1, treatment: str = "treated", kind: str = "trust_loss"
) -> dict[str, Any]:
    return Alert(
        kind=kind,
        severity="medium",
        score=5.0,
        threshold=4.0,
        subject=sid,
        episode=episode,
        session_id=sid,
        user_hash="9ab370120223fa16",
        stage="decide",
        page="/checkout/step-2",
        reasons=(Reason("dead_click", 3, 0, 1, "3 clicks that did nothing"),),
        suggested_action="open chat with a checkout specialist",
        trigger_event_id=f"{sid}-9",
        event_time=T0,
        model_version="m@1",
        rule="friction_pileup",
        extra={"treatment": treatment},
    ).to_cloudevent("urn:test")


def publish(channels: SessionChannels, alert: dict[str, Any]) -> bool:
    sid, intervention = page_view_of(alert)
    assert intervention is not None
    return channels.publish(sid, intervention)


# ------------------------------------------------------------------- tokens
def test_a_token_opens_its_own_session_only_until_it_expires() -> None:
    now = [1000.0]
    tokens = ChannelTokens(b"k" * 32, ttl_s=60, clock=lambda: now[0])
    token = tokens.issue("shop", "session-a")
    assert tokens.verify(token) == ("shop", "session-a")
    version, site, sid, expires, signature = token.split(".")
    other_sid = tokens.issue("shop", "session-b").split(".")[2]
    for forged in (
        ".".join((version, site, other_sid, expires, signature)),  # another session
        ".".join((version, site, sid, str(int(expires) + 3600), signature)),  # longer life
        token[:-1] + ("0" if token[-1] != "0" else "1"),  # a changed signature
        token[:-1] + "é",  # not even hex
        "garbage",
        "",
    ):
        with pytest.raises(TokenError) as refused:
            tokens.verify(forged)
        assert refused.value.status == 401
    now[0] += 61
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(token)


# ------------------------------------------------------------- what is kept
def test_only_treated_session_alerts_reach_a_page_and_without_internals() -> None:
    assert page_view_of(alert_event("s", treatment="control")) == ("", None)
    hotspot = alert_event("s")
    hotspot["data"]["kind"] = "friction_hotspot"
    assert page_view_of(hotspot) == ("", None)
    assert page_view_of({"id": "x"}) == ("", None)
    sid, intervention = page_view_of(alert_event("s"))
    assert sid == "s" and intervention is not None
    body = json.loads(intervention.body)
    assert body["action"] == "open chat with a checkout specialist"
    assert body["reasons"] == [{"signal": "dead_click", "text": "3 clicks that did nothing"}]
    assert "user_hash" not in body and "score" not in body and "model_version" not in body


async def test_channels_resume_after_the_last_id_and_drop_redeliveries() -> None:
    channels = SessionChannels(per_session=3)
    first, second = alert_event("s", 1), alert_event("s", 2)
    assert publish(channels, first) and publish(channels, second)
    assert not publish(channels, first)  # the same alert read again
    assert [i.id for i in channels.after("s", None)] == [first["id"], second["id"]]
    assert [i.id for i in channels.after("s", first["id"])] == [second["id"]]
    assert channels.after("s", second["id"]) == [] and channels.after("other", None) == []
    for episode in range(3, 7):
        publish(channels, alert_event("s", episode))
    assert len(channels.after("s", None)) == 3  # the last per_session kept


async def test_a_waiting_request_wakes_on_its_sessions_alert_only() -> None:
    channels = SessionChannels()
    waiting = asyncio.create_task(channels.wait("s", None, timeout=5))
    other = asyncio.create_task(channels.wait("t", None, timeout=0.3))
    await asyncio.sleep(0.05)
    publish(channels, alert_event("s"))
    found = await asyncio.wait_for(waiting, 1)
    assert [i.id for i in found] == [alert_event("s")["id"]]
    assert await other == []


def test_sessions_beyond_the_capacity_go_least_recent_first() -> None:
    channels = SessionChannels(capacity=2)
    for sid in ("a", "b", "c"):
        channels.publish(sid, Intervention(f"{sid}-1", 0, b"{}"))
    assert len(channels) == 2 and channels.after("a", None) == []


# -------------------------------------------------------------- endpoints
@pytest.fixture
async def rig() -> AsyncIterator[tuple[TestClient[Any, Any], SessionChannels, ChannelTokens]]:
    channels = SessionChannels()
    tokens = ChannelTokens(b"s" * 32, ttl_s=900)
    collector = Collector(
        settings(),
        FakeKafka().produce,
        MemoryVisitorSessions(GAP_MS, SALT),
        CollectorMetrics(),
        channels=channels,
        tokens=tokens,
    )
    async with TestClient(TestServer(collector.web_app())) as client:
        yield client, channels, tokens
        collector.stopping.set()


async def test_the_tracker_gets_a_token_for_its_own_session(
    rig: tuple[TestClient[Any, Any], SessionChannels, ChannelTokens],
) -> None:
    client, _, tokens = rig
    mine = "9f86d081884c7d659a2feaa0c55ad015"  # a tracker's session id: 128 random bits
    resp = await client.post(f"/dg/e?k={KEY}", json=[event(mine, 0), event(mine, 1)])
    answer = await resp.json()
    assert tokens.verify(answer["channel"]["token"]) == ("shop", mine)
    assert answer["channel"]["expires_in"] == 900
    other = "0123456789abcdef0123"
    mixed = await client.post(f"/dg/e?k={KEY}", json=[event(mine, 2), event(other, 1)])
    assert "channel" not in await mixed.json()  # not one page's own session
    # a guessable id (Segment's epoch-ms sessionId) never gets a channel
    guessable = await client.post(f"/dg/e?k={KEY}", json=[event("1767261660600", 0)])
    assert "channel" not in await guessable.json()
    # nor a request whose events are refused, whatever their session ids are
    bad = await client.post(f"/dg/e?k={KEY}", json=[event(mine, 5), {"session_id": [1]}])
    assert (await bad.json())["channel"]["token"]  # the refused one names no session


async def test_the_long_poll_returns_its_sessions_interventions_after_last(
    rig: tuple[TestClient[Any, Any], SessionChannels, ChannelTokens],
) -> None:
    client, channels, tokens = rig
    token = tokens.issue("shop", "s")
    pending = asyncio.create_task(client.get("/dg/p", params={"token": token}, headers=ORIGIN))
    await asyncio.sleep(0.2)
    alert = alert_event("s")
    publish(channels, alert)
    resp = await asyncio.wait_for(pending, 5)
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    answer = await resp.json()
    assert [i["id"] for i in answer["interventions"]] == [alert["id"]]
    assert answer["last"] == alert["id"]
    # asking again after it waits (nothing new); a short-lived token ends the wait
    brief = ChannelTokens(tokens.secret, ttl_s=1).issue("shop", "s")
    again = await client.get("/dg/p", params={"token": brief, "last": alert["id"]})
    assert (await again.json())["interventions"] == []


async def test_one_sessions_token_cannot_read_another_sessions_channel(
    rig: tuple[TestClient[Any, Any], SessionChannels, ChannelTokens],
) -> None:
    client, channels, tokens = rig
    publish(channels, alert_event("victim"))
    mine = tokens.issue("shop", "attacker")
    version, site, _, expires, signature = mine.split(".")
    victim_sid = tokens.issue("shop", "victim").split(".")[2]
    swapped = ".".join((version, site, victim_sid, expires, signature))
    for path in ("/dg/p", "/dg/s"):
        refused = await client.get(path, params={"token": swapped})
        assert refused.status == 401
        assert "victim" not in await refused.text()
    # the attacker's own channel holds nothing of the victim
    brief = ChannelTokens(tokens.secret, ttl_s=1).issue("shop", "attacker")
    own = await client.get("/dg/p", params={"token": brief})
    assert (await own.json())["interventions"] == []
    other_origin = await client.get(
        "/dg/p", params={"token": mine}, headers={"Origin": "https://evil.example"}
    )
    assert other_origin.status == 403


async def test_the_event_stream_resumes_after_last_event_id_without_a_duplicate(
    rig: tuple[TestClient[Any, Any], SessionChannels, ChannelTokens],
) -> None:
    client, channels, tokens = rig
    token = tokens.issue("shop", "s")
    first, second = alert_event("s", 1), alert_event("s", 2)
    publish(channels, first)
    resp = await client.get("/dg/s", params={"token": token}, headers=ORIGIN)
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    seen = await read_events(resp, 1)
    assert seen == [first["id"]]
    publish(channels, second)
    assert await read_events(resp, 1) == [second["id"]]
    resp.close()
    # a reconnect with Last-Event-ID gets only what came after it
    publish(channels, alert_event("s", 3))
    again = await client.get(
        "/dg/s", params={"token": token}, headers={"Last-Event-ID": second["id"]}
    )
    assert await read_events(again, 1) == [alert_event("s", 3)["id"]]
    again.close()


async def read_events(resp: Any, n: int) -> list[str]:
    """The ids of the next ``n`` intervention events of an SSE response."""
    ids: list[str] = []

    async def read() -> None:
        current: dict[str, str] = {}
        while len(ids) < n:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line.startswith(("id: ", "event: ", "data: ")):
                field, _, value = line.partition(": ")
                current[field] = value
            elif not line and "id" in current:  # the end of a message
                assert current["event"] == "intervention"
                assert json.loads(current["data"])["id"] == current["id"]
                ids.append(current["id"])
                current = {}

    await asyncio.wait_for(read(), 5)
    return ids
