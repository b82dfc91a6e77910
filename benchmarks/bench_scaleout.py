"""Scale-out, shown: two workers on eight partitions, one trainer, one model.

    python deploy/local/infra.py run -- python benchmarks/bench_scaleout.py [--generator X]

On the real broker and Redis (issue 11, part 3): two ``disengage worker`` processes in one
consumer group on an 8-partition interactions topic and one ``disengage trainer``; once the
workers split the partitions (``/readyz``: disjoint, together all 8), ``--sessions`` simulated
sessions are produced, then the stream's end (:func:`end_of_stream`: one session per
partition that steps its event-time clock past every close, as a live stream's later traffic
would). The benchmark waits until the trainer's watermark has passed the last close, so every
session is closed and released for learning. Printed, all from that run:

* **throughput**: events/s of each worker (``disengage_events_total``) and in total over one
  wall interval (first event processed by either worker to the last); CPU seconds of each
  process (and of Redis) per 1000 events; each worker's batches (size, time, stage shares,
  Redis round trips per batch by operation); Redis commands per 1000 events;
* **one model**: the trainer's latest version and the one each worker serves
  (``disengage_model_version``);
* **the trainer's learning rate**: sessions/s of :meth:`detectors.trainer.Trainer.apply` over
  the run's training records in topic order (also checking that the served version equals
  the core over the same records), and the live trainer's CPU per learned session;
* **quality, no 1/N penalty**: prefix ROC-AUC (P(goal | the first 25/50/75% of the events
  before the goal)) on held-out sessions of another seed, of (a) the trainer's final version,
  (b) the offline replay's model, learned inline over the same input in event order, (c) the
  examples of one input partition only (each partition's model before issue 11) and (b') the
  replay's examples in the same order with another forest seed, (b'') the replay's
  examples in a random order, and (b*) the replay's sequence cut where the trainer's stops
  (both learn in close order, :mod:`detectors.learning_order`; equal to (b) once the trainer
  learned every session), for each trust learner
  (forest, linear) forced to serve; then each model with the learner its own rolling AUCs
  chose (``served``), and which one that is.

Expected scaling, on paper
--------------------------
* **Per worker**: parse, load and save the states of a batch's sessions (write-through
  cache), score, produce. Workers share only Redis and the broker, so N workers on N cores do
  about N times one worker's events: the unit is a worker's CPU seconds per 1000 events. Here
  workers, trainer, broker and Redis share 2 cores: the total shows correctness, not speed-up.
* **Redis**: per worker and batch, a load of the sessions the cache misses and a pipelined
  save, plus a sweep's ``due`` per partition and a model poll every few seconds: round trips
  grow with batches, not events, and N workers cost N times one. One Redis core saturates at
  the printed ``redis_core_bound_events_per_s``; past it, the hash-tagged keys shard over a
  Redis Cluster.
* **Trainer**: it learns each closed session once, whatever the number of workers; more
  workers raise the close rate (events/s over ~50 events per session) it must keep up with.
  The training topic has one partition (one ordered learner) and does not shard.
* **Where it stops**: at the lowest of (i) the trainer's learning rate times the events per
  session (printed as ``trainer_bound_events_per_s``, with the workers it takes to get
  there), (ii) the training topic's one partition (MB/s: far above (i) at a few kB per
  example), (iii) a Redis node. Beyond (i) the trainer lags and workers serve older
  versions; nothing on the hot path slows down.

Exit 1 unless every worker processed events, both serve the trainer's latest version, which
equals the core's trainer over the records it covers, the trainer learned the replay's whole
sequence in its order, and with both learners (a) scores as
(b*) does and |(a) - (b)| < ``--max-gap`` (0.03, a generous floor; the issue's target is 0.01)
at every prefix. JSON on stdout, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka.partitioner import murmur2
from bench_worker import stage_shares  # the script's folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.clock import StreamClock  # noqa: E402
from detectors.config import DetectorConfig  # noqa: E402
from detectors.detector import Detector, StepResult  # noqa: E402
from detectors.events import Event, EventParser  # noqa: E402
from detectors.models import DetectorModels  # noqa: E402
from detectors.offline.prefix_features import (  # noqa: E402
    MIN_PREFIX_EVENTS,
    PREFIXES,
    prefix_lengths,
)
from detectors.offline.runner import OfflineRunner  # noqa: E402
from detectors.sample_size import roc_auc  # noqa: E402
from detectors.simulation.simulator import SimConfig, Simulator  # noqa: E402
from detectors.trainer import Trainer  # noqa: E402
from detectors.training import Example, example_from_event, examples_of  # noqa: E402
from stream.model_registry import ModelVersion  # noqa: E402
from stream.settings import Settings  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    Env,
    Worker,
    consume,
    create_topics,
    event_records,
    flush,
    metric_sum,
    produce,
    reap_workers,
)
from tests.integration.training import learned_models, predictions, published_through  # noqa: E402

PARTITIONS = 8
#: No wall-clock expiry of idle partitions (the replay has no wall clock), so the
#: workers close the sessions the replay closes; sweeps every second (the harness).
RUN_ENV = {"DISENGAGE_IDLE_GRACE_S": "600"}
INDEPENDENT = ROOT / "benchmarks" / "independent"
MODELS = ("a_trainer", "b_replay", "c_one_partition")
#: Other models whose linear learner is scored too (it does not depend on the forest's seed).
LINEAR_TOO = ("b_replay_shuffled", "b_replay_same_prefix")


# ----------------------------------------------------------------------- input
def past_stream(generator: str, sessions: int, seed: int) -> list[dict[str, Any]]:
    """``sessions`` arrivals of ``generator`` (``own``: the simulator, revisits
    included; ``independent``: the shop journeys of ``benchmarks/independent``),
    ending before now, in event order; sessions still running a minute ago are
    dropped (a live stream holds no future event). The stream starts at a UTC
    midnight, so the runs of one day produce the same events
    (the generators' traffic depends on the time of day, and the forest moves
    with a few sessions more or less)."""
    now = int(time.time() * 1000)
    day = 86_400_000
    if generator == "own":
        span = int(sessions / SimConfig.arrival_rate * 1000)
        start = now - span - 7 * 3600 * 1000  # revisits come back up to ~6 h later
        start -= start % day
        events = list(Simulator(SimConfig(sessions, seed, start, incident=False)).events())
    else:
        if str(INDEPENDENT) not in sys.path:
            sys.path.insert(0, str(INDEPENDENT))
        import journeys  # type: ignore[import-not-found,unused-ignore]

        span = int(sessions * journeys.MEAN_ARRIVAL_GAP_S * 1000)
        start = now - span - 3600 * 1000
        events, _ = journeys.generate("shop", sessions, seed, start - start % day)
    last: dict[str, int] = {}
    for e in events:
        last[e["session_id"]] = max(e["ts"], last.get(e["session_id"], 0))
    return [e for e in events if last[e["session_id"]] < now - 60_000]


#: Step of the end-of-stream sessions' event times (ms): under ``max_clock_skew_ms`` (10 min),
#: so each event moves its partition's clock.
END_STEP_MS = 4 * 60_000


def end_of_stream(events: Sequence[dict[str, Any]], config: DetectorConfig) -> list[dict[str, Any]]:
    """The stream's end, for the workers and the replay alike: one session on
    each input partition whose page views step the partition's event-time
    clock (by ``END_STEP_MS``) from where the partition's events left it (a
    :class:`~detectors.clock.StreamClock`, as in the worker: a revisit hours
    after the partition's other traffic does not move it) past the stream's
    last event plus the session timeout and the allowed lateness (and two
    steps more). Every session of the stream then times out, and every partition's
    closure mark passes its close: the trainer can learn what the replay
    learns. Without it a backlog ends with each partition's clock where its
    own last event left it, and the trainer holds the sessions that closed
    after the slowest partition's mark (the last ~2% of the stream), which
    a live stream would release a sweep later. These sessions stay open:
    nobody learns them."""
    clocks = [StreamClock.for_config(config) for _ in range(PARTITIONS)]
    for e in events:
        clocks[partition_of(e["session_id"])].observe(e["session_id"], e["ts"])
    last = max(e["ts"] for e in events)
    end = last + config.session_timeout_ms + config.allowed_lateness_ms
    out = []
    for p, clock in enumerate(clocks):
        sid = next(s for k in range(10_000) if partition_of(s := f"end-of-stream-{p}-{k}") == p)
        ts, n = clock.now or min(c.now for c in clocks if c.now), 0
        while ts <= end + 2 * END_STEP_MS:
            ts, n = ts + END_STEP_MS, n + 1
            out.append(
                {
                    "session_id": sid,
                    "ts": ts,
                    "type": "page_view",
                    "event_id": f"{sid}-{n}",
                    "page": "/",
                    "page_type": "home",
                }
            )
    return sorted(out, key=lambda e: e["ts"])


def partition_of(sid: str) -> int:
    """A session's input partition: the producer's default partitioner (murmur2
    of the key), which :func:`tests.integration.harness.produce` uses."""
    return int(murmur2(sid.encode()) & 0x7FFFFFFF) % PARTITIONS


# ------------------------------------------------------------------- processes
def cpu_seconds(worker: Worker) -> float:
    """User + system CPU seconds of a worker or trainer process so far."""
    assert worker.proc is not None
    with open(f"/proc/{worker.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_split(workers: Sequence[Worker], timeout: float = 120.0) -> list[list[int]]:
    """Each worker's partitions once each owns some and together they are the
    topic's, once each (the group has settled)."""
    deadline, owned = time.time() + timeout, list[list[int]]()
    while time.time() < deadline:
        owned = []
        for w in workers:
            status, body = w.get("/readyz")
            owned.append(list(json.loads(body)["partitions"]) if status == 200 else [])
        if all(owned) and sorted(p for ps in owned for p in ps) == list(range(PARTITIONS)):
            return owned
        time.sleep(0.5)
    raise AssertionError(f"the workers did not split the partitions: {owned}")


