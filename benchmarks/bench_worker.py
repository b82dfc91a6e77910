"""Benchmark of the streaming worker on the real broker and Redis.

Run it under the local infrastructure (or point the variables at yours):

    python deploy/local/infra.py run -- python benchmarks/bench_worker.py
    python deploy/local/infra.py run -- python benchmarks/bench_worker.py --events 1000000

It prints, all measured in the same run:

* **baseline**: a raw aiokafka loop on the same broker that consumes,
  parses (``json.loads``) and produces every event, committing per batch;
* **throughput**: one ``disengage worker`` draining a backlog of simulated
  events (events/s from its first to its last processed event), and the
  ratio to the baseline. A ``disengage trainer`` runs next to it, as in a
  deployment (it learns every closed session and publishes model versions,
  which the worker loads while it runs), on the same cores;
* **latency**: with simulated traffic offered at half the measured maximum,
  and again at 1,000 events/s, and event time tracking the wall clock, after
  a warm-up of ``WARMUP_S`` seconds of the same traffic (sent through
  ``kcat`` when it is installed, so the load generator's produce path is
  C, not a Python loop competing with the worker for the same 2 cores; the
  cores each process used are reported),
  p50/p99 from an alert's triggering event time, and from the Kafka timestamp of its input record
  (``recordtime``; the input topic stamps records when the broker appends
  them, so this is the worker alone, without any lag of the load generator),
  to the alert's produce time (``producedat``);
* **memory**: Redis bytes per stored session (``MEMORY USAGE`` of the state
  keys, plus the expiry index), and the worker's RSS sampled during the
  backlog run, to show whether it grows after warm-up;
* **where the time goes**: each stage's share of the worker's batch time
  (``disengage_batch_stage_seconds``: recover, parse, load, detect, save,
  produce, gauges) over the backlog run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.events import parse_ts  # noqa: E402
from detectors.simulation.simulator import SimConfig, Simulator  # noqa: E402
from stream.commands.live import EVENTS_PER_SESSION  # noqa: E402
from stream.metrics import BATCH_STAGES  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    Env,
    Worker,
    consume,
    create_topics,
    flush,
    metric_sum,
    produce,
    reap_workers,
)


def simulated(n_events: int, seed: int, start_ms: int) -> list[tuple[bytes, bytes]]:
    sessions = int(n_events / EVENTS_PER_SESSION * 1.1) + 10
    sim = Simulator(
        SimConfig(sessions=sessions, seed=seed, start_ts=start_ms, incident=False), keep_truth=False
    )
    out = []
    for event in sim.events():
        out.append((event["session_id"].encode(), json.dumps(event).encode()))
        if len(out) >= n_events:
            break
    return out


async def raw_baseline(bootstrap: str, topic_in: str, topic_out: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        topic_in,
        bootstrap_servers=bootstrap,
        group_id=f"baseline-{topic_in}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    seen = 0
    started = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            futures = []
            for messages in batch.values():
                for m in messages:
                    json.loads(m.value)
                    futures.append(await producer.send(topic_out, m.value, key=m.key))
                    seen += 1
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
    assert started is not None
    return n / (time.perf_counter() - started)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def start_trainer(env: Env) -> Worker:
    """The deployment's trainer, on the same machine: it learns every closed
    session and publishes versions, which the worker loads while it runs."""
    trainer = Worker(env, "trainer", ("trainer",)).start()
    trainer.wait_ready(timeout=90)
    return trainer


#: Seconds of offered traffic before the latency is measured.
WARMUP_S = 15.0


def throughput_run(env: Env, n: int, trainer_pid: int) -> dict[str, Any]:
    worker = Worker(env, "bench").start()
    worker.wait_ready(timeout=90)
    assert worker.proc is not None
    pid = worker.proc.pid
    pids = {"worker": pid, "trainer": trainer_pid, **infra_pids(env)}
    cpu_start: dict[str, float] = {}
    samples: list[tuple[float, float]] = []
    first_t = None
    last_count = 0.0
    deadline = time.time() + max(600.0, n / 500)
    while time.time() < deadline:
        count = metric_sum(worker.metrics(), "disengage_events_total")
        now = time.perf_counter()
        if count > 0 and first_t is None:
            first_t = now
            first_count = count
            cpu_start = cpu_sample(pids)
        if count != last_count:
            samples.append((count, rss_mb(pid)))
            last_count = count
        if count >= n:
            break
        time.sleep(0.5)
    assert first_t is not None, worker.tail()
    seconds = time.perf_counter() - first_t
    rate = (last_count - first_count) / seconds if seconds > 0 else 0.0
    cpu = cpu_shares(cpu_start, cpu_sample(pids))
    return {
        "worker": worker,
        "events_per_s": rate,
        "rss": samples,
        "processed": last_count,
        "cpu": cpu,
    }


async def latency_run(
    base: Env, rate: float, seconds: float, warmup_s: float = WARMUP_S
) -> dict[str, Any]:
    """Offer ``rate`` events/s of live simulated traffic to a fresh worker on
    fresh topics (no backlog sessions to sweep meanwhile); measure the alerts
    of events after the first ``warmup_s`` seconds (steady state: the
    worker's first fetches, the first model version and the trainer's start
    are behind it)."""
    from stream.commands.live import produce_simulation
    from stream.settings import Settings

    env = Env(base.bootstrap, base.redis_url, db=base.db + 1, partitions=base.partitions)
    await flush(env)
    await broker_timed_topics(env)
    await create_topics(env)
    worker = Worker(env, "latency").start()
    trainer = start_trainer(env)
    try:
        worker.wait_ready(timeout=90)
        settings = Settings.from_env(env.worker_env(worker.port))
        before = time.time() + warmup_s
        assert worker.proc is not None and trainer.proc is not None
        pids = {
            "worker": worker.proc.pid,
            "trainer": trainer.proc.pid,
            "load_generator": 0,
            **infra_pids(env),
        }
        cpu_start = cpu_sample(pids)
        if KCAT:
            # the warm-up counts from the first event sent (the generator
            # first simulates the site's past, see live_events), and so does
            # the CPU accounting
            marks: dict[str, Any] = {}

            def first_event() -> None:
                marks["before"] = time.time() + warmup_s
                marks["cpu"] = cpu_sample(pids)

            await asyncio.to_thread(kcat_simulation, env, rate, warmup_s + seconds, 99, first_event)
            before, cpu_start = marks["before"], marks["cpu"]
        else:
            with open(os.devnull, "w") as quiet:
                await produce_simulation(
                    settings, rate=rate, duration_s=warmup_s + seconds, seed=99, out=quiet
                )
        cpu = cpu_shares(cpu_start, cpu_sample(pids))
        await asyncio.sleep(3)
        messages = await consume(env.bootstrap, env.alerts, timeout=30, idle=3)
        samples = worker.metrics()
    finally:
        worker.stop()
        trainer.stop()
    lat = []  # event time -> produced: includes any lag of the load generator
    pipe = []  # input record's Kafka timestamp -> produced: broker + worker only
    # input record's Kafka timestamp -> the alert's: on the alerts topic (the target's measure)
    topic = []
    # (record time -> on the topic s, at s, record time -> the worker's decision s)
    slowest: list[tuple[float, float, float]] = []
    for m in messages:
        alert = json.loads(m.value)
        event_ms = parse_ts(alert["data"]["event_time"])
        if event_ms / 1000 < before:
            continue  # triggered in the warm-up (or by the backlog run's old events)
        produced = parse_ts(alert["producedat"])
        lat.append((produced - event_ms) / 1000.0)
        if "recordtime" in alert:
            record_ms = parse_ts(alert["recordtime"])
            pipe.append((produced - record_ms) / 1000.0)
            topic.append((m.timestamp - record_ms) / 1000.0)
            slowest.append((topic[-1], m.timestamp / 1000.0 - before, pipe[-1]))
    lat.sort()
    pipe.sort()
    topic.sort()
    out: dict[str, Any] = {
        "offered_events_per_s": round(rate),
        "alerts": len(lat),
        "events_processed": metric_sum(samples, "disengage_events_total"),
        "model_versions_loaded": metric_sum(
            samples, "disengage_model_loads_total", result="loaded"
        ),
        # the collector's pauses (warm-up included): full ones walk the state cache
        "gc": gc_pauses(samples),
        # where a tail comes from: batches slower than the 250 ms target, and each
        # stage's share of the batch time (warm-up included)
        "batches": metric_sum(samples, "disengage_batch_seconds_count"),
        "batches_over_250ms": metric_sum(samples, "disengage_batch_seconds_count")
        - metric_sum(samples, "disengage_batch_seconds_bucket", le="0.25"),
        "batch_stage_share": stage_shares(samples),
        # what batches waited for outside themselves: the lock's other holders
        # and an event loop that could not run (stream/worker/stalls.py)
        "stalls": stalls(samples),
        # is the machine saturated? cores used per process, and the share of
        # all cores idle, while the traffic was offered (warm-up included)
        "cpu": cpu,
    }
    # where the tail sits in time, next to the worker's model loads (seconds
    # after the warm-up): a tail that lines up with loads is the unpickling
    slowest.sort(reverse=True)
    # (a late decision was late in the worker or its fetch; an alert decided
    # in time but late on the topic waited for its produce)
    out["slowest_alerts"] = [
        {"latency_s": round(d, 3), "at_s": round(t, 1), "decided_after_s": round(w, 3)}
        for d, t, w in slowest[:8]
    ]
    out["model_loads_at_s"] = model_load_times(worker.log_path, before)
    out["stalls_logged_at_s"] = log_times(
        worker.log_path, before, ("held the batch lock", "event loop was blocked", "a batch of")
    )
    # steady state or a drift? the topic p99 per minute of the phase (a worker
    # falling behind grows minute after minute; one slow moment stays in one)
    minutes: dict[int, list[float]] = {}
    for d, t, _ in slowest:
        minutes.setdefault(max(0, int(t // 60)), []).append(d)
    out["record_to_alerts_topic_p99_by_minute_s"] = [
        round(sorted(v)[min(len(v) - 1, int(len(v) * 0.99))], 3) for _, v in sorted(minutes.items())
    ]
    for name, values in (
        ("from_event_time", lat),
        ("from_record_time", pipe),
        ("record_to_alerts_topic", topic),
    ):
        if values:
            out[f"{name}_p50_s"] = round(values[len(values) // 2], 4)
            out[f"{name}_p99_s"] = round(values[min(len(values) - 1, int(len(values) * 0.99))], 4)
    return out


#: The latency runs' load generator sends through kcat (librdkafka, in C)
#: when it is installed: the Python simulation then only makes the events,
#: and aiokafka's Python produce path (about a core at 2,600 events/s on
#: the 2-core CI machine) does not compete with the worker it measures.
KCAT = shutil.which("kcat")


def patient_metrics(service: Worker, tries: int = 10) -> dict[str, float]:
    """``service.metrics()``, asked again after a timeout: a trainer learning
    the backlog's closed sessions can hold its event loop (and its /metrics)
    for longer than the 3 s a read waits."""
    for _ in range(tries - 1):
        try:
            return service.metrics()
        except OSError:  # a timeout or a refused connection
            time.sleep(1.0)
    return service.metrics()


def kcat_simulation(
    env: Env, rate: float, duration_s: float, seed: int, on_first: Callable[[], None]
) -> int:
    """The traffic of ``disengage simulate --kafka``
    (:func:`stream.commands.live.live_events`) piped to ``kcat -P``, each
    event sent when the wall clock reaches its time; returns the events sent.

    The whole ``duration_s`` is simulated *before* the first event goes out
    and then shifted to start now: simulating 3,300 events/s live took ~0.2
    of a core, which a deployment's worker does not share with its sources.
    The events wait in memory meanwhile (about 1 KB each: some 250 MB for the
    default 75 s at 3,300 events/s, 1.4 GB for ``--latency-seconds 420``).
    kcat's CPU counts as the load generator's (a waited child of this
    process, see :func:`cpu_sample`). ``on_first`` is called as the first
    event goes out."""
    from stream.commands.live import live_events

    events: list[dict[str, Any]] = []
    for event in live_events(rate, seed):
        if events and event["ts"] - events[0]["ts"] >= duration_s * 1000:
            break
        events.append(event)
    proc = subprocess.Popen(
        [KCAT or "kcat", "-P", "-b", env.bootstrap, "-t", env.interactions, "-K", "\t",
         "-X", "linger.ms=5", "-X", "acks=1"],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    encode = json.JSONEncoder(separators=(",", ":")).encode
    sent = 0
    try:
        on_first()
        shift = int(time.time() * 1000) - events[0]["ts"] if events else 0
        for event in events:
            event["ts"] += shift
            ahead = event["ts"] / 1000.0 - time.time()
            if ahead > 0.005:
                proc.stdin.flush()
                time.sleep(ahead)
            proc.stdin.write(f"{event['session_id']}\t{encode(event)}\n".encode())
            sent += 1
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return sent


def infra_pids(env: Env) -> dict[str, int]:
    """The pids of the broker (the Kafka JVM) and of the single-node Redis
    the run uses, found by their command lines (0 when not found)."""
    port = env.redis_url.rsplit(":", 1)[1].split("/", 1)[0]
    found = {"kafka": 0, "redis": 0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "java" in cmdline and "kafka.Kafka" in cmdline:
            found["kafka"] = int(entry)
        elif "redis-server" in cmdline and f":{port}" in cmdline:
            found["redis"] = int(entry)
    return found


def cpu_sample(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process (pid 0: this one and
    its waited children) and by the whole machine (``busy``, ``total``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"wall": time.monotonic()}
    for name, pid in pids.items():
        if not pid:  # this process and its waited children (kcat)
            t = os.times()
            out[name] = t.user + t.system + t.children_user + t.children_system
            continue
        try:
            with open(f"/proc/{pid or os.getpid()}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            out[name] = 0.0
    with open("/proc/stat") as f:
        jiffies = [int(x) for x in f.readline().split()[1:]]
    idle = jiffies[3] + (jiffies[4] if len(jiffies) > 4 else 0)  # idle + iowait
    out["total"] = sum(jiffies) / tick
    out["busy"] = (sum(jiffies) - idle) / tick
    return out


def cpu_shares(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    """Cores used per process between two :func:`cpu_sample` calls, the
    machine's cores (``cores``) and the share of them that was idle."""
    wall = end["wall"] - start["wall"]
    cores = os.cpu_count() or 1
    out = {
        f"{name}_cores": round((end[name] - start[name]) / wall, 2)
        for name in start
        if name not in ("wall", "total", "busy")
    }
    total = end["total"] - start["total"]
    busy = end["busy"] - start["busy"]
    out["machine_idle_share"] = round(1 - busy / total, 3) if total else 0.0
    # the machine's busy cores not accounted to a named process (the kernel,
    # the Redis Cluster nodes, anything else on the machine)
    named = sum(v for k, v in out.items() if k.endswith("_cores"))
    out["other_cores"] = round(max(0.0, busy / wall - named), 2) if wall > 0 else 0.0
    out["cores"] = cores
    return out


