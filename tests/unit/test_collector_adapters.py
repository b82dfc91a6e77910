"""The vendor adapters on payloads copied from the vendors' documentation.

The fixtures and where each came from: tests/fixtures/collector/PROVENANCE.md.
Each test checks what the README's mapping tables promise.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from detectors.config import DetectorConfig
from detectors.events import EventParser
from stream.collector import segment, snowplow
from stream.collector.calls import Call

FIXTURES = Path(__file__).parent.parent / "fixtures" / "collector"
NOW_MS = 1_700_000_000_000
PARSER = EventParser(DetectorConfig())


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def mapped(calls: list[Call]) -> list[dict[str, Any]]:
    return [c.event for c in calls if c.event is not None and not c.ignored]


def test_segment_ecommerce_spec_events_map_as_the_table_says() -> None:
    body = load("segment_track_ecommerce.json")
    # the docs' analytics.track() snippets carry no visitor: analytics.js adds
    # the anonymousId itself, so the test does too
    for message in body["batch"]:
        message.setdefault("anonymousId", "anon-1")
    calls = segment.batch_calls(body, NOW_MS)
    events = mapped(calls)
    assert [e["type"] for e in events] == [
        "search",
        "add_to_cart",
        "remove_from_cart",
        "checkout_step",
        "checkout_step",
        "purchase",
        "page_view",
    ]
    search, added, removed, viewed, completed, order, page = events
    assert "props" not in search  # the query is not kept
    price = body["batch"][1]["properties"]
    assert added["props"] == {"value": price["price"] * price["quantity"]}
    assert removed["props"]["value"] > 0
    assert viewed["props"] == {"step": body["batch"][3]["properties"]["step"]}
    assert completed["props"] == {"step": body["batch"][4]["properties"]["step"]}
    assert order["props"] == {"value": body["batch"][5]["properties"]["total"]}
    assert page["page"] == "/"  # the path of properties.url, http://www.example.com
    assert all(c.visitor == "anon-1" for c in calls[:6])
    assert calls[6].visitor == body["batch"][6]["anonymousId"]
    for event in events:  # every mapped event passes the worker's parser
        PARSER.parse({**event, "session_id": "s"})


def test_segment_ecommerce_calls_without_a_visitor_are_refused() -> None:
    calls = segment.batch_calls(load("segment_track_ecommerce.json"), NOW_MS)
    assert [c.reason for c in calls[:6]] == ["no_session"] * 6


def test_segments_http_api_batch_example() -> None:
    body = load("segment_batch.json")
    calls = segment.batch_calls(body, NOW_MS)
    assert [c.ignored for c in calls] == [True, False, True, False]
    played = [c.event for c in calls if c.event is not None]
    assert [e["type"] for e in played] == ["custom", "custom"]
    assert played[0]["props"] == {"event": "Song Played"}
    assert "Fallin" not in json.dumps(played)  # properties beyond the table never leave
    # the batch's context is merged into each call, and the user becomes the visitor
    assert calls[1].visitor == "019mr8mf4r"
    PARSER.parse({**played[0], "session_id": "s"})
    with pytest.raises(ValueError, match="bad_ts"):  # the docs' "2015-2-02T..." is not RFC 3339
        PARSER.parse({**played[1], "session_id": "s"})


def test_rudderstack_batches_carry_their_session_id() -> None:
    calls = segment.batch_calls(load("rudderstack_batch_js_sdk.json"), NOW_MS)
    events = mapped(calls)
    assert [e["type"] for e in events] == ["page_view", "purchase"]
    assert {e["session_id"] for e in events} == {"1673747756719"}
    assert all(c.visitor is None for c in calls if c.event is not None)
    assert calls[2].ignored  # identify
    assert events[1]["event_id"] == "bb934032-05c6-4c8c-a2d8-5d1b6ed58bbf"


def test_rudderstack_http_api_example() -> None:
    calls = segment.batch_calls(load("rudderstack_batch.json"), NOW_MS)
    kinds = [("ignored" if c.ignored else c.event["type"] if c.event else c.reason) for c in calls]
    assert kinds == ["ignored", "custom", "page_view", "page_view", "ignored", "ignored"]
    assert calls[2].event is not None and calls[2].event["page"] == "/"
    assert {c.visitor for c in calls if c.event is not None} == {"anon-id-new"}
    assert calls[1].event is not None
    assert calls[1].event["props"] == {"event": "Product Purchased new"}


def test_snowplow_tp2_events_map_as_the_table_says() -> None:
    calls = snowplow.tp2_calls(load("snowplow_tp2.json"), NOW_MS)
    view = calls[0].event
    assert view is not None and view["type"] == "page_view" and view["page"] == "/"
    assert view["session_id"] == "be9520e7-16a5-4d4e-afa1-8e269f99a1cf"
    assert view["ts"] == 1665398554084 and view["event_id"].startswith("2ec13853")
    ping = calls[1].event
    assert ping is not None and ping["type"] == "custom"  # dwell: no scroll offsets
    assert ping["props"] == {"event": "page_ping"}
    # the JS tracker's unit-test payloads (items 6-11): no sid or duid, so
    # refused, but mapped as the table says
    assert {c.reason for c in calls[6:]} == {"no_session"}
    by_type = [c.event["type"] for c in calls[7:] if c.event is not None]
    assert sorted(by_type) == sorted(["click", "form_submit", "form_input", "form_focus", "error"])
    for call in calls[7:]:
        assert call.event is not None
        text = json.dumps(call.event)
        assert "http" not in text  # no link URL
        if call.event["type"] == "click":
            assert call.event["props"]["target"].startswith("a")
        if call.event["type"] in ("form_input", "form_focus"):
            inner = json.loads(load("snowplow_tp2.json")["data"][calls.index(call)]["ue_pr"])
            assert inner["data"]["data"]["value"] not in text.replace('"', " ").split()
    for call in calls[:6]:
        assert call.event is not None and call.reason is None
        PARSER.parse(call.event)


def test_a_page_ping_that_scrolled_is_a_scroll() -> None:
    fields = {"e": "pp", "sid": "s", "pp_miy": "0", "pp_may": "1500"}
    call = snowplow.event_call({**fields, "vp": "800x1000", "ds": "800x5000"}, NOW_MS)
    assert call.event is not None and call.event["type"] == "scroll"
    assert call.event["props"] == {"scroll_pct": 50.0}


@pytest.mark.parametrize("name", ["snowplow_get_i.txt", "snowplow_get_i_js_tracker.txt"])
def test_snowplow_get_requests(name: str) -> None:
    fields = dict(parse_qsl((FIXTURES / name).read_text().strip().lstrip("&")))
    call = snowplow.event_call(fields, NOW_MS)
    assert call.event is not None and call.event["type"] == "page_view"
    if "sid" in fields:
        assert call.reason is None and call.event["session_id"] == fields["sid"]
        assert "gtm_debug" not in call.event["page"]  # no query string
        PARSER.parse(call.event)
    else:  # the Pixel tracker sends no session: refused
        assert call.reason == "no_session" and call.event["ts"] == NOW_MS


def test_ue_px_is_decoded_padded_or_not() -> None:
    inner = {
        "schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
        "data": {
            "schema": "iglu:com.snowplowanalytics.snowplow/link_click/jsonschema/1-0-1",
            "data": {"targetUrl": "https://x.example/?t=secret", "elementId": "buy"},
        },
    }
    encoded = base64.urlsafe_b64encode(json.dumps(inner).encode()).decode()
    for px in (encoded, encoded.rstrip("=")):
        call = snowplow.event_call({"e": "ue", "sid": "s", "ue_px": px}, NOW_MS)
        assert call.event == {
            "type": "click",
            "props": {"target": "a#buy"},
            "ts": NOW_MS,
            "session_id": "s",
        }
    bad = snowplow.event_call({"e": "ue", "sid": "s", "ue_px": "!!!"}, NOW_MS)
    assert bad.reason == "bad_field_type"


def test_bodies_that_are_not_the_vendors_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="batch"):
        segment.batch_calls({"events": []}, NOW_MS)
    with pytest.raises(ValueError, match="payload_data"):
        snowplow.tp2_calls({"schema": "iglu:x/y/jsonschema/1-0-0", "data": []}, NOW_MS)
    assert segment.message_call(["not", "an", "object"], "track", NOW_MS).reason == "not_object"
    assert segment.message_call({"anonymousId": "a"}, "track", NOW_MS).reason == "missing_field"
