"""The streaming worker end to end on the real Kafka broker and Redis.

The model-based alert rules are switched off here (their warm-up thresholds
are set out of reach) so that the pipeline can be checked exactly against the
offline detector: the transparent friction rule must raise the very same
alerts, with the very same ids, whether the events go through Kafka, Faust
and Redis or through an in-memory replay. The models are covered by the unit
tests and the benchmarks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from typing import Any

import jsonschema
import pytest

from detectors.alerts import ALERT_JSON_SCHEMA
from detectors.session import SessionState

from .harness import (
    Env,
    Worker,
    consume,
    event_records,
    expected_counts,
    friction_oracle,
    load_states,
    metric_sum,
    produce,
    simulated,
    wait_settled,
)

pytestmark = pytest.mark.integration


def alert_events(messages: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(m.value) for m in messages]


async def test_end_to_end_alerts_state_and_metrics(env: Env) -> None:
    events, sim = simulated(300, seed=21)
    expected = friction_oracle(events)
    assert expected, "the simulated sessions must contain friction"
    worker = Worker(env).start()
    try:
        worker.wait_ready(partitions=env.partitions)
        produced = await produce(env.bootstrap, env.interactions, event_records(events))

        def done(messages: list[Any]) -> bool:
            ids = {json.loads(m.value)["id"] for m in messages}
            return expected <= ids

        messages = await consume(env.bootstrap, env.alerts, until=done, timeout=90)
        alerts = alert_events(messages)
        validator = jsonschema.Draft202012Validator(ALERT_JSON_SCHEMA)
        for alert in alerts:
            validator.validate(alert)
            assert alert["producedat"]
        friction = {a["id"] for a in alerts if a["data"]["rule"] == "friction_pileup"}
        assert friction == expected
        assert {a["data"]["kind"] for a in alerts} == {"trust_loss"}
        # every alerted session had friction injected by the simulator
        for a in alerts:
            truth = sim.truth[a["subject"]]
            assert any(ep.kind == "friction" for ep in truth.episodes), truth.persona
        # alerts are keyed by session id
        assert all(m.key.decode() == json.loads(m.value)["subject"] for m in messages)
        # the metrics saw every event and every alert
        deadline = time.time() + 15
        while time.time() < deadline:
            samples = worker.metrics()
            if metric_sum(samples, "disengage_events_total") >= produced:
                break
            time.sleep(0.5)
        # Redis holds every session with exactly its events, and every outbox
        # (alerts, and the training examples of closed sessions) is delivered:
        # the last batch may still be between its save and its produce
        per_session = Counter(e["session_id"] for e in events)
        states = await wait_settled(env, expected_counts(events), timeout=45)
        assert set(states) == set(per_session)
        converted = {sid for sid, t in sim.truth.items() if t.converted}
        counts = expected_counts(events)  # events after a purchase are refused
        for sid, state in states.items():
            if sid in converted:
                assert state.outcome == "converted"
            assert state.n_events == counts[sid]
            assert not state.outbox
        assert metric_sum(samples, "disengage_events_total") == produced
        assert metric_sum(samples, "disengage_alerts_total", kind="trust_loss") == len(expected)
        assert metric_sum(samples, "disengage_event_to_alert_seconds_count") == len(alerts)
        assert metric_sum(samples, "disengage_batch_size_count") > 0
        assert metric_sum(samples, "disengage_sessions_closed_total", outcome="converted") == len(
            converted
        )
        assert worker.get("/healthz")[0] == 200
    finally:
        assert worker.stop() == 0, worker.tail()


async def test_alerts_held_back_by_the_budget_are_counted(env: Env) -> None:
    # a tiny budget, and model-based rules live early (the offline detector
    # suppresses dozens of alerts over these sessions split into 4 partitions)
    env.extra.update(
        {
            "DISENGAGE_ALERT_BUDGET_PER_1000": "1",
            "DISENGAGE_HESITATION_WARMUP": "20",
            "DISENGAGE_TRUST_MIN_CLOSED": "10",
        }
    )
    events, _ = simulated(300, seed=41)
    worker = Worker(env).start()
    try:
        worker.wait_ready(partitions=env.partitions)
        produced = await produce(env.bootstrap, env.interactions, event_records(events))
        deadline = time.time() + 90
        while time.time() < deadline:
            samples = worker.metrics()
            if metric_sum(samples, "disengage_events_total") >= produced:
                break
            time.sleep(0.5)
        assert metric_sum(samples, "disengage_events_total") >= produced
        assert metric_sum(samples, "disengage_alerts_suppressed_total") > 0
    finally:
        assert worker.stop() == 0, worker.tail()


async def test_bad_input_goes_to_the_dlq_and_the_worker_stays_up(env: Env) -> None:
    worker = Worker(env).start()
    try:
        worker.wait_ready(partitions=env.partitions)
        now = int(time.time() * 1000)

        def ok(n: int) -> bytes:
            event = {
                "session_id": "good",
                "ts": now + n,
                "type": "scroll",
                "event_id": f"g{n}",
                "props": {"scroll_pct": n},
            }
            return json.dumps(event).encode()

        bad = {
            "not_utf8": b"\xff\x00garbage{",
            "not_json": b"garbage{not json",
            "bad_field_type": json.dumps(
                {"session_id": "x", "ts": now, "type": "click", "props": [1, 2]}
            ).encode(),
            "too_large": json.dumps(
                {"session_id": "x", "ts": now, "type": "custom", "props": {"pad": "y" * 70_000}}
            ).encode(),
            "unknown_type": json.dumps({"session_id": "x", "ts": now, "type": "teleport"}).encode(),
            "missing_field": json.dumps({"ts": now, "type": "click"}).encode(),
        }
        records: list[tuple[bytes | None, bytes]] = [(b"good", ok(1))]
        for value in bad.values():
            records += [(b"good", value), (b"good", ok(len(records) + 1))]
        await produce(env.bootstrap, env.interactions, records)
        dead = await consume(env.bootstrap, env.dlq, until=lambda m: len(m) >= len(bad), timeout=60)
        assert len(dead) == len(bad)
        by_reason = {dict(m.headers)["dlq.reason"].decode(): m for m in dead}
        assert set(by_reason) == set(bad)
        for reason, message in by_reason.items():
            headers = dict(message.headers)
            assert message.value == bad[reason]  # the original bytes, untouched
            assert headers["dlq.source.topic"].decode() == env.interactions
            assert int(headers["dlq.source.offset"].decode()) >= 0
            assert int(headers["dlq.source.partition"].decode()) >= 0
            assert float(headers["dlq.time"].decode()) > 0
        deadline = time.time() + 40  # written up to DISENGAGE_STATE_FLUSH_S after its events
        state = None
        while time.time() < deadline:
            state = (await load_states(env, ["good"])).get("good")
            if state is not None and state.n_events == len(bad) + 1:
                break
            time.sleep(0.3)
        assert state is not None and state.n_events == len(bad) + 1
        samples = worker.metrics()
        for reason in bad:
            assert metric_sum(samples, "disengage_invalid_events_total", reason=reason) == 1
        assert worker.get("/healthz")[0] == 200
        assert worker.get("/readyz")[0] == 200
    finally:
        assert worker.stop() == 0, worker.tail()


def changed_fields(before: bytes, after: bytes) -> list[str]:
    """The fields of a session state that differ between two encodings."""
    a, b = SessionState.from_bytes(before), SessionState.from_bytes(after)
    return [name for name in SessionState._FIELD_NAMES if getattr(a, name) != getattr(b, name)]


async def test_duplicate_delivery_changes_nothing(env: Env) -> None:
    events, _ = simulated(120, seed=5)
    expected = friction_oracle(events)
    assert expected
    # event time must not follow the wall clock between the two reads (an idle
    # partition's does after the idle grace, and its sweep then ticks quiet sessions)
    env.extra["DISENGAGE_IDLE_GRACE_S"] = "600"
    worker = Worker(env).start()
    try:
        worker.wait_ready(partitions=env.partitions)
        await produce(env.bootstrap, env.interactions, event_records(events))
        first = await consume(env.bootstrap, env.alerts, timeout=60, idle=8)
        per_session = Counter(e["session_id"] for e in events)
        # every state written (write-behind: up to DISENGAGE_STATE_FLUSH_S after its
        # events), then two sweeps (1 s here) more: the hesitation checks of the quiet
        # sessions, found through the index written with their states, have run
        await wait_settled(env, expected_counts(events), timeout=60)
        deadline = time.time() + 30
        while metric_sum(worker.metrics(), "disengage_dirty_states") > 0:
            assert time.time() < deadline, worker.tail()
            time.sleep(0.5)
        time.sleep(2.5)
        settled = await load_states(env, per_session)
        before = {sid: s.to_bytes() for sid, s in settled.items()}
        # the same events again, as a producer retry or a replayed topic would send them
        await produce(env.bootstrap, env.interactions, event_records(events))
        # every repeated event was recognised: as a duplicate, or refused (after
        # its session's close, or late once its id left the de-duplication window)
        deadline, recognised = time.time() + 60, 0.0
        while time.time() < deadline:
            samples = worker.metrics()
            recognised = sum(
                metric_sum(samples, "disengage_event_status_total", status=status)
                for status in ("duplicate", "after_close", "late")
            )
            if recognised >= len(events):
                break
            time.sleep(0.5)
        assert recognised >= len(events)
        after = {sid: s.to_bytes() for sid, s in (await load_states(env, per_session)).items()}
        assert set(after) == set(before)
        changed = {
            sid: changed_fields(before[sid], after[sid])
            for sid in before
            if before[sid] != after[sid]
        }
        assert not changed, f"states changed by duplicates: {changed}"
        alerts = await consume(env.bootstrap, env.alerts, timeout=20, idle=4)
        ids = [json.loads(m.value)["id"] for m in alerts]
        assert len(ids) == len(set(ids)) == len(first)
        assert set(ids) >= expected
    finally:
        assert worker.stop() == 0, worker.tail()


async def test_kcat_produces_events_and_consumes_alerts(env: Env) -> None:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    assert kcat, "kcat is missing: `make test` installs it (apt-get install kcat)"
    events, _ = simulated(150, seed=9)
    expected = friction_oracle(events)
    assert expected
    lines = "\n".join(f"{e['session_id']}\t{json.dumps(e)}" for e in events) + "\n"
    worker = Worker(env).start()
    try:
        worker.wait_ready(partitions=env.partitions)
        subprocess.run(
            [kcat, "-b", env.bootstrap, "-t", env.interactions, "-P", "-K", "\t"],
            input=lines.encode(),
            check=True,
            timeout=60,
        )
        deadline = time.time() + 90
        got: set[str] = set()
        while time.time() < deadline and not expected <= got:
            out = subprocess.run(
                [
                    kcat,
                    "-b",
                    env.bootstrap,
                    "-t",
                    env.alerts,
                    "-C",
                    "-e",
                    "-o",
                    "beginning",
                    "-f",
                    "%k\t%s\n",
                ],
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout.decode()
            got = set()
            for line in out.splitlines():
                key, _, value = line.partition("\t")
                alert = json.loads(value)
                assert alert["subject"] == key
                got.add(alert["id"])
            time.sleep(1)
        assert expected <= got
    finally:
        assert worker.stop() == 0, worker.tail()


async def test_a_worker_watching_hotspots_per_partition_runs(env: Env) -> None:
    """With DISENGAGE_HOTSPOT_SCOPE=partition no page visits go through Kafka;
    the worker still starts (Faust keeps its agent), processes and stops."""
    events, _ = simulated(60, seed=23)
    env.extra["DISENGAGE_HOTSPOT_SCOPE"] = "partition"
    worker = Worker(env).start()
    try:
        worker.wait_ready(partitions=env.partitions)
        produced = await produce(env.bootstrap, env.interactions, event_records(events))
        deadline = time.time() + 60
        while metric_sum(worker.metrics(), "disengage_events_total") < produced:
            assert time.time() < deadline, worker.tail()
            time.sleep(0.5)
        samples = worker.metrics()
        assert metric_sum(samples, "disengage_page_visits_total", side="sent") == 0
        assert worker.get("/readyz")[0] == 200
    finally:
        assert worker.stop() == 0, worker.tail()
