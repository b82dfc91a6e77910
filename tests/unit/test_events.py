"""The input contract of :class:`detectors.events.EventParser`."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.config import PAGE_TYPES, DetectorConfig
from detectors.events import (
    INVALID_REASONS,
    MAX_SESSION_ID_CHARS,
    Event,
    EventParser,
    InvalidEvent,
    event_to_dict,
)
from tests.builders import T0

CFG = DetectorConfig()
PARSER = EventParser(CFG)
MINIMAL: dict[str, Any] = {"session_id": "s1", "ts": T0, "type": "click"}
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def with_(**changes: Any) -> dict[str, Any]:
    return {**MINIMAL, **changes}


def reason_of(raw: Any, parser: EventParser = PARSER) -> str:
    with pytest.raises(InvalidEvent) as info:
        parser.parse(raw)
    assert info.value.reason in INVALID_REASONS
    return info.value.reason


# ------------------------------------------------------------------ valid input
def test_minimal_event_has_defaults() -> None:
    e = PARSER.parse(MINIMAL)
    assert (e.session_id, e.ts, e.type) == ("s1", T0, "click")
    assert e.page is None and e.page_type is None and e.user_hash is None
    assert e.props == {}
    assert e.event_id.startswith("d-")


@pytest.mark.parametrize("encode", [lambda o: json.dumps(o).encode(), json.dumps, dict])
def test_bytes_text_and_dict_input_agree(encode: Any) -> None:
    assert PARSER.parse(encode(MINIMAL)) == PARSER.parse(MINIMAL)


def test_bytearray_and_memoryview_accepted() -> None:
    raw = json.dumps(MINIMAL).encode()
    assert PARSER.parse(bytearray(raw)) == PARSER.parse(memoryview(raw)) == PARSER.parse(raw)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T22:13:20.123Z", 1_700_000_000_123),
        ("2023-11-14T22:13:20z", 1_700_000_000_000),
        ("2023-11-14T23:13:20.5+01:00", 1_700_000_000_500),
        ("2023-11-14T17:13:20-05:00", 1_700_000_000_000),
        (1_700_000_000_000, 1_700_000_000_000),
        (1_700_000_000_000.0, 1_700_000_000_000),
    ],
)
def test_timestamp_forms(ts: Any, expected: int) -> None:
    assert PARSER.parse(with_(ts=ts)).ts == expected


def test_unknown_extra_fields_are_ignored() -> None:
    plain = PARSER.parse(with_(event_id="e1"))
    extra = PARSER.parse(with_(event_id="e1", colour="blue", nested={"a": [1, 2]}))
    assert extra == plain
    assert not hasattr(extra, "colour")


def test_props_are_kept() -> None:
    e = PARSER.parse(with_(props={"x": 10, "target": "button#pay"}))
    assert e.props == {"x": 10, "target": "button#pay"}
    assert e.prop_float("x") == 10.0 and e.prop_str("target") == "button#pay"


# ------------------------------------------------------------------- event ids
def test_derived_event_id_is_stable_for_same_content() -> None:
    a = PARSER.parse(with_(page="/cart", props={"x": 1, "y": 2}))
    b = PARSER.parse({"props": {"y": 2, "x": 1}, "page": "/cart", **MINIMAL})  # other key order
    assert a.event_id == b.event_id
    fresh = EventParser(DetectorConfig())
    assert a.event_id == fresh.parse(with_(page="/cart", props={"x": 1, "y": 2})).event_id


@pytest.mark.parametrize(
    "change",
    [{"ts": T0 + 1}, {"type": "scroll"}, {"session_id": "s2"}, {"page": "/x"}, {"props": {"x": 1}}],
)
def test_derived_event_id_differs_for_different_content(change: dict[str, Any]) -> None:
    assert PARSER.parse(with_(**change)).event_id != PARSER.parse(MINIMAL).event_id


def test_explicit_event_id_is_kept_and_int_id_becomes_text() -> None:
    assert PARSER.parse(with_(event_id="abc-1")).event_id == "abc-1"
    assert PARSER.parse(with_(event_id=42)).event_id == "42"


# ------------------------------------------------------------------- user ids
def test_user_id_is_hashed_and_never_kept() -> None:
    raw_id = "alice@example.com"
    e = PARSER.parse(with_(user_id=raw_id))
    assert e.user_hash is not None and HEX16.match(e.user_hash)
    assert raw_id not in repr(e)
    assert raw_id not in json.dumps(event_to_dict(e))
    assert "user_id" not in event_to_dict(e)
    assert not any(raw_id == getattr(e, name) for name in Event.__slots__)


def test_user_hash_depends_on_salt_only_through_config() -> None:
    other = EventParser(DetectorConfig(user_salt="another-salt"))
    h1 = PARSER.parse(with_(user_id="alice@example.com")).user_hash
    h2 = PARSER.parse(with_(user_id="alice@example.com", ts=T0 + 5)).user_hash
    h3 = other.parse(with_(user_id="alice@example.com")).user_hash
    h4 = PARSER.parse(with_(user_id="bob@example.com")).user_hash
    assert h1 == h2
    assert h1 != h3
    assert h1 != h4


def test_numeric_user_id_is_hashed_like_its_text() -> None:
    numeric = PARSER.parse(with_(user_id=123)).user_hash
    assert numeric is not None and numeric == PARSER.parse(with_(user_id="123")).user_hash


# ------------------------------------------------------------ page type inference
@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/checkout/step-2", "checkout"),
        ("https://shop.example/checkout/step-2?x=1", "checkout"),
        ("/checkout/confirmation", "confirmation"),
        ("/products/blue-shoe", "product"),
        ("/products/12/reviews", "reviews"),
        ("/cart", "cart"),
        ("/basket", "cart"),
        ("/", "home"),
        ("https://shop.example/", "home"),
        ("/search?q=lamp", "search"),
        ("/category/shoes", "category"),
        ("/returns", "returns"),
        ("/blog/how-to", "content"),
        ("/unheard-of", None),
    ],
)
def test_page_type_inferred_from_page(page: str, expected: str | None) -> None:
    assert PARSER.parse(with_(page=page)).page_type == expected


def test_explicit_page_type_wins_over_inference() -> None:
    assert PARSER.parse(with_(page="/cart", page_type="reviews")).page_type == "reviews"


def test_custom_page_patterns() -> None:
    parser = EventParser(DetectorConfig(page_patterns=((r"/kasse\b", "checkout"),)))
    assert parser.parse(with_(page="/kasse/1")).page_type == "checkout"
    assert parser.parse(with_(page="/cart")).page_type is None


# --------------------------------------------------------------- invalid input
def test_too_large() -> None:
    big = json.dumps(with_(props={"pad": "x" * 70_000})).encode()
    assert len(big) > 65536
    assert reason_of(big) == "too_large"
    assert reason_of(big.decode()) == "too_large"


def test_size_cap_boundary() -> None:
    base = json.dumps(with_(props={"pad": ""})).encode()
    at_cap = json.dumps(with_(props={"pad": "x" * (65536 - len(base))})).encode()
    assert len(at_cap) == 65536
    assert PARSER.parse(at_cap).props["pad"]
    assert reason_of(at_cap + b" ") == "too_large"
    small = EventParser(DetectorConfig(max_message_bytes=20))
    assert reason_of(json.dumps(MINIMAL).encode(), small) == "too_large"


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe{}", b'{"session_id":"\xc3"}', "s\udc80".encode("utf-8", "surrogateescape")]
)
def test_not_utf8(raw: bytes) -> None:
    assert reason_of(raw) == "not_utf8"


@pytest.mark.parametrize("raw", [b"", b"{", b'{"session_id":', b"{'a': 1}", "nope", b"\x00"])
def test_not_json(raw: bytes | str) -> None:
    assert reason_of(raw) == "not_json"


def test_deep_nesting_is_not_json_not_a_crash() -> None:
    assert reason_of(b"[" * 30_000 + b"]" * 30_000) == "not_json"


@pytest.mark.parametrize("raw", [b"[1,2]", b'"text"', b"null", b"42", b"true", "[]"])
def test_not_object(raw: Any) -> None:
    assert reason_of(raw) == "not_object"


@pytest.mark.parametrize("name", ["session_id", "ts", "type"])
def test_missing_field(name: str) -> None:
    obj = dict(MINIMAL)
    del obj[name]
    with pytest.raises(InvalidEvent) as info:
        PARSER.parse(obj)
    assert info.value.reason == "missing_field"
    assert name in str(info.value)


@pytest.mark.parametrize("sid", [42, None, ["s"], "", "x" * (MAX_SESSION_ID_CHARS + 1)])
def test_bad_session_id(sid: Any) -> None:
    assert reason_of(with_(session_id=sid)) == "bad_session_id"


def test_session_id_of_max_length_is_ok() -> None:
    assert len("x" * 128) == MAX_SESSION_ID_CHARS
    assert PARSER.parse(with_(session_id="x" * 128)).session_id == "x" * 128


@pytest.mark.parametrize(
    "ts",
    [
        T0 // 1000,  # seconds instead of ms
        True,
        False,
        "garbage",
        "2023-11-14T22:13:20",  # naive: no offset
        "2023-11-14",  # a date, not a date-time
        "2023-13-14T22:13:20Z",
        1_700_000_000_000.5,
        float("inf"),
        None,
        [T0],
        {"ms": T0},
        10**20,
    ],
)
def test_bad_ts(ts: Any) -> None:
    assert reason_of(with_(ts=ts)) == "bad_ts"


def test_unknown_type() -> None:
    assert reason_of(with_(type="teleport")) == "unknown_type"


@pytest.mark.parametrize(
    "change",
    [
        {"props": []},
        {"props": "x=1"},
        {"props": 3},
        {"page": 5},
        {"page": {"path": "/"}},
        {"page": "/" + "a" * 3000},
        {"type": 5},
        {"page_type": 3},
        {"event_id": ""},
        {"event_id": 1.5},
        {"event_id": "e" * 257},
        {"user_id": ["alice"]},
        {"user_id": True},
    ],
)
def test_bad_field_type(change: dict[str, Any]) -> None:
    assert reason_of(with_(**change)) == "bad_field_type"


@pytest.mark.parametrize("page_type", ["spaceship", "Cart", ""])
def test_bad_page_type(page_type: str) -> None:
    assert reason_of(with_(page_type=page_type)) == "bad_page_type"


def test_error_detail_does_not_echo_long_input() -> None:
    for raw in (with_(type="t" * 5000), with_(page_type="p" * 5000), b"{" + b"x" * 5000):
        with pytest.raises(InvalidEvent) as info:
            PARSER.parse(raw)
        assert len(str(info.value)) < 200


def test_invalid_event_is_a_value_error_with_reason() -> None:
    with pytest.raises(ValueError) as info:
        PARSER.parse(b"[]")
    assert isinstance(info.value, InvalidEvent) and info.value.reason == "not_object"


# ------------------------------------------------------------------ properties
def check_contract(raw: Any) -> Event | None:
    """parse returns a well-formed Event or raises InvalidEvent, nothing else."""
    try:
        e = PARSER.parse(raw)
    except InvalidEvent as exc:
        assert exc.reason in INVALID_REASONS
        return None
    assert isinstance(e, Event)
    assert 1 <= len(e.session_id) <= MAX_SESSION_ID_CHARS
    assert 631_152_000_000 <= e.ts <= 7_258_118_400_000
    assert e.page_type is None or e.page_type in PAGE_TYPES
    assert e.user_hash is None or HEX16.match(e.user_hash)
    assert isinstance(e.props, dict) and isinstance(e.event_id, str) and e.event_id
    return e


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)
KEYS = ("session_id", "ts", "type", "event_id", "page", "page_type", "user_id", "props")


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=2000))
def test_fuzz_bytes(raw: bytes) -> None:
    check_contract(raw)


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=2000))
def test_fuzz_text(raw: str) -> None:
    check_contract(raw)


@settings(max_examples=200, deadline=None, database=None)
@given(JSON_VALUES)
def test_fuzz_json_documents(value: Any) -> None:
    check_contract(json.dumps(value))
    check_contract(json.dumps(value).encode())


@settings(max_examples=200, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=len(KEYS)))
def test_fuzz_objects_with_known_keys(obj: dict[str, Any]) -> None:
    check_contract(obj)
    check_contract(json.dumps(obj))


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.sampled_from(KEYS),
    JSON_VALUES,
    st.sampled_from(["/", "/cart", "/products/1/reviews", "http://[::1", "/x?y#z"]),
)
def test_fuzz_one_field_of_a_valid_event(key: str, value: Any, page: str) -> None:
    obj = with_(page=page, user_id="alice@example.com", props={"x": 1})
    obj[key] = value
    e = check_contract(obj)
    if e is not None and key not in ("user_id", "page", "props"):
        assert "alice@example.com" not in repr(e)
        assert e.user_hash == PARSER.parse(with_(user_id="alice@example.com")).user_hash