async def broker_timed_topics(env: Env) -> None:
    """The input and alerts topics with ``message.timestamp.type=LogAppendTime``:
    a record's timestamp is when the broker appended it. On the input, so
    ``recordtime`` leaves out the load generator's own delays (a busy
    generator holds records in its producer's buffer before they reach the
    broker); on the alerts, so an alert's Kafka timestamp is when it was on
    the topic for its consumers, after the worker saved its outbox and the
    broker acknowledged it (``producedat`` is earlier: when the worker
    decided it)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=env.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    env.partitions,
                    1,
                    topic_configs={"message.timestamp.type": "LogAppendTime"},
                )
                for topic in (env.interactions, env.alerts)
            ]
        )
    finally:
        await admin.close()


def model_load_times(log: Path, since: float) -> list[float]:
    """Seconds after ``since`` (epoch) at which the worker logged a model load."""
    lines = _log_lines(log, since, lambda line: "loaded (" in line and "model version" in line)
    return [t for t, _ in lines]


def log_times(log: Path, since: float, needles: tuple[str, ...]) -> list[str]:
    """The worker's stall lines (slow batches, long lock holds, a blocked
    event loop; each logged at most once per 10 s) as "seconds: message",
    seconds after ``since``."""
    return [
        f"{t}: {line.split(' ', 3)[-1][:120]}"
        for t, line in _log_lines(log, since, lambda line: any(n in line for n in needles))
        if t >= 0
    ]


def _log_lines(log: Path, since: float, keep: Callable[[str], bool]) -> list[tuple[float, str]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if not keep(line):
            continue
        text = line.lstrip("[")  # Faust's format brackets the time
        try:
            stamp = time.mktime(time.strptime(text[:19], "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue
        ms = float(text[20:23]) / 1000 if text[19:20] == "," else 0.0
        out.append((round(stamp + ms - since, 1), line))
    return out


async def redis_bytes(env: Env, sample: int = 500) -> dict[str, float]:
    client = aioredis.Redis.from_url(env.redis_db_url)
    try:
        keys = []
        async for key in client.scan_iter(match="dg:s:*", count=1000):
            keys.append(key)
            if len(keys) >= sample:
                break
        usage = [await client.memory_usage(k) or 0 for k in keys]
        total_states = await client.dbsize()
        seen_keys = [k async for k in client.scan_iter(match="dg:seen:*")]
        zset_bytes = sum([await client.memory_usage(k) or 0 for k in seen_keys])
        members = sum([await client.zcard(k) for k in seen_keys]) or 1
        return {
            "state_bytes_mean": round(statistics.mean(usage), 1) if usage else 0.0,
            "state_bytes_p99": sorted(usage)[int(len(usage) * 0.99)] if usage else 0,
            "expiry_index_bytes_per_open_session": round(zset_bytes / members, 1),
            "keys": total_states,
        }
    finally:
        await client.aclose()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("REDIS_URL")
    if not bootstrap or not redis_url:
        raise SystemExit(
            "run under `python deploy/local/infra.py run -- ...` "
            "(KAFKA_BOOTSTRAP_SERVERS and REDIS_URL are needed)"
        )
    env = Env(bootstrap, redis_url, db=2, partitions=args.partitions)
    await flush(env)
    await create_topics(env)
    if args.skip_backlog:
        if not args.latency_rate:
            raise SystemExit("--skip-backlog needs --latency-rate")
        try:
            latency = await latency_run(env, rate=args.latency_rate, seconds=args.latency_seconds)
        finally:
            reap_workers()
        return {"latency": latency}
    start_ms = int(time.time() * 1000) - 3 * 3600 * 1000
    print(f"simulating {args.events:,} events ...", file=sys.stderr)
    records = simulated(args.events, seed=SimConfig.seed, start_ms=start_ms)
    # baseline on its own topics, same broker, same data
    base_in, base_out = f"base-in-{env.tag}", f"base-out-{env.tag}"
    base_n = min(args.events, args.baseline_events)
    await produce(bootstrap, base_in, records[:base_n])
    print("raw aiokafka baseline ...", file=sys.stderr)
    baseline = await raw_baseline(bootstrap, base_in, base_out, base_n)
    print("worker backlog run (with the trainer) ...", file=sys.stderr)
    await produce(bootstrap, env.interactions, records)
    trainer = start_trainer(env)
    assert trainer.proc is not None
    run = throughput_run(env, len(records), trainer.proc.pid)
    worker: Worker = run["worker"]
    try:
        redis_mem = await redis_bytes(env)
        rss = run["rss"]
        warm = [r for c, r in rss if c >= len(records) * 0.2]
        half = [r for c, r in rss if c >= len(records) * 0.5]
        hist = worker.metrics()
        trained = patient_metrics(trainer)
    finally:
        worker.stop()
        trainer.stop()
    latency = {}
    rates = {"half_load": run["events_per_s"] / 2, "at_1000_events_per_s": 1000.0}
    try:
        for name, rate in rates.items():
            print(f"latency {name} ({rate:.0f} events/s) ...", file=sys.stderr)
            latency[name] = await latency_run(env, rate=rate, seconds=args.latency_seconds)
            env.db += 2  # the next run's fresh Redis database
    finally:
        reap_workers()
    return {
        "events": len(records),
        "partitions": args.partitions,
        "baseline_events_per_s": round(baseline),
        "worker_events_per_s": round(run["events_per_s"]),
        "ratio_to_baseline": round(run["events_per_s"] / baseline, 3),
        "latency": latency,
        "backlog_alerts": metric_sum(hist, "disengage_alerts_total"),
        "backlog_model_versions_loaded": metric_sum(
            hist, "disengage_model_loads_total", result="loaded"
        ),
        # read by the trainer: learned at once, held for their turn or late
        "trainer_sessions_read": sum(
            metric_sum(trained, "disengage_trainer_records_total", status=status)
            for status in ("learned", "held", "late")
        ),
        "trainer_sessions_learned": metric_sum(trained, "disengage_trainer_examples"),
        "batch_stage_share": stage_shares(hist),
        "gc": gc_pauses(hist),
        "cpu": run["cpu"],
        "redis": redis_mem,
        "rss_mb": {
            "after_20pct": round(warm[0], 1) if warm else None,
            "end": round(rss[-1][1], 1) if rss else None,
            "max": round(max(r for _, r in rss), 1) if rss else None,
            "growth_after_warmup_mb": round(rss[-1][1] - warm[0], 1) if warm else None,
            # the memory target: flat (within 5%) over the second half of the run
            # (from 1M to 2M events with --events 2000000)
            "at_half": round(half[0], 1) if half else None,
            "growth_second_half_pct": (
                round(100 * (rss[-1][1] - half[0]) / half[0], 1) if half and rss else None
            ),
        },
    }


def gc_pauses(samples: dict[str, float]) -> dict[str, float]:
    """The worker's full garbage collections (count, seconds in all) and its
    collections of any generation that paused it for over 100 ms."""
    name = "disengage_gc_pause_seconds"
    count = metric_sum(samples, f"{name}_count")
    under = metric_sum(samples, f"{name}_bucket", le="0.1")
    return {
        "full_collections": metric_sum(samples, f"{name}_count", generation="2"),
        "full_seconds": round(metric_sum(samples, f"{name}_sum", generation="2"), 3),
        "pauses_over_100ms": count - under,
    }


def stalls(samples: dict[str, float]) -> dict[str, float]:
    """Event-loop lags over 250 ms, and holds of the batch lock over 250 ms by
    each holder other than a batch (those are ``batches_over_250ms``)."""
    lag = "disengage_event_loop_lag_seconds"
    held = "disengage_lock_held_seconds"
    out = {
        "loop_lags_over_250ms": metric_sum(samples, f"{lag}_count")
        - metric_sum(samples, f"{lag}_bucket", le="0.25"),
        "loop_lag_seconds": round(metric_sum(samples, f"{lag}_sum"), 3),
    }
    for holder in ("commit", "rebalance", "expiry_sweep", "checkpoint"):
        out[f"{holder}_holds_over_250ms"] = metric_sum(
            samples, f"{held}_count", holder=holder
        ) - metric_sum(samples, f"{held}_bucket", holder=holder, le="0.25")
        out[f"{holder}_held_seconds"] = round(metric_sum(samples, f"{held}_sum", holder=holder), 3)
    return out


def stage_shares(samples: dict[str, float]) -> dict[str, float]:
    """Each stage's share of the worker's batch time (``disengage_batch_stage_seconds``)."""
    sums = {
        stage: metric_sum(samples, "disengage_batch_stage_seconds_sum", stage=stage)
        for stage in BATCH_STAGES
    }
    total = sum(sums.values())
    return {stage: round(value / total, 3) for stage, value in sums.items()} if total else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--baseline-events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--latency-seconds", type=float, default=60.0)
    ap.add_argument(
        "--skip-backlog",
        action="store_true",
        help="only the latency phase, at --latency-rate events/s",
    )
    ap.add_argument("--latency-rate", type=float, default=None)
    ap.add_argument(
        "--floor",
        type=float,
        default=1000.0,
        help="fail when the worker is slower than this many events/s",
    )
    args = ap.parse_args()
    figures = asyncio.run(main_async(args))
    print(json.dumps(figures, indent=1))
    return 0 if figures.get("worker_events_per_s", args.floor) >= args.floor else 1


if __name__ == "__main__":
    sys.exit(main())
