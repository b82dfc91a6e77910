"""The chaos suite (issue 10): every fault, on a real broker and Redis of its own, with the
models on, compared alert id by alert id with the offline replay.

Each test is one scenario: a few hundred simulated sessions (from 40 minutes
ago, in event order) produced up front on one partition, a fault injected when
a third of them went through the worker, then the checks of
:meth:`~tests.integration.chaos_report.Outcome.problems` (no alert twice,
rule-based alerts exact, every session's event count as in the replay, no
outbox left, the DLQ as expected, a quiet log) and the scenario's own. The
summary table is printed at the end of the run and written to
``.cache/chaos/summary.txt``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from .chaos import (
    ChaosRun,
    PrivateInfra,
    Raw,
    committed_offset,
    past_sessions,
    replay,
    run_scenario,
)
from .chaos_report import Outcome
from .harness import event_records, metric_sum

pytestmark = pytest.mark.integration

SESSIONS = 300
TWO_HOURS_MS = 2 * 3600 * 1000


@pytest.fixture(scope="module")
def infra() -> Iterator[PrivateInfra]:
    """The suite's own broker and persistent Redis, always stopped at the end."""
    private = PrivateInfra()
    try:
        private.start()
        yield private
    finally:
        private.stop()


def stream(seed: int, sessions: int = SESSIONS) -> list[Raw]:
    return list(event_records(past_sessions(sessions, seed)))


def assert_clean(outcome: Outcome) -> None:
    problems = outcome.problems()
    assert not problems, f"{outcome.name}:\n- " + "\n- ".join(problems)


def assert_fault_seen(outcome: Outcome, *gauges: str) -> None:
    r = outcome.readiness
    assert r.showed, f"{outcome.name}: /readyz stayed 200 through the fault ({dict(r.statuses)})"
    for gauge in gauges:
        assert gauge in r.gauges_down, f"{outcome.name}: {gauge} never 0 during the fault"
    assert outcome.recover_s is not None


# ------------------------------------------------------------------------ scenarios
def test_baseline_without_fault(infra: PrivateInfra) -> None:
    outcome = run_scenario(infra, "baseline", stream(seed=101))
    assert outcome.expected.alerts, "the stream must raise alerts"
    assert outcome.expected.examples, "sessions must close, so that the trainer learns"
    assert_clean(outcome)  # the training topic and the trainer's models included


def kill_9(run: ChaosRun) -> None:
    run.fault_started()
    run.worker.kill9()
    run.start_worker()
    run.fault_ended()


def test_worker_killed_with_sigkill(infra: PrivateInfra) -> None:
    # The alert budget's token buckets are model state, checkpointed with the
    # models (every 2 s here, 60 s by default): after a kill -9 they restart
    # from the checkpoint, so which alerts the budget suppresses can change,
    # friction alerts included (1 missing or extra in 3 of 6 runs with it on).
    # Training the models off the hot path (issue 11) moves that state out of
    # the crash's reach; until then this scenario is exact with the budget off.
    outcome = run_scenario(
        infra,
        "kill -9 worker (budget off)",
        stream(seed=102),
        kill_9,
        extra={"DISENGAGE_ALERT_BUDGET_PER_1000": "0"},
    )
    assert_clean(outcome)
    assert_fault_seen(outcome)


def kill_9_trainer(run: ChaosRun) -> None:
    deadline = time.time() + 30
    while json.loads(run.trainer.get("/readyz")[1]).get("version", 0) < 1:
        assert time.time() < deadline, f"the trainer published nothing\n{run.trainer.tail()}"
        time.sleep(0.1)
    run.fault_started()
    run.trainer.kill9()
    trainer = run.start_trainer()
    trainer.wait_ready()
    deadline = time.time() + 30
    while not (info := json.loads(trainer.get("/readyz")[1])).get("active"):
        assert time.time() < deadline, f"the restarted trainer never took over\n{trainer.tail()}"
        time.sleep(0.2)
    # it resumed from the version it published before the kill, not from scratch
    assert info["version"] >= 1 and info["offset"] > 0, info
    run.fault_ended()


