"""The chaos suite's machinery (issue 10): faults injected into a real worker, checked
against the offline replay.

The suite runs on a Kafka broker and a persistent redis-server of its own
(:class:`PrivateInfra`, in ``.cache/chaos/run-*``), never on the session-wide
ones that ``deploy/local/infra.py run`` exports, because it kills and
restarts them. Each scenario (:class:`ChaosRun`) gets its own topics, with one
partition so that the worker sees the events in the very order of the replay,
its own consumer group and its own Redis database. A trainer runs next to the
worker: every scenario also checks that the training topic holds exactly the
replay's labelled examples and that the trainer's last version equals the core
learning the same records (:func:`~tests.integration.training.training_problems`).
The model-based alert rules are out of reach: which version scores an event
depends on when the trainer published it, which no replay can reproduce.

Expected output is :func:`replay` over the same messages in the same order
with the worker's own :class:`~detectors.config.DetectorConfig`: its alert
ids, each session's event count and what it dead-letters. :meth:`ChaosRun.finish`
collects what the worker did (alerts and DLQ topics read to their end, the
states in Redis, metrics, the readiness samples taken every
:data:`POLL_S` seconds and the worker logs) into an :class:`Outcome`, whose
:meth:`~Outcome.problems` are the checks every scenario must pass. Each outcome
is one row of the suite's summary (:func:`record`, printed by the integration
conftest and written to ``.cache/chaos/summary.txt``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, cast

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from detectors.alerts import Alert
from detectors.config import DetectorConfig
from detectors.detector import DEAD_LETTER_STATUSES, Detector, StepResult
from detectors.events import Event, EventParser, InvalidEvent
from detectors.offline.runner import OfflineRunner
from stream.settings import Settings

from .chaos_report import Expected, Outcome, Sample, family, log_stats, readiness_report, record
from .harness import (
    ROOT,
    Env,
    Worker,
    create_topics,
    flush,
    load_states,
    metric_sum,
    produce,
    simulated,
)
from .training import training_problems

CHAOS_DIR = ROOT / ".cache" / "chaos"
#: Messages as produced: (key, value); a ``None`` value is a tombstone.
Raw = tuple[bytes | None, bytes | None]
#: Seconds between two readiness samples of the watched worker.
POLL_S = 0.5
#: The fault is injected once this share of the valid events was processed.
INJECT_AT = 0.35
#: Worker settings of every scenario, on top of the harness's (1 s sweeps, 2 s
#: checkpoints). The replay has no wall clock: the idle grace is set past the
#: scenario's length so that a stall (a fault) never lets the worker's clock
#: run ahead of the stream's, which the replay would never do.
CHAOS_ENV = {
    "DISENGAGE_IDLE_GRACE_S": "600",
    "DISENGAGE_TRUST_MIN_CLOSED": "100000000",
    "DISENGAGE_HESITATION_WARMUP": "100000000",
    "DISENGAGE_TRAINER_PUBLISH_S": "1",
    "DISENGAGE_MODEL_POLL_S": "0.5",
}
_databases = itertools.cycle(range(16))


# -------------------------------------------------------------------- infrastructure
def load_infra() -> ModuleType:
    """``deploy/local/infra.py`` (not a package) imported by path."""
    spec = importlib.util.spec_from_file_location(
        "disengage_local_infra", ROOT / "deploy" / "local" / "infra.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PrivateInfra:
    """A broker and a persistent (append-only) redis-server for the suite alone.

    Started and restarted from the test's main thread: infra.py ties them to
    the thread that started them (PR_SET_PDEATHSIG), so they die with pytest.
    """

    def __init__(self) -> None:
        self.infra = load_infra()
        for old in CHAOS_DIR.glob("run-*"):  # logs of earlier runs, kept a day
            if time.time() - old.stat().st_mtime > 86_400:
                shutil.rmtree(old, ignore_errors=True)
        self.run = CHAOS_DIR / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        (self.run / "logs").mkdir(parents=True)
        self.kafka: Any = None
        self.redis: Any = None
        self.kafka_info: dict[str, Any] = {}
        self.redis_info: dict[str, Any] = {}

    def start(self) -> None:
        version = self.infra.DEFAULT_KAFKA_VERSION
        self.kafka, self.kafka_info = self.infra.start_kafka(self.run, version, tied=True)
        self.redis, self.redis_info = self.infra.start_redis(self.run, tied=True, persistent=True)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_info['port']}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_info['port']}/0"

    def kill_broker(self) -> None:
        os.killpg(self.kafka.pid, signal.SIGKILL)
        self.kafka.wait()

    def restart_broker(self) -> None:
        self.kafka, self.kafka_info = self.infra.restart_kafka(self.run, self.kafka_info, True)

    def freeze_redis(self) -> None:
        os.kill(self.redis.pid, signal.SIGSTOP)

    def thaw_redis(self) -> None:
        os.kill(self.redis.pid, signal.SIGCONT)

    def stop_redis(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits (a clean SHUTDOWN)."""
        self.redis.send_signal(signal.SIGTERM)
        self.redis.wait(timeout=30)

    def start_redis_again(self) -> None:
        port = self.redis_info["port"]
        self.redis, self.redis_info = self.infra.start_redis(
            self.run, tied=True, persistent=True, port=port
        )

    def stop(self) -> None:
        for proc in (self.kafka, self.redis):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a frozen Redis ignores SIGTERM
                self.infra.stop_pid(proc.pid, proc)
        for data in ("data", "redis"):
            shutil.rmtree(self.run / data, ignore_errors=True)


