"""The alert texts a marketer reads, through ``disengage replay`` as a user runs it.

The same session twice: a pay button that does nothing, once on the checkout
and once on a product page. Plurals, whole-number counts, no reason that only
restates its baseline, and an action that fits the cause and the stage.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.cli.conftest import Disengage

T0 = 1_767_261_600_000


def broken_button_session(sid: str, page: str) -> list[dict[str, Any]]:
    """A visitor who clicks a dead button four times in a burst, then once more."""
    events: list[dict[str, Any]] = [
        {"session_id": sid, "ts": T0, "type": "page_view", "event_id": f"{sid}-0", "page": "/"},
        {"session_id": sid, "ts": T0 + 20_000, "type": "page_view", "event_id": f"{sid}-1",
         "page": page},
    ]
    for n, dt in enumerate((8_000, 8_300, 8_600, 8_900, 14_000), start=2):
        events.append(
            {"session_id": sid, "ts": T0 + 20_000 + dt, "type": "click", "event_id": f"{sid}-{n}",
             "props": {"x": 880 + n, "y": 640, "target": "button#pay", "dead": dt < 10_000}}
        )
    return events


def replay(
    disengage: Disengage, tmp_path: Path, events: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    run = disengage("replay", str(path))
    assert run.code == 0, run.err
    return [json.loads(line)["data"] for line in run.out.splitlines()]


def test_reason_texts_use_plurals_whole_numbers_and_skip_what_is_typical(
    disengage: Disengage, tmp_path: Path
) -> None:
    alerts = replay(disengage, tmp_path, broken_button_session("s-checkout", "/checkout/step-2"))
    assert len(alerts) == 1
    reasons = alerts[0]["reasons"]
    texts = [r["text"] for r in reasons]
    assert any(t.startswith("1 rage-click burst ") for t in texts), texts
    assert any(re.match(r"[2-9] clicks that did nothing", t) for t in texts), texts
    for reason, text in zip(reasons, texts, strict=True):
        assert not re.search(r"\b1 \w+s\b", text.split("(")[0]), f"plural after 1: {text}"
        assert not re.search(r"\d\.0\b", text), f"a count printed as a decimal: {text}"
        assert reason["value"] > reason["baseline"], f"a reason that restates its baseline: {text}"


def test_the_action_fits_the_cause_and_the_stage(disengage: Disengage, tmp_path: Path) -> None:
    checkout = replay(disengage, tmp_path, broken_button_session("s-c", "/checkout/step-2"))
    product = replay(disengage, tmp_path, broken_button_session("s-p", "/products/42"))
    assert checkout[0]["stage"] == "decide" and product[0]["stage"] == "consider"
    for alert in (checkout[0], product[0]):
        # a broken button goes to the people who can fix it, never "offer an FAQ"
        assert alert["suggested_action"].startswith("page owners:"), alert["suggested_action"]
        assert "FAQ" not in alert["suggested_action"]
    assert "checkout" in checkout[0]["suggested_action"]
    assert checkout[0]["suggested_action"] != product[0]["suggested_action"]
