"""Interventions in a real browser: the demo shop, its tracker, the
collector's channel, Kafka and a worker, with a 50% holdout.

* A treated visitor rage-clicks the broken Pay button: the help panel
  appears within 2 s of the last click, and the page's acknowledgement
  (an ``intervention`` event) reaches the interactions topic.
* A control visitor does the same: the alert is on the alerts topic, marked
  ``control``, and the page shows nothing.
* The treated visitor's next page does not show the same help again.
* Neither page logs a console error. Screenshots go to
  ``.cache/test-artifacts/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    COLLECTOR_KEY,
    ROOT,
    CollectorProcess,
    Env,
    ShopServer,
    Worker,
    consume,
    holdout_sessions,
    off_loop,
    open_shop,
    rage_click_pay,
)

pytestmark = pytest.mark.integration

SALT = "browser-test-salt"
ARTIFACTS = ROOT / ".cache" / "test-artifacts"


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_the_help_panel_appears_for_treated_sessions_only(env: Env, browser: Any) -> None:
    treated, control = holdout_sessions(SALT, 0.5, f"iv-{env.tag}-")
    env.extra.update({"DISENGAGE_HOLDOUT_SHARE": "0.5", "DISENGAGE_HOLDOUT_SALT": SALT})
    collector = CollectorProcess(env)
    with ShopServer(collector.base_url) as shop:
        collector.extra_env["DISENGAGE_COLLECTOR_SITES"] = json.dumps(
            {"shop": {"write_key": COLLECTOR_KEY, "origins": [shop.origin]}}
        )
        collector.start()
        worker = Worker(env).start()
        try:
            collector.wait_ready()
            worker.wait_ready(partitions=env.partitions)

            context, page, errors = open_shop(browser, shop, treated)
            page.wait_for_timeout(1500)  # the page view goes out: the token comes back
            clicked_at = rage_click_pay(page)
            page.wait_for_selector("#dg-help:not([hidden])", timeout=5000)
            shown_at = page.evaluate("window.__helpShownAt")
            took_s = (shown_at - clicked_at) / 1000
            shot = screenshot(page, "intervention-treated")
            assert took_s < 2.0, f"the help panel took {took_s:.2f} s after the last rage click"
            assert page.text_content("#dg-help-text")
            assert page.locator("#dg-help-reasons li").count() >= 1  # "why am I seeing this"
            assert shot.stat().st_size > 0

            control_context, control_page, control_errors = open_shop(browser, shop, control)
            control_page.wait_for_timeout(1500)
            rage_click_pay(control_page)

            def both_alerted(messages: list[Any]) -> bool:
                sids = {json.loads(m.value)["data"]["session_id"] for m in messages}
                return {treated, control} <= sids

            alerts = off_loop(consume(env.bootstrap, env.alerts, until=both_alerted, timeout=60))
            raised = [json.loads(m.value) for m in alerts]
            data = {a["data"]["session_id"]: a["data"] for a in raised}
            ids = {a["data"]["session_id"]: a["id"] for a in raised}
            assert data[treated]["treatment"] == "treated"
            assert data[control]["treatment"] == "control"
            control_page.wait_for_timeout(3000)  # longer than the treated page took
            assert control_page.is_hidden("#dg-help")
            screenshot(control_page, "intervention-control")

            # the treated page acknowledged what it showed; the control page did not
            def acked(messages: list[Any]) -> bool:
                return any(json.loads(m.value)["type"] == "intervention" for m in messages)

            events = off_loop(consume(env.bootstrap, env.interactions, until=acked, timeout=30))
            sent = [json.loads(m.value) for m in events]
            acks = [e for e in sent if e["type"] == "intervention"]
            assert [a["session_id"] for a in acks] == [treated]
            assert acks[0]["props"]["alert_id"] == ids[treated]
            assert acks[0]["props"]["kind"] == data[treated]["kind"]
            # the next page of the same session does not show the same help again
            page.goto(f"{shop.origin}/products/2")
            page.wait_for_timeout(3000)  # the page view goes out, the channel reopens
            assert page.is_hidden("#dg-help")
            assert page.evaluate("localStorage.getItem('dg_last')") == f"{treated}.{ids[treated]}"
            assert errors == [] and control_errors == [], (errors, control_errors)
            context.close()
            control_context.close()
        finally:
            worker.stop()
            collector.stop()