def test_trainer_killed_with_sigkill(infra: PrivateInfra) -> None:
    # no standby here: the restarted trainer resumes from the last version it
    # published (the takeover by a standby is in test_trainer.py)
    outcome = run_scenario(infra, "kill -9 trainer", stream(seed=111), kill_9_trainer)
    assert_clean(outcome)


def sigterm(run: ChaosRun) -> None:
    run.fault_started()
    assert run.worker.stop() == 0, run.tail()
    run.start_worker()
    run.fault_ended()


def test_worker_stopped_with_sigterm(infra: PrivateInfra) -> None:
    outcome = run_scenario(infra, "SIGTERM worker", stream(seed=103), sigterm)
    assert_clean(outcome)
    assert_fault_seen(outcome)


def freeze_redis(run: ChaosRun) -> None:
    run.fault_started()
    run.infra.freeze_redis()
    try:
        time.sleep(20)
    finally:
        run.infra.thaw_redis()
    run.fault_ended()


def test_redis_frozen_for_20s(infra: PrivateInfra) -> None:
    outcome = run_scenario(infra, "Redis SIGSTOP 20s", stream(seed=104), freeze_redis)
    assert_clean(outcome)
    assert_fault_seen(outcome, "redis_up")
    assert outcome.metric("disengage_redis_errors_total") > 0


def worker_dropped_and_back(run: ChaosRun, seen: dict[str, float]) -> None:
    """SIGSTOP the worker past its group session timeout (10 s): a second
    worker takes the partition over and processes the whole input. Then
    SIGCONT: the first comes back dropped from the group, holding states it
    changed in memory (write-behind), and must write none of them over the
    new owner's (partition fencing). It is then stopped with SIGTERM."""
    old = run.worker
    assert old.proc is not None
    deadline = time.time() + 30
    # frozen while it holds changed states not written yet
    while metric_sum(old.metrics(), "disengage_dirty_states") < 1:
        assert time.time() < deadline, f"the worker never held a dirty state\n{old.tail()}"
        time.sleep(0.02)
    run.fault_started()
    os.kill(old.proc.pid, signal.SIGSTOP)
    try:
        new = run.start_worker()
        new.wait_ready(timeout=90, partitions=1)  # once the group dropped the frozen one
        group = f"group-{run.env.tag}"
        deadline = time.time() + 150
        while asyncio.run(committed_offset(run.env.bootstrap, group, run.env.interactions)) < len(
            run.messages
        ):
            assert time.time() < deadline, f"the new owner did not finish\n{new.tail()}"
            time.sleep(0.5)
    finally:
        os.kill(old.proc.pid, signal.SIGCONT)
    deadline = time.time() + 60
    while "claimed by another worker" not in old.log_path.read_text(errors="replace"):
        assert time.time() < deadline, f"the old worker never found its claim gone\n{old.tail()}"
        time.sleep(0.2)
    seen["fenced"] = metric_sum(old.metrics(), "disengage_partitions_fenced_total")
    assert old.stop() == 0, old.tail()
    run.fault_ended()


def test_worker_dropped_from_the_group_and_back(infra: PrivateInfra) -> None:
    # the longest flush interval: the frozen worker holds the most unwritten states
    seen: dict[str, float] = {}
    outcome = run_scenario(
        infra,
        "worker frozen past its session, then back",
        stream(seed=112),
        partial(worker_dropped_and_back, seen=seen),
        extra={"DISENGAGE_STATE_FLUSH_S": "25"},
    )
    assert_clean(outcome)
    assert seen["fenced"] == 1


def restart_redis(run: ChaosRun) -> None:
    run.fault_started()
    run.infra.stop_redis()
    time.sleep(5)
    run.infra.start_redis_again()
    run.fault_ended()


def test_redis_restarted_with_persistence(infra: PrivateInfra) -> None:
    outcome = run_scenario(infra, "Redis restart", stream(seed=105), restart_redis)
    assert_clean(outcome)
    assert_fault_seen(outcome)


