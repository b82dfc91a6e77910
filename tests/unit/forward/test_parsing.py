"""What the forwarder reads: alert parsing, page types and filters."""

from __future__ import annotations

import pytest

from stream.forward.filters import AlertFilter, default_classifier, page_type_of
from stream.forward.parsing import InvalidAlert, alert_id_of, parse_alert
from tests.unit.forward.sample_alerts import hotspot_alert, raw, session_alert

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


def test_the_id_of_a_message_that_is_not_an_alert_is_kept_when_sane() -> None:
    assert alert_id_of(raw({"id": "a-1", "x": 1})) == "a-1"
    for value in (None, b"", b"not json", raw([1]), raw({"id": 7}), raw({"id": "a\r\nX: 1"})):
        assert alert_id_of(value) is None
