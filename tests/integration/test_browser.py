"""The browser tracker in Debian's Chromium, through the collector and Kafka to the worker.

A demo shop page (tracker/demo/shop.html) is served on localhost with the
tracker the collector serves. Playwright drives the system browser
(``/usr/bin/chromium``; nothing downloads a browser). Two visitors:

* one uses the harmless look-alikes of frustration: a quantity stepper and a
  date picker clicked fast, a slow scroll, a form filled in correctly;
* one rage-clicks a broken "Pay" button, thrashes the page up and down,
  submits a form with errors, navigates the SPA and leaves the tab.

The second must raise the friction alert on the alerts topic, the first
none; and no field value may reach Kafka.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .harness import (
    COLLECTOR_KEY,
    CollectorProcess,
    Env,
    ShopServer,
    Worker,
    consume,
    off_loop,
    session_of,
)

pytestmark = pytest.mark.integration

SECRET_EMAIL = "alice.secret@example.com"

def settle(page: Any) -> None:
    """Let the dead-click probes (1 s) resolve, then send what is queued."""
    page.wait_for_timeout(1300)
    page.evaluate("window.disengage.flush()")
    page.wait_for_timeout(500)


def look_alikes(browser: Any, shop: ShopServer) -> str:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{shop.origin}/products/1")
    for _ in range(8):  # a quantity stepper, clicked fast
        page.click("#more")
        page.wait_for_timeout(120)
    for day in (3, 4, 4, 5, 5, 5):  # a date picker, clicked fast
        page.click(f"#picker .day:nth-child({day})")
        page.wait_for_timeout(150)
    for _ in range(4):  # reading down the page
        page.mouse.wheel(0, 400)
        page.wait_for_timeout(400)
    page.fill("#email", SECRET_EMAIL)
    page.fill("#postcode", "12345")
    page.click("#send")
    for _ in range(5):  # the author excluded this button from rage and dead clicks
        page.click("#ignored")
        page.wait_for_timeout(100)
    settle(page)
    sid = session_of(page)
    context.close()
    return sid


def frustration(browser: Any, shop: ShopServer) -> str:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{shop.origin}/products/1")
    for _ in range(5):  # the broken Pay button
        page.click("#pay")
        page.wait_for_timeout(150)
    for step in range(8):  # thrashing up and down
        page.mouse.wheel(0, 900 if step % 2 == 0 else -900)
        page.wait_for_timeout(220)
    page.fill("#postcode", "12")
    page.click("#send")  # an empty e-mail and a bad postcode
    page.click("#next")  # the SPA's next step
    page.wait_for_timeout(1300)  # the probes resolve; then the visitor leaves the tab
    sid = session_of(page)
    page.close(run_before_unload=True)  # pagehide: the rest goes by sendBeacon
    time.sleep(0.5)
    context.close()
    return sid


async def topic_events(env: Env, sid: str, until: Any) -> list[dict[str, Any]]:
    messages = await consume(
        env.bootstrap,
        env.interactions,
        until=lambda ms: until([json.loads(m.value) for m in ms if m.key == sid.encode()]),
        timeout=60,
    )
    return [json.loads(m.value) for m in messages if m.key == sid.encode()]


def test_the_tracker_reports_frustration_and_not_its_look_alikes(env: Env, browser: Any) -> None:
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
            calm = look_alikes(browser, shop)
            angry = frustration(browser, shop)
            assert calm != angry

            def alerted(messages: list[Any]) -> bool:
                return any(json.loads(m.value)["data"]["session_id"] == angry for m in messages)

            alerts = off_loop(consume(env.bootstrap, env.alerts, until=alerted, timeout=90))
            raised = [json.loads(m.value)["data"] for m in alerts]
            angry_alerts = [a for a in raised if a["session_id"] == angry]
            assert any(a["rule"] == "friction_pileup" for a in angry_alerts), raised
            reasons = {r["signal"] for a in angry_alerts for r in a["reasons"] if "signal" in r}
            assert reasons, angry_alerts

            # what the frustrated visitor's browser sent
            sent = off_loop(
                topic_events(env, angry, lambda evs: any(e["type"] == "visibility" or
                                                          e["page"] == "/checkout/2" for e in evs))
            )
            types = [e["type"] for e in sent]
            pay = [e for e in sent if e["type"] == "click" and e.get("props", {}).get("dead")]
            assert len(pay) >= 3, [e.get("props") for e in sent]  # no reaction to Pay
            assert types.count("form_error") >= 2 and "scroll" in types, types
            assert any(e["type"] == "page_view" and e["page"] == "/checkout/2" for e in sent)

            # the look-alikes: sent, applied, and no alert
            calm_events = off_loop(
                topic_events(env, calm, lambda evs: sum(e["type"] == "click" for e in evs) >= 14)
            )
            clicks = [e for e in calm_events if e["type"] == "click"]
            stepper = [c for c in clicks if c["props"].get("dead") is False]
            assert len(stepper) >= 14, clicks  # every stepper and picker click reacted
            assert all(c["props"].get("ignore_rage") for c in clicks if "dead" not in c["props"])
            time.sleep(5)  # the worker is live (it alerted above): give it the calm events too
            alerts = off_loop(consume(env.bootstrap, env.alerts, timeout=10, idle=2))
            calm_alerts = [
                json.loads(m.value)["data"]
                for m in alerts
                if json.loads(m.value)["data"]["session_id"] == calm
            ]
            assert calm_alerts == [], calm_alerts

            # never a field value
            everything = off_loop(consume(env.bootstrap, env.interactions, timeout=10, idle=2))
            assert all(SECRET_EMAIL.encode() not in (m.value or b"") for m in everything)
        finally:
            assert collector.stop() == 0, collector.tail()
            assert worker.stop() == 0, worker.tail()