def restart_broker(run: ChaosRun) -> None:
    run.fault_started()
    run.infra.kill_broker()
    time.sleep(8)  # plus ~8 s for the broker to start: ~16 s without a broker
    run.infra.restart_broker()
    run.fault_ended()


def test_broker_killed_and_restarted_on_its_data(infra: PrivateInfra) -> None:
    outcome = run_scenario(infra, "broker kill -9", stream(seed=106), restart_broker)
    assert_clean(outcome)
    assert_fault_seen(outcome, "kafka_up")


# --------------------------------------------------------------------- bad input
#: Kinds of bad message, how many of each, and the DLQ reason each must get
#: (None: whatever the core's parser says, e.g. random bytes).
BAD_KINDS: dict[str, tuple[int, str | None]] = {
    "random_bytes": (400, None),
    "truncated_json": (400, "not_json"),
    "nan_ts": (200, "bad_ts"),
    "huge_number": (200, "bad_ts"),
    "non_utf8": (200, "not_utf8"),
    "null_key": (200, "missing_field"),
    "tombstone": (200, "tombstone"),
    "70kb": (60, "too_large"),
    "nested_30k": (60, "not_json"),
    "nested_100k": (20, "too_large"),
}


def bad_message(kind: str, rng: random.Random, events: list[dict[str, Any]], i: int) -> Raw:
    key = f"bad-{i}".encode()
    event = rng.choice(events)
    if kind == "random_bytes":
        return key, rng.randbytes(rng.randint(1, 300))
    if kind == "truncated_json":
        text = json.dumps(event).encode()
        return event["session_id"].encode(), text[: rng.randint(1, len(text) - 2)]
    if kind in ("nan_ts", "huge_number"):
        number = "NaN" if kind == "nan_ts" else "1e400"
        return key, f'{{"session_id":"bad-{i}","ts":{number},"type":"click"}}'.encode()
    if kind == "non_utf8":
        return key, b'{"session_id":"bad-' + str(i).encode() + b'\xff\xfe","ts":1,"type":"click"}'
    if kind == "null_key":
        return None, b'{"ts":1767261600000,"type":"click"}'
    if kind == "tombstone":  # a real session's key: its state must not be touched
        return event["session_id"].encode(), None
    if kind == "70kb":
        big = dict(event, props={"blob": "x" * 70_000})
        return event["session_id"].encode(), json.dumps(big).encode()
    depth = 30_000 if kind == "nested_30k" else 100_000
    return key, b"[" * depth + b"]" * depth


def flood(events: list[dict[str, Any]], seed: int) -> tuple[list[Raw], dict[int, str]]:
    """The stream with the bad messages of :data:`BAD_KINDS` mixed in at random
    places; returns the messages and the kind of each bad one by offset."""
    rng = random.Random(seed)
    bad = [kind for kind, (n, _) in BAD_KINDS.items() for _ in range(n)]
    rng.shuffle(bad)
    good = event_records(events)
    total = len(good) + len(bad)
    at = set(rng.sample(range(total), len(bad)))
    messages: list[Raw] = []
    kinds: dict[int, str] = {}
    good_iter, bad_iter = iter(good), iter(bad)
    for offset in range(total):
        if offset in at:
            kind = next(bad_iter)
            kinds[offset] = kind
            messages.append(bad_message(kind, rng, events, offset))
        else:
            messages.append(next(good_iter))
    return messages, kinds


def test_bad_input_flood(infra: PrivateInfra) -> None:
    events = past_sessions(SESSIONS, 107)
    messages, kinds = flood(events, seed=7)
    outcome = run_scenario(infra, "bad-input flood", messages)
    dead = outcome.expected.dead
    for offset, kind in kinds.items():  # the replay's own reasons are the expected ones
        want = BAD_KINDS[kind][1]
        assert want is None or dead[offset] == want, (kind, dead[offset])
    assert_clean(outcome)
    got = outcome.dead_offsets()
    assert set(kinds) <= set(got), f"{len(set(kinds) - set(got))} bad messages not in the DLQ"
    assert max(got.values()) == 1, "a message was dead-lettered twice"
    assert outcome.expected.valid == len(events)