# ------------------------------------------------------------------------- the input
def past_sessions(sessions: int, seed: int) -> list[dict[str, Any]]:
    """``simulated(sessions, seed)`` without the sessions that end in the future
    (the simulator's returning visitors come back hours later): a live stream
    holds no event from the future, and a jump of hours between two legitimate
    events would close every open session in the replay and the worker alike."""
    events, _ = simulated(sessions, seed)
    cutoff = int(time.time() * 1000) - 60_000
    last: dict[str, int] = {}
    for e in events:
        last[e["session_id"]] = e["ts"]
    return [e for e in events if last[e["session_id"]] < cutoff]


def replay(messages: Sequence[Raw], config: DetectorConfig) -> Expected:
    """The offline runner over ``messages`` in order, as the worker would see them."""
    parser = EventParser(config)
    counts: dict[str, int] = {}
    statuses: Counter[str] = Counter()
    last: list[str] = []

    def on_step(event: Event, result: StepResult) -> None:
        statuses[result.status] += 1
        last[:] = [result.status]
        if result.status == "applied":
            counts[event.session_id] = result.state.n_events

    detector = Detector(config, learn=False)  # the worker learns nothing
    runner = OfflineRunner(detector, on_step=on_step)
    alerts: list[Alert] = []
    dead: dict[int, str] = {}
    valid = 0
    for offset, (_, value) in enumerate(messages):
        if value is None:
            dead[offset] = "tombstone"
            continue
        try:
            event = parser.parse(value)
        except InvalidEvent as exc:
            dead[offset] = exc.reason
            continue
        valid += 1
        alerts += runner.feed(event)
        if last[0] in DEAD_LETTER_STATUSES:
            dead[offset] = DEAD_LETTER_STATUSES[last[0]]
    return Expected(
        alerts={a.id: family(a.kind, a.rule) for a in alerts},
        labels={a.id: f"{a.kind}/{a.rule}" for a in alerts},
        counts=counts,
        dead=dead,
        valid=valid,
        timeouts=runner.stats.closed["timeout"],
        statuses=statuses,
        examples=list(detector.examples),
    )