async def redis_counters(env: Env) -> tuple[float, int]:
    """Redis CPU seconds (user + sys) and commands processed so far."""
    client = aioredis.Redis.from_url(env.redis_db_url)
    try:
        cpu, stats = await client.info("cpu"), await client.info("stats")
    finally:
        await client.aclose()
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), int(
        stats["total_commands_processed"]
    )


async def drain(env: Env, records: list[tuple[bytes | None, bytes]]) -> dict[str, Any]:
    """Start two workers and a trainer, produce ``records`` once the workers
    split the partitions, and measure until both processed them all."""
    workers = [Worker(env, f"w{i}").start() for i in (1, 2)]
    trainer = Worker(env, "trainer", ("trainer",)).start()
    for w in (*workers, trainer):
        w.wait_ready(timeout=120)
    split = wait_split(workers)
    print(f"partitions {split}; producing {len(records):,} events ...", file=sys.stderr)
    cpu0 = [cpu_seconds(p) for p in (*workers, trainer)]
    redis0 = await redis_counters(env)
    await produce(env.bootstrap, env.interactions, records)
    first, counts = None, [0.0, 0.0]
    deadline = time.time() + max(300.0, len(records) / 200)
    while time.time() < deadline and sum(counts) < len(records):
        await asyncio.sleep(0.5)
        counts = [metric_sum(w.metrics(), "disengage_events_total") for w in workers]
        if first is None and sum(counts) > 0:
            first = time.perf_counter()
    assert first is not None and sum(counts) >= len(records), workers[0].tail()
    wall = time.perf_counter() - first
    cpu = [cpu_seconds(p) - c for p, c in zip((*workers, trainer), cpu0, strict=True)]
    redis1 = await redis_counters(env)
    return {
        "workers": workers,
        "trainer": trainer,
        "trainer_cpu0": cpu0[2],
        "split": split,
        "wall_s": wall,
        "counts": counts,
        "cpu_s": cpu,
        "redis_cpu_s": redis1[0] - redis0[0],
        "redis_commands": redis1[1] - redis0[1],
        "samples": [w.metrics() for w in workers],
    }