# ----------------------------------------------------------------------- bad clocks
def one_event_fast(events: list[dict[str, Any]], ms: int) -> list[dict[str, Any]]:
    """The event in the middle of the session that is mid-way through the stream, ``ms`` fast."""
    out = list(events)
    by_session: dict[str, list[int]] = {}
    for i, e in enumerate(out):
        by_session.setdefault(e["session_id"], []).append(i)
    for i in range(len(out) // 2, len(out)):
        positions = by_session[out[i]["session_id"]]
        if len(positions) >= 9 and positions[len(positions) // 2] == i:
            out[i] = dict(out[i], ts=out[i]["ts"] + ms)
            return out
    raise AssertionError("no mid-stream session to skew")


def one_session_fast(events: list[dict[str, Any]], ms: int) -> list[dict[str, Any]]:
    """Every event of the last session of 10+ events to start in the first third of
    the stream, ``ms`` fast."""
    first: dict[str, int] = {}
    sizes: Counter[str] = Counter()
    for i, e in enumerate(events):
        first.setdefault(e["session_id"], i)
        sizes[e["session_id"]] += 1
    _, sid = max((i, s) for s, i in first.items() if sizes[s] >= 10 and i < len(events) // 3)
    return [dict(e, ts=e["ts"] + ms) if e["session_id"] == sid else e for e in events]


@pytest.mark.parametrize("skew", ["one event", "one session"])
def test_client_clock_two_hours_fast(infra: PrivateInfra, skew: str) -> None:
    events = past_sessions(SESSIONS, 108)
    skewed = (one_event_fast if skew == "one event" else one_session_fast)(events, TWO_HOURS_MS)
    outcome = run_scenario(infra, f"clock +2h, {skew}", event_records(skewed))
    honest = replay(event_records(events), outcome.config)
    assert outcome.expected.timeouts <= honest.timeouts + 1, (
        f"the replay closed {outcome.expected.timeouts} sessions by timeout, "
        f"{honest.timeouts} without the fast clock"
    )
    assert_clean(outcome)
    closed = outcome.metric("disengage_sessions_closed_total", outcome="timeout")
    assert closed == outcome.expected.timeouts, (
        f"the worker closed {closed:.0f} sessions by timeout, the replay "
        f"{outcome.expected.timeouts}: a mass closure"
    )
    assert outcome.metric("disengage_clock_ahead_total") > 0


# ------------------------------------------------------------------- failed produce
async def set_max_message_bytes(bootstrap: str, topic: str, value: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"max.message.bytes": str(value)}
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)
        (response,) = await admin.alter_configs([resource])
        for error_code, message, *_ in response.resources:
            assert error_code == 0, f"alter_configs of {topic}: {error_code} {message}"
    finally:
        await admin.close()


#: The broker's default max.message.bytes, set back after the fault.
KAFKA_MAX_MESSAGE_BYTES = 1_048_588


def refuse_alerts(run: ChaosRun) -> None:
    """For 15 s the broker refuses every alert (MessageSizeTooLarge: the alerts
    topic takes at most 64 bytes a record), while the dead letters still go through.

    Raising the topic's min.insync.replicas to 2 does not do it on this single
    broker: Kafka 3.9.1 acknowledged acks=all produces to a one-replica topic with
    min.insync.replicas=2 (checked when the suite was written)."""
    run.fault_started()
    asyncio.run(set_max_message_bytes(run.env.bootstrap, run.env.alerts, 64))
    try:
        time.sleep(15)
    finally:
        asyncio.run(
            set_max_message_bytes(run.env.bootstrap, run.env.alerts, KAFKA_MAX_MESSAGE_BYTES)
        )
    run.fault_ended()


def test_alert_produce_fails_for_15s(infra: PrivateInfra) -> None:
    outcome = run_scenario(
        infra,
        "alert produce fails",
        stream(seed=109),
        refuse_alerts,
        extra={"DISENGAGE_PRODUCE_TIMEOUT_S": "5"},
    )
    assert_clean(outcome)
    assert_fault_seen(outcome)
    assert outcome.metric("disengage_produce_failures_total", what="alerts") > 0
