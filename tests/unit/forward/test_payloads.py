"""The bodies the forwarder posts: Slack and JSON payloads of alerts."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from detectors.alerts import ALERT_JSON_SCHEMA
from stream.alert_view import view_of
from stream.forward.parsing import parse_alert
from stream.forward.payloads import build_payload, encode
from tests.unit.forward.sample_alerts import USER_HASH, hotspot_alert, session_alert


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
        "3 clicks that did nothing this session (typical: 0)",
        "1 rage-click burst (repeated fast clicks on one spot)",
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