def batches(samples: dict[str, float], wall_s: float) -> dict[str, Any]:
    """One worker's batches: their mean size and time, the share of the wall
    interval spent in them, Redis round trips per batch, and stage shares."""
    n = metric_sum(samples, "disengage_batch_seconds_count") or 1.0
    trips: dict[str, float] = {}
    for key, value in samples.items():
        if key.startswith("disengage_redis_seconds_count{") and value:
            trips[key.split("op=", 1)[1].split(",")[0].rstrip("}")] = round(value / n, 2)
    busy = metric_sum(samples, "disengage_batch_seconds_sum")
    return {
        "batches": int(n),
        "events_per_batch": round(metric_sum(samples, "disengage_batch_size_sum") / n, 1),
        "batch_ms_mean": round(1000 * busy / n, 1),
        "busy_share_of_wall": round(busy / wall_s, 3),
        "redis_round_trips_per_batch": trips | {"total": round(sum(trips.values()), 2)},
        "stage_share": stage_shares(samples),
    }


async def training_topic(
    env: Env, workers: Sequence[Worker], trainer: Worker, closed_by_ms: int
) -> list[Any]:
    """The training topic's records (by offset) once the trainer's watermark
    (every partition's closure mark) has passed ``closed_by_ms``, the last
    close of the stream's sessions (or after 120 s), and the workers stopped
    adding: every example is then on the topic and released for learning."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        watermark = metric_sum(trainer.metrics(), "disengage_trainer_watermark_seconds")
        if watermark * 1000 >= closed_by_ms:
            break
        await asyncio.sleep(0.5)
    last, stable_since = -1.0, time.monotonic()
    while time.monotonic() - stable_since < 3.0:
        now = sum(metric_sum(w.metrics(), "disengage_training_examples_total") for w in workers)
        if now != last:
            last, stable_since = now, time.monotonic()
        await asyncio.sleep(0.5)
    records = await consume(env.bootstrap, env.training, timeout=60, idle=2)
    return sorted(records, key=lambda m: m.offset)


async def wait_served(
    env: Env, workers: Sequence[Worker], end: int
) -> tuple[ModelVersion, list[int]]:
    """The version covering the training topic up to ``end``, and the version
    each worker serves once they all serve it (or after 60 s)."""
    version = await published_through(env, end, timeout=60)
    deadline, served = time.monotonic() + 60, list[int]()
    while time.monotonic() < deadline:
        served = [int(w.metrics().get("disengage_model_version{}", 0)) for w in workers]
        if all(s == version.number for s in served):
            break
        await asyncio.sleep(0.5)
    return version, served


# --------------------------------------------------------------------- quality
def replay(events: Sequence[Event], config: DetectorConfig) -> tuple[DetectorModels, list[Example]]:
    """(b): the offline replay's models, each session learned inline as it
    closes, and the examples it learned in that order. No ``finish()``: the
    sessions still open at the end stay unlearned, as in the workers."""
    detector = Detector(config)
    models, learned = detector.models, []
    learn = models.learn

    def record(example: Example) -> None:
        learned.append(example)
        learn(example)

    models.learn = record  # type: ignore[method-assign]
    runner = OfflineRunner(detector)
    for event in events:
        runner.feed(event)
    del models.learn
    return models, learned


def trust_scores(models: DetectorModels, probe: Sequence[Example]) -> list[float]:
    return [models.trust.predict_vector(list(v)) for e in probe for _, v in e.snapshots]


def trainer_over(records: Sequence[Any]) -> tuple[Trainer, float, list[str]]:
    """The core's trainer over ``records`` in order, its sessions/s, and the
    ids of the examples it learned, in the order it learned them."""
    trainer, started = Trainer(DetectorConfig()), time.perf_counter()
    learned: list[str] = []
    learn = trainer.models.learn

    def record(example: Example) -> None:
        learned.append(example.id)
        learn(example)

    trainer.models.learn = record  # type: ignore[method-assign]
    for r in records:
        trainer.apply(r.offset, r.value)
    rate = trainer.models.examples / max(time.perf_counter() - started, 1e-9)
    del trainer.models.learn
    return trainer, rate, learned


def first_difference(a: Sequence[str], b: Sequence[str]) -> int | None:
    """The first index where ``a`` and ``b[: len(a)]`` differ (``None``: a prefix)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) <= len(b) else len(b)