# ---------------------------------------------------------------------- kafka, redis
async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` (one partition, as all of the suite's), from its
    beginning to its end offset now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def committed_offset(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        found = offsets.get(TopicPartition(topic, 0))
        return -1 if found is None else int(found.offset)
    finally:
        await admin.close()


async def redis_sessions(env: Env) -> set[str]:
    """Session ids with a state in the scenario's Redis database."""
    client = aioredis.Redis.from_url(env.redis_db_url)
    try:
        return {key.decode()[6:-1] async for key in client.scan_iter(match="dg:s:*", count=1000)}
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- the run
class ChaosRun:
    """One scenario: its pipeline, its worker(s), and a thread sampling the
    worker's /readyz and gauges every :data:`POLL_S` seconds."""

    def __init__(
        self, infra: PrivateInfra, name: str, messages: Sequence[Raw], extra: dict[str, str]
    ) -> None:
        self.infra, self.name, self.messages = infra, name, list(messages)
        self.env = Env(
            infra.bootstrap, infra.redis_url, db=next(_databases), partitions=1, extra={}
        )
        self.env.extra.update({**CHAOS_ENV, **extra})
        self.config = Settings.from_env(self.env.worker_env(0)).detector
        self.expected = replay(messages, self.config)
        self.workers: list[Worker] = []
        self.trainers: list[Worker] = []
        self.samples: list[Sample] = []
        self.fault: list[float] = []  # [start, end] in time.time()
        self.recover_s: float | None = None
        self.recovered = 0.0  # time.time() when ready again after the fault
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._sample, name=f"chaos-{name}", daemon=True)
        self.started = time.time()

    @property
    def worker(self) -> Worker:
        return self.workers[-1]

    def start(self) -> None:
        """Create the topics, produce every message, start the worker."""
        asyncio.run(flush(self.env))
        asyncio.run(create_topics(self.env))
        tombstones_too = cast(list[tuple[bytes | None, bytes]], self.messages)
        sent = asyncio.run(produce(self.env.bootstrap, self.env.interactions, tombstones_too))
        assert sent == len(self.messages)
        self.start_worker()
        self.start_trainer()
        self.worker.wait_ready(partitions=1)
        self.trainer.wait_ready()
        self._watch.start()

    def start_worker(self) -> Worker:
        slug = re.sub(r"\W+", "-", self.name).strip("-")
        self.workers.append(Worker(self.env, f"{slug}-{len(self.workers)}").start())
        return self.worker

    @property
    def trainer(self) -> Worker:
        return self.trainers[-1]

    def start_trainer(self) -> Worker:
        slug = re.sub(r"\W+", "-", self.name).strip("-")
        name = f"{slug}-trainer-{len(self.trainers)}"
        self.trainers.append(Worker(self.env, name, ("trainer",)).start())
        return self.trainer

    def _sample(self) -> None:
        while not self._stop.wait(POLL_S):
            worker = self.worker
            t = time.time()
            try:
                status, body = worker.get("/readyz")
            except OSError:
                status, body = 0, ""
            gauges: dict[str, float] = {}
            try:
                samples = worker.metrics()
                for name in ("worker_ready", "kafka_up", "redis_up"):
                    key = f"disengage_{name}{{}}"
                    if key in samples:
                        gauges[name] = samples[key]
                gauges["events"] = metric_sum(samples, "disengage_events_total")
            except (OSError, AssertionError, ValueError):
                pass
            self.samples.append(Sample(t, len(self.workers) - 1, status, body, gauges))

    def wait_processed(self, share: float = INJECT_AT, timeout: float = 90.0) -> float:
        """Wait until ``share`` of the valid events went through the worker."""
        deadline = time.time() + timeout
        done = 0.0
        while time.time() < deadline:
            done = metric_sum(self.worker.metrics(), "disengage_events_total")
            if done >= share * self.expected.valid:
                break
            time.sleep(0.05)
        assert share * self.expected.valid <= done < self.expected.valid, (
            f"{self.name}: the fault must come mid-stream ({done:.0f} of "
            f"{self.expected.valid} events processed)"
        )
        return done

    def fault_started(self) -> None:
        self.fault[:] = [time.time()]

    def fault_ended(self) -> None:
        self.fault.append(time.time())

    def wait_recovered(self, timeout: float = 60.0) -> float:
        """Seconds from the end of the fault until /readyz is 200 with the partition owned."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                status, body = self.worker.get("/readyz")
                if status == 200 and json.loads(body).get("partitions") == [0]:
                    self.recovered = time.time()
                    self.recover_s = self.recovered - self.fault[1]
                    return self.recover_s
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: not ready {timeout}s after the fault\n{self.tail()}")

    def wait_done(self, timeout: float = 150.0) -> None:
        """Wait until the group committed the end of the input, then two sweeps more."""
        end = len(self.messages)
        deadline = time.time() + timeout
        group = f"group-{self.env.tag}"
        while time.time() < deadline:
            proc = self.worker.proc
            assert proc is not None and proc.poll() is None, f"worker died:\n{self.tail()}"
            if (
                asyncio.run(committed_offset(self.env.bootstrap, group, self.env.interactions))
                >= end
            ):
                time.sleep(2.5)  # the sweeps after the last batch (1 s each)
                return
            time.sleep(0.5)
        raise AssertionError(f"{self.name}: input not committed in {timeout}s\n{self.tail()}")

    def tail(self) -> str:
        return self.worker.tail(40)

    def finish(self, stuck: bool = False) -> Outcome:
        """Stop sampling, collect the worker's output and stop it (``stuck``: the
        worker did not recover or finish; it is killed, not stopped)."""
        self._stop.set()
        self._watch.join(timeout=10)
        try:
            metrics = self.worker.metrics()
        except (OSError, AssertionError):
            metrics = {}
        alerts = asyncio.run(read_topic(self.env.bootstrap, self.env.alerts))
        dlq = asyncio.run(read_topic(self.env.bootstrap, self.env.dlq))
        states = asyncio.run(load_states(self.env, self.expected.counts))
        stored = asyncio.run(redis_sessions(self.env))
        training = asyncio.run(read_topic(self.env.bootstrap, self.env.training))
        trained = training_problems(self.env, self.expected.examples, training)
        if stuck:
            self.worker.kill9()
        code = -9 if stuck else self.worker.stop()
        if self.trainer.stop() != 0:
            trained.append(
                f"the trainer exited with {self.trainer.proc and self.trainer.proc.returncode}"
            )
        logs = log_stats([w.log_path for w in (*self.workers, *self.trainers)])
        return Outcome(
            name=self.name,
            messages=self.messages,
            config=self.config,
            expected=self.expected,
            alerts=[_alert_of(m.value)[:2] for m in alerts],
            labels={a[0]: a[2] for a in map(_alert_of, (m.value for m in alerts))},
            dlq=dlq,
            states=states,
            stored=stored,
            metrics=metrics,
            readiness=readiness_report(self.samples, self.fault, self.recovered),
            recover_s=self.recover_s,
            logs=logs,
            exit_code=code,
            seconds=time.time() - self.started,
            training=trained,
        )


def _alert_of(value: bytes) -> tuple[str, str, str]:
    """(id, family, kind/rule) of an alert record's value."""
    event = json.loads(value)
    kind, rule = event["data"]["kind"], event["data"]["rule"]
    return event["id"], family(kind, rule), f"{kind}/{rule}"


Fault = Callable[[ChaosRun], None]


def run_scenario(
    infra: PrivateInfra,
    name: str,
    messages: Sequence[Raw],
    fault: Fault | None = None,
    extra: dict[str, str] | None = None,
) -> Outcome:
    """Produce ``messages``, run a worker over them, inject ``fault`` (which calls
    :meth:`ChaosRun.fault_started` and :meth:`ChaosRun.fault_ended`) once
    :data:`INJECT_AT` of them were processed, let it finish and record the row."""
    run = ChaosRun(infra, name, messages, extra or {})
    stuck: AssertionError | None = None
    try:
        run.start()
        try:
            if fault is not None:
                run.wait_processed()
                fault(run)
                assert len(run.fault) == 2, "the fault must say when it started and ended"
                run.wait_recovered()
            run.wait_done()
        except AssertionError as exc:  # still collect what the worker did, for the row
            stuck = exc
        outcome = run.finish(stuck=stuck is not None)
    finally:
        run._stop.set()
        for worker in (*run.workers, *run.trainers):
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
    record(outcome)
    if stuck is not None:
        raise stuck
    return outcome
