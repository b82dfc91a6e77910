"""The worker's fast event parsing (orjson) gives the core parser's outcome."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.config import DetectorConfig
from detectors.events import Event, EventParser, InvalidEvent
from stream.records import parse_event
from tests.unit.test_events import JSON_VALUES, KEYS, MINIMAL, PARSER, with_


def outcome(parse: Any, raw: bytes) -> Event | str:
    try:
        result: Event = parse(raw)
        return result
    except InvalidEvent as exc:
        return f"{exc.reason}: {exc.detail}"


def assert_same(raw: bytes, parser: EventParser = PARSER) -> Event | str:
    fast = outcome(lambda r: parse_event(parser, r), raw)
    assert fast == outcome(parser.parse, raw)
    return fast


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(MINIMAL).encode(),
        json.dumps(with_(page="/cart", user_id="a@b.c", props={"q": [1, 2.5, None]})).encode(),
        b"\xef\xbb\xbf" + json.dumps(MINIMAL).encode(),  # a byte-order mark
        b'{"session_id":"s","ts":1700000000000,"type":"click","x":NaN}',
        b'{"session_id":"s","ts":1700000000000,"type":"click","event_id":"\\ud800"}',
        b'{"session_id":"s","ts":1700000000000,"type":"click","props":{"n":18446744073709551617}}',
        b'{"session_id":"s","ts":1e400,"type":"click"}',
        b"[" * 5000 + b"]" * 5000,
        b"[]",
        b"\xff\xfe{}",
        b"",
    ],
)
def test_edge_payloads_get_the_core_outcome(raw: bytes) -> None:
    assert_same(raw)


def test_an_integer_beyond_64_bits_keeps_the_derived_event_id() -> None:
    # orjson would read it as a float, and the canonical JSON behind the id would change
    raw = json.dumps(with_(props={"n": 2**70})).encode()
    event = assert_same(raw)
    assert isinstance(event, Event) and event.props == {"n": 2**70}


@pytest.mark.parametrize("depth", [150, 990, 1010])
def test_deep_nesting_gets_the_core_outcome(depth: int) -> None:
    # orjson reads 1023 levels, the core's parser fewer (Python's recursion
    # limit, lower still in a deep call stack): the core decides
    props = "[" * depth + "]" * depth
    raw = (
        '{"session_id":"s","ts":1700000000000,"type":"click","event_id":"e1","props":{"x":'
        + props
        + "}}"
    ).encode()
    assert_same(raw)


def test_the_size_cap_applies_before_orjson() -> None:
    small = EventParser(DetectorConfig(max_message_bytes=20))
    assert assert_same(json.dumps(MINIMAL).encode(), small) == outcome(
        small.parse, json.dumps(MINIMAL).encode()
    )
    assert str(assert_same(json.dumps(MINIMAL).encode(), small)).startswith("too_large")


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=len(KEYS)))
def test_objects_with_known_keys(obj: dict[str, Any]) -> None:
    assert_same(json.dumps(obj).encode())
    assert_same(json.dumps({**MINIMAL, **obj}).encode())


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=500))
def test_arbitrary_bytes(raw: bytes) -> None:
    assert_same(raw)