def prefix_auc(
    models: DetectorModels, events: Sequence[Event], config: DetectorConfig
) -> dict[str, Any]:
    """ROC-AUC of the frozen ``models``' P(goal | prefix) at each of
    :data:`PREFIXES` of the events before the goal, against conversion, over the
    sessions with at least :data:`MIN_PREFIX_EVENTS` such events: the held-out
    events run through a detector that learns nothing, and the score after each
    event is read from its state (as ``Evaluation.prefix_points`` does)."""
    scores: dict[str, array[float]] = {}
    goal_at: dict[str, int] = {}

    def on_step(event: Event, result: StepResult) -> None:
        if result.status == "applied":
            track = scores.setdefault(event.session_id, array("f"))
            if event.type == config.goal_event and event.session_id not in goal_at:
                goal_at[event.session_id] = len(track)
            track.append(result.state.trust)

    runner = OfflineRunner(Detector(config, models, learn=False), on_step=on_step)
    for event in events:
        runner.feed(event)
    runner.finish()
    points: dict[float, list[tuple[float, bool]]] = {p: [] for p in PREFIXES}
    for sid, track in scores.items():
        n = goal_at.get(sid, len(track))
        if n >= MIN_PREFIX_EVENTS:
            for p, k in zip(PREFIXES, prefix_lengths(n), strict=True):
                score = float(track[k - 1])
                points[p].append((score if score >= 0 else 0.5, sid in goal_at))
    out: dict[str, Any] = {}
    for p, pts in points.items():
        auc = roc_auc([s for s, _ in pts], [label for _, label in pts])
        out[f"{p}"] = None if auc is None else round(auc, 4)
    first = points[PREFIXES[0]]
    return out | {"sessions": len(first), "converters": sum(label for _, label in first)}


