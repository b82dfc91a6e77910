"""The browser tracker's client behaviour in Debian's Chromium, against a recording endpoint.

The endpoint here only records what the browser sends and answers as told
(202, or 429 to test the backoff): what it checks is the tracker itself
(consent, Do-Not-Track and GPC, exclusions, no field values, retries, beacon
chunks). The real collector, Kafka and the worker: tests/integration/test_browser.py.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from .harness import TRACKER_BUNDLE, free_port

pytestmark = pytest.mark.integration

PAGE = """<!doctype html><html><body>
<button id="buy" type="button">Buy</button>
<input id="name" name="full_name" value="">
<div contenteditable="true" id="notes">notes</div>
<form id="signup" onsubmit="return false"><input name="name"><button id="join">Join</button></form>
<div style="height:3000px"></div>
<script src="/dg/t.js" data-endpoint="{origin}/dg" data-key="wk_test_0123456789" {attrs}></script>
</body></html>"""


class Recorder:
    """Serves the page and the tracker; records every POST (body, size, content type)."""

    def __init__(self, attrs: str = "") -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[int] = []  # statuses to answer, in order (then 202)
        self.port = free_port()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/dg/t.js"):
                    body, kind = TRACKER_BUNDLE.read_bytes(), "application/javascript"
                else:
                    body = PAGE.format(origin=recorder.origin, attrs=attrs).encode()
                    kind = "text/html"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = recorder.answers.pop(0) if recorder.answers else 202
                recorder.requests.append(
                    {
                        "status": status,
                        "size": len(raw),
                        "type": self.headers.get("Content-Type"),
                        "events": json.loads(raw),
                    }
                )
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def delivered(self) -> list[dict[str, Any]]:
        """Events of the requests answered 202."""
        return [e for r in self.requests if r["status"] == 202 for e in r["events"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def visit(browser: Any, recorder: Recorder, init_script: str = "") -> Any:
    context = browser.new_context()
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    page.goto(recorder.origin + "/shop")
    return page


def test_nothing_is_sent_before_consent(browser: Any) -> None:
    recorder = Recorder('data-consent="required"')
    try:
        page = visit(browser, recorder)
        page.click("#buy")
        page.wait_for_timeout(1200)
        page.evaluate("window.disengage.flush()")
        page.wait_for_timeout(300)
        assert recorder.requests == []
        page.evaluate("window.disengage.consent(true)")
        page.click("#buy")
        page.wait_for_timeout(1200)
        page.evaluate("window.disengage.flush()")
        page.wait_for_timeout(300)
        types = [e["type"] for e in recorder.delivered()]
        assert types == ["page_view", "click"]  # only what came after the consent
    finally:
        recorder.close()


@pytest.mark.parametrize(
    "signal",
    [
        "Object.defineProperty(navigator, 'doNotTrack', {get: () => '1'})",
        "Object.defineProperty(navigator, 'globalPrivacyControl', {get: () => true})",
    ],
)
def test_do_not_track_and_gpc_are_honoured_when_configured(browser: Any, signal: str) -> None:
    honoured = Recorder('data-respect-dnt="true"')
    ignored = Recorder()
    try:
        for recorder in (honoured, ignored):
            page = visit(browser, recorder, signal)
            page.click("#buy")
            page.wait_for_timeout(1200)
            page.evaluate("window.disengage && window.disengage.flush()")
            page.wait_for_timeout(300)
        assert honoured.requests == []
        assert [e["type"] for e in ignored.delivered()] == ["page_view", "click"]
    finally:
        honoured.close()
        ignored.close()


def test_text_entry_modifier_clicks_and_field_values_stay_in_the_page(browser: Any) -> None:
    recorder = Recorder()
    try:
        page = visit(browser, recorder)
        page.click("#name")
        page.keyboard.type("Jane Secret-Doe")
        page.click("#notes")
        page.click("#buy", modifiers=["Control"])
        page.click("#buy")  # the one click that counts; moves the focus off the field
        page.wait_for_timeout(1200)
        page.evaluate("window.disengage.flush()")
        page.wait_for_timeout(300)
        events = recorder.delivered()
        clicks = [e for e in events if e["type"] == "click"]
        assert len(clicks) == 1 and clicks[0]["props"]["tag"] == "button"
        typed = [e for e in events if e["type"] == "form_input"]
        assert typed and typed[0]["props"] == {"field": "full_name", "inputs": 15}
        assert "Secret" not in json.dumps(events)
        assert all(r["type"].startswith("text/plain") for r in recorder.requests)  # no preflight
    finally:
        recorder.close()


def test_a_429_backs_off_and_the_retry_delivers_every_event_once(browser: Any) -> None:
    recorder = Recorder()
    recorder.answers = [429]
    try:
        page = visit(browser, recorder)
        for _ in range(3):
            page.mouse.wheel(0, 500)
            page.wait_for_timeout(250)
        page.evaluate("window.disengage.flush()")
        page.wait_for_timeout(300)
        assert [r["status"] for r in recorder.requests] == [429]
        page.wait_for_timeout(1500)  # Retry-After: 1
        page.evaluate("window.disengage.flush()")
        page.wait_for_timeout(300)
        assert recorder.requests[-1]["status"] == 202
        refused = recorder.requests[0]["events"]
        ids = [e["event_id"] for e in recorder.delivered()]
        assert len(ids) == len(set(ids))
        assert {e["event_id"] for e in refused} <= set(ids)
    finally:
        recorder.close()


def test_leaving_sends_the_queue_by_beacon_in_chunks_under_16_kb(browser: Any) -> None:
    recorder = Recorder()
    try:
        page = visit(browser, recorder)
        # 150 events of ~230 bytes: over two beacons' 16 KB, within the 64 KB
        # browsers let a closing page send (keepalive fetches and beacons together)
        page.evaluate(
            "for (let i = 0; i < 150; i++)"
            " window.disengage.track('custom', {event: 'x'.repeat(100)})"
        )
        page.close(run_before_unload=True)
        for _ in range(30):
            if sum(len(r["events"]) for r in recorder.requests) >= 152:
                break
            threading.Event().wait(0.1)
        sizes = [r["size"] for r in recorder.requests]
        events = [e for r in recorder.requests for e in r["events"]]
        ids = [e["event_id"] for e in events]
        # the page view, every custom event and the tab hidden by the close
        assert len(ids) == len(set(ids)) == 152, (len(ids), sizes)
        assert {"type": "visibility", "props": {"state": "hidden"}}.items() <= {
            k: v for e in events if e["type"] == "visibility" for k, v in e.items()
        }.items()
        assert len(sizes) >= 3 and max(sizes) < 16_000, sizes
    finally:
        recorder.close()


def test_the_bundle_is_under_5_kb_gzipped() -> None:
    import gzip

    assert len(gzip.compress(TRACKER_BUNDLE.read_bytes(), 9)) < 5 * 1024


def test_forms_are_named_by_attribute_and_page_views_carry_their_load_time(browser: Any) -> None:
    recorder = Recorder()
    try:
        page = visit(browser, recorder)
        page.click("#join")  # a form with an input called "name" (form.name is that input)
        page.wait_for_timeout(1200)
        page.evaluate("window.disengage.flush()")
        page.wait_for_timeout(300)
        events = recorder.delivered()
        (submit,) = [e for e in events if e["type"] == "form_submit"]
        assert submit["props"] == {"field": "signup"}
        (view,) = [e for e in events if e["type"] == "page_view"]
        assert view["page"] == "/shop" and view["props"]["load_ms"] >= 0
    finally:
        recorder.close()
