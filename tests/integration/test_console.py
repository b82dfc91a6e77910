"""The marketing console in Debian's Chromium, fed by the embedded demo.

``disengage demo`` runs as a user starts it (simulated traffic, in process,
no infrastructure), fast, with its console on a free port. The page must
show alerts live, and the trust map, validation, uplift and hotspot panels
must render data, with no console error. Screenshots go to
``.cache/test-artifacts/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from .harness import ROOT, free_port

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / ".cache" / "test-artifacts"


def snapshot(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "api/snapshot", timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def test_the_console_shows_the_demo_live(browser: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo", "--duration", "120", "--speed", "3000",
         "--plain", "--no-browser", "--console-port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        snap: dict[str, Any] = {}
        while time.monotonic() < deadline:  # enough closed sessions for every panel
            try:
                snap = snapshot(url)
            except OSError:
                time.sleep(0.5)
                continue
            if snap["validation"]["trust_auc"] is not None and snap["uplift"] and snap["live"]:
                break
            time.sleep(1)
        assert snap.get("validation", {}).get("trust_auc") is not None, snap.get("validation")
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.wait_for_selector("#alerts li.alert", timeout=15_000)
        first = page.locator("#alerts li.alert").count()
        assert first >= 1
        # live: new alerts keep arriving while the page is open
        seq = snapshot(url)["alert_seq"]
        page.wait_for_function(
            f"document.getElementById('status').textContent.includes('alerts') && "
            f"Number(document.getElementById('status').textContent.split('·').pop()"
            f".replace(/[^0-9]/g, '')) > {seq}",
            timeout=20_000,
        )
        assert page.locator("#alerts li.alert .action").first.text_content()
        assert page.locator("#trust-table tbody tr").count() >= 5
        for tab in ("stage", "signal"):
            page.click(f".tabs button[data-dim='{tab}']")
            assert page.locator("#trust-table tbody tr").count() >= 3
        figures = page.text_content("#validation-figures") or ""
        assert "trust 0." in figures and "activity 0." in figures, figures
        assert page.locator("#uplift-table tbody tr").count() >= 1
        page.select_option("#f-kind", "trust_loss")
        kinds = page.locator("#alerts li.alert .kind").all_text_contents()
        assert kinds and set(kinds) == {"trust loss"}
        page.select_option("#f-kind", "")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 800})
        page.evaluate("document.body.style.zoom = '0.8'")  # a laptop screen at 80% zoom
        page.screenshot(path=str(ARTIFACTS / "console-laptop-80.png"))
        assert errors == [], errors
        page.close()
    finally:
        demo.terminate()
        out, _ = demo.communicate(timeout=30)
    assert f"console: {url}" in out


def test_the_console_of_a_deployment_reads_its_topics(env: Any) -> None:
    """``disengage console`` on a real broker: alerts from the alerts topic,
    closed sessions (outcomes, trust marks, prefix scores, holdout groups) from the
    training topic."""
    import asyncio
    import hashlib
    from array import array

    from detectors.alerts import Alert, Reason
    from detectors.signals import SIGNALS
    from detectors.training import Example, example_event

    from .harness import Worker, produce

    def alert(sid: str, treatment: str) -> bytes:
        return json.dumps(
            Alert(
                kind="trust_loss", severity="high", score=5.0, threshold=4.0, subject=sid,
                episode=1, session_id=sid, user_hash=None, stage="decide",
                page="/checkout/step-2", reasons=(Reason("dead_click", 3, 0, 1, "3 dead clicks"),),
                suggested_action="open chat", trigger_event_id=None, event_time=1_767_261_660_600,
                model_version="m@1", rule="friction_pileup", extra={"treatment": treatment},
            ).to_cloudevent("urn:test")
        ).encode()  # fmt: skip

    counts = tuple(1 if name == "dead_click" else 0 for name in SIGNALS)
    examples = []
    for i in range(80):  # alerted sessions: treated convert 50%, control 10%
        treatment = "control" if i % 2 else "treated"
        converted = (i // 2) % 10 < (5 if treatment == "treated" else 1)
        # the dead click cost 0.1 of trust on the checkout; the prefix score
        # ranks converters first, the events so far do not
        marks = (("page_type:checkout", 2, -0.1, 1), ("signal:dead_click", 1, -0.1, 1),
                 ("stage:decide", 2, -0.1, 1))
        prefix = (0.7 if converted else 0.3, 4, 20.0)
        examples.append(
            Example(
                f"s{i}", 0, 9, 9, "converted" if converted else "exit",
                ((1, array("f", [0.0])),), (), counts, treatment, ("trust_loss/open chat",),
                marks, prefix,
            )
        )  # fmt: skip
    training = [
        (e.sid.encode(), json.dumps(example_event(e, "urn:test", "t")).encode()) for e in examples
    ]
    alerts = [(b"open-1", alert("open-1", "treated")), (b"s0", alert("s0", "treated"))]
    asyncio.run(produce(env.bootstrap, env.alerts, alerts))
    asyncio.run(produce(env.bootstrap, env.training, training + training[:10]))  # 10 copies
    port = free_port()
    console = Worker(env, "console", ("console", "--port", str(port)))
    console.start()
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        snap: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                snap = snapshot(url)
                if snap["sessions_closed"] >= 80 and snap["alert_seq"] >= 2:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert snap["sessions_closed"] == 80 and snap["alert_seq"] == 2, snap
        # s0 has closed; the page gets a reference of the session id, never the id
        assert [a["session"] for a in snap["at_risk"]] == [
            hashlib.sha256(b"open-1").hexdigest()[:12]
        ]
        assert "open-1" not in json.dumps(snap)
        overall = next(r for r in snap["uplift"] if r["dimension"] == "all")
        assert overall["treated"] == {"sessions": 40, "converted": 20}
        assert overall["control"] == {"sessions": 40, "converted": 4}
        assert overall["difference"] == 0.4 and overall["lower"] < 0.4 < overall["upper"]
        rows = {(r["dimension"], r["name"]): r for r in snap["trust_map"]}
        assert set(rows) == {("page_type", "checkout"), ("signal", "dead_click"),
                             ("stage", "decide")}  # fmt: skip
        dead = rows[("signal", "dead_click")]
        assert dead["sessions_hit"] == 80 and dead["trust_change"] == -0.1
        assert rows[("page_type", "checkout")]["occurrences"] == 160
        validation = snap["validation"]
        assert validation["window_sessions"] == 80
        assert (validation["trust_auc"], validation["activity_auc"]) == (1.0, 0.5)
        assert validation["over_time"] == [] and validation["calibration"][7]["sessions"] == 24
    finally:
        console.stop()