def quality(
    models: dict[str, DetectorModels], holdout: Sequence[Event], config: DetectorConfig
) -> dict[str, dict[str, Any]]:
    """Prefix AUCs of every model with each trust learner serving in turn (the
    linear learner does not depend on the forest's seed: no (b') for it; the
    learning order matters to both: (b'') for each)."""
    out: dict[str, dict[str, Any]] = {}
    for learner in ("forest", "linear"):
        out[learner] = {}
        for name, m in models.items():
            if learner == "forest" and not m.trust.uses_forest:
                # its champion is a promoted challenger without a forest
                # (refit-linear, see trust_champion): no forest to serve
                # (a served copy has its forest compiled, and serves it)
                out[learner][name] = {f"{p}": None for p in PREFIXES}
            elif learner == "forest" or name in MODELS or name in LINEAR_TOO:
                m.trust.serving = learner
                out[learner][name] = prefix_auc(m, holdout, config)
    return out


# ------------------------------------------------------------------------ main
async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap, redis_url = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("REDIS_URL")
    if not bootstrap or not redis_url:
        raise SystemExit("run under `python deploy/local/infra.py run -- ...`")
    started = time.perf_counter()
    env = Env(bootstrap, redis_url, db=4, partitions=PARTITIONS, extra=dict(RUN_ENV))
    await flush(env)
    await create_topics(env)
    config = Settings.from_env(env.worker_env(0)).detector
    parse = EventParser(config).parse
    raw = past_stream(args.generator, args.sessions, args.seed)
    closed_by = max(e["ts"] for e in raw) + config.session_timeout_ms
    raw += end_of_stream(raw, config)
    holdout = [parse(e) for e in past_stream(args.generator, args.holdout_sessions, args.seed + 1)]
    print(f"{args.generator}: {len(raw):,} events, {len(holdout):,} held out", file=sys.stderr)
    wall: dict[str, float] = {}
    try:
        run = await drain(env, event_records(raw))
        workers, trainer = run["workers"], run["trainer"]
        wall["setup_and_drain"] = time.perf_counter() - started
        print("offline replay (b) while the trainer publishes ...", file=sys.stderr)
        t = time.perf_counter()
        replay_models, replay_examples = replay([parse(e) for e in raw], config)
        wall["replay_b"] = time.perf_counter() - t
        training = await training_topic(env, workers, trainer, closed_by)
        version, served = await wait_served(env, workers, training[-1].offset + 1)
        trainer_samples = trainer.metrics()
        trainer_cpu = cpu_seconds(trainer) - run["trainer_cpu0"]
    finally:
        reap_workers()
    served_models = await learned_models(env, version.number)

    print("trainer learning rate, (c), (b') and the held-out prefix AUCs ...", file=sys.stderr)
    t = time.perf_counter()
    covered = [r for r in training if r.offset < version.offset]
    core, learn_rate, core_order = trainer_over(covered)
    wall["trainer_apply"] = time.perf_counter() - t
    probe = examples_of([r.value for r in training[:80]])[:40]
    one = [
        r
        for r in training
        if not r.key.startswith(b"mark-")
        and partition_of(example_from_event(r.value).sid) == args.partition
    ]
    # compared before the quality runs below switch the models' serving learner
    same_as_core = {
        "sessions": core.models.examples,
        "all_models": predictions(served_models, probe) == predictions(core.models, probe),
        "trust": trust_scores(served_models, probe) == trust_scores(core.models, probe),
    }
    t = time.perf_counter()
    # the replay's sequence cut where the trainer's stops (the slowest partition's mark)
    same_prefix = DetectorModels(config)
    for example in replay_examples[: core.models.examples]:
        same_prefix.learn(example)
    other_seed = DetectorModels(config.with_overrides(seed=config.seed + 1))
    for example in replay_examples:
        other_seed.learn(example)
    shuffled = DetectorModels(config)
    for example in random.Random(args.seed).sample(replay_examples, len(replay_examples)):
        shuffled.learn(example)
    models = {
        "a_trainer": served_models,
        "b_replay": replay_models,
        "c_one_partition": trainer_over(one)[0].models,  # (no marks: in topic order)
        "b_replay_other_seed": other_seed,
        "b_replay_shuffled": shuffled,
        "b_replay_same_prefix": same_prefix,
    }
    learners = {name: m.trust.serving for name, m in models.items()}
    champions = {
        name: f"{m.trust.kind}, {0 if m.arena is None else m.arena.promoted_total} promotion(s)"
        for name, m in models.items()
    }
    aucs = quality(models, holdout, config)
    # what each model would serve as it is (its rolling AUCs chose the learner)
    served_aucs = {name: aucs[learner].get(name) for name, learner in learners.items()}
    wall["quality"] = time.perf_counter() - t
    wall["total"] = time.perf_counter() - started

    n, s = len(raw), run["wall_s"]
    statuses = {
        status: int(trainer_samples.get(f"disengage_trainer_records_total{{status={status}}}", 0))
        for status in ("learned", "held", "late", "ahead", "mark", "duplicate", "invalid")
    }
    learned = float(statuses["learned"] + statuses["held"] + statuses["late"])
    replay_order = [e.id for e in replay_examples]
    publishes = trainer_samples.get("disengage_model_publish_seconds_count{}", 0.0) or 1.0
    return {
        "generator": args.generator,
        "events": n,
        "sessions": args.sessions,
        "split": run["split"],
        "wall_s": round(s, 1),
        "events_per_s": {f"worker_{i + 1}": round(c / s) for i, c in enumerate(run["counts"])}
        | {"total": round(sum(run["counts"]) / s)},
        "cpu_s_per_1000_events": {
            name: round(1000 * cpu / n, 3)
            for name, cpu in zip(("worker_1", "worker_2", "trainer"), run["cpu_s"], strict=True)
        }
        | {"redis": round(1000 * run["redis_cpu_s"] / n, 3)},
        "redis_commands_per_1000_events": round(1000 * run["redis_commands"] / n),
        "worker_batches": [batches(samples, s) for samples in run["samples"]],
        "model_version": {"trainer": version.number, "workers": served},
        "training_records": len(training),
        "version_covers": {"offset": version.offset, "sessions": version.examples},
        "trainer": {
            "learn_sessions_per_s": round(learn_rate, 1),
            "cpu_s_per_learned_session_live": round(trainer_cpu / max(learned, 1.0), 4),
            "versions_published": int(trainer_samples.get("disengage_models_published_total{}", 0)),
            "publish_s_mean": round(
                trainer_samples.get("disengage_model_publish_seconds_sum{}", 0.0) / publishes, 3
            ),
            "records": statuses,
            "held_at_end": core.held,
            # the trainer learns in close order, as the replay: what it learned is
            # the replay's sequence up to the slowest partition's closure mark
            "learned_order_is_replay_prefix": first_difference(core_order, replay_order) is None,
            "learned_all_of_replay": core_order == replay_order,
            "first_difference_from_replay": first_difference(core_order, replay_order),
            "served_equals_core_over_same_records": same_as_core,
        },
        "scaling": projection(n, core.models.examples, learn_rate, run),
        "sessions_learned": {name: m.examples for name, m in models.items()},
        "serving_learner": learners,
        "trust_champion": champions,
        "one_partition": args.partition,
        "prefix_auc": aucs,
        "prefix_auc_served": served_aucs,
        "wall_times_s": {k: round(v, 1) for k, v in wall.items()},
    }


def projection(
    events: int, examples: int, learn_rate: float, run: dict[str, Any]
) -> dict[str, Any]:
    """The measured costs as the paper scaling reads them: a worker's events/s
    on a core of its own (its CPU per event), the deployment's events/s at which
    the one trainer (learning rate x events per session) or one Redis core
    (its CPU per event) saturates, and the workers that take to reach it."""
    per_event = sum(run["cpu_s"][:2]) / events
    worker = 1.0 / per_event if per_event else 0.0
    trainer = learn_rate * events / max(examples, 1)
    redis = events / run["redis_cpu_s"] if run["redis_cpu_s"] else float("inf")
    return {
        "events_per_session": round(events / max(examples, 1), 1),
        "worker_events_per_s_one_core": round(worker),
        "trainer_bound_events_per_s": round(trainer),
        "redis_core_bound_events_per_s": round(redis) if redis != float("inf") else None,
        "workers_until_trainer_bound": round(trainer / worker, 1) if worker else None,
    }


def table(figures: dict[str, Any]) -> str:
    head = (
        "learner  prefix  (a) trainer  (b) replay  (c) 1 partition  (a)-(b)   (b') seed+1  "
        "(b'') shuffled  (b*) replay cut at (a)"
    )
    rows = [head]
    served = figures["prefix_auc_served"]
    learners = figures["serving_learner"]
    for learner, aucs in (*figures["prefix_auc"].items(), ("served", served)):
        for p in PREFIXES:
            a, b, c = (aucs[k][f"{p}"] for k in MODELS)
            b2 = (aucs.get("b_replay_other_seed") or {}).get(f"{p}", "-")
            b3 = (aucs.get("b_replay_shuffled") or {}).get(f"{p}", "-")
            b4 = (aucs.get("b_replay_same_prefix") or {}).get(f"{p}", "-")
            gap = f"{a - b:+.4f}" if a is not None and b is not None else "-"
            rows.append(
                f"{learner:<8} {p:<7} {a!s:<12} {b!s:<11} {c!s:<16} {gap:<9} {b2!s:<12} "
                f"{b3!s:<15} {b4}"
            )
    rows.append("served: " + ", ".join(f"{k} {v}" for k, v in learners.items()))
    rows.append("champion: " + "; ".join(f"{k} {v}" for k, v in figures["trust_champion"].items()))
    rate = figures["events_per_s"]
    rows.append(
        f"events/s: worker 1 {rate['worker_1']:,}, worker 2 {rate['worker_2']:,}, total "
        f"{rate['total']:,} over {figures['wall_s']} s; versions served "
        f"{figures['model_version']}; the trainer learns "
        f"{figures['trainer']['learn_sessions_per_s']} sessions/s"
    )
    scale = figures["scaling"]
    rows.append(
        f"scaling: a worker does ~{scale['worker_events_per_s_one_core']:,} events/s per core; "
        f"the trainer bounds the deployment at ~{scale['trainer_bound_events_per_s']:,} events/s "
        f"(~{scale['workers_until_trainer_bound']} workers), one Redis core at "
        f"~{scale['redis_core_bound_events_per_s']} events/s"
    )
    return "\n".join(rows)


def failures(figures: dict[str, Any], max_gap: float) -> list[str]:
    out = []
    if not all(c > 0 for c in figures["events_per_s"].values()):
        out.append("a worker processed no event")
    versions = figures["model_version"]
    if any(v != versions["trainer"] for v in versions["workers"]):
        out.append(f"the workers serve {versions['workers']}, not v{versions['trainer']}")
    trainer = figures["trainer"]
    same = trainer["served_equals_core_over_same_records"]
    if not (same["all_models"] and same["trust"]):
        out.append("the served version is not the core's trainer over the records it covers")
    if not trainer["learned_order_is_replay_prefix"]:
        at = trainer["first_difference_from_replay"]
        out.append(f"the trainer's learning order leaves the replay's at session {at}")
    elif not trainer["learned_all_of_replay"]:
        out.append(
            f"the trainer learned {figures['sessions_learned']['a_trainer']} of the replay's "
            f"{figures['sessions_learned']['b_replay']} sessions ({trainer['held_at_end']} held)"
        )
    for learner, aucs in figures["prefix_auc"].items():
        for p in PREFIXES:
            a, b = (aucs[k][f"{p}"] for k in MODELS[:2])
            if a is None and b is None:
                continue  # neither serves this learner (a promoted challenger without a forest)
            if a is None or b is None or abs(a - b) >= max_gap:
                out.append(f"{learner}, prefix {p}: (a) {a} vs (b) {b}")
            cut = aucs["b_replay_same_prefix"][f"{p}"]
            if a != cut:
                out.append(f"{learner}, prefix {p}: (a) {a} is not the replay cut there {cut}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=3000, help="training sessions (arrivals)")
    ap.add_argument("--holdout-sessions", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=11, help="of the training stream (holdout: +1)")
    ap.add_argument("--generator", choices=("own", "independent"), default="own")
    ap.add_argument("--partition", type=int, default=0, help="the input partition of (c)")
    ap.add_argument("--max-gap", type=float, default=0.03, help="floor on |(a) - (b)|")
    args = ap.parse_args()
    figures = asyncio.run(main_async(args))
    print(json.dumps(figures, indent=1))
    print(table(figures))
    for problem in failures(figures, args.max_gap):
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if failures(figures, args.max_gap) else 0


if __name__ == "__main__":
    sys.exit(main())
