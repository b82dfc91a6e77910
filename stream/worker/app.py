"""The Faust app: Kafka in, Redis state, alerts out, metrics on /metrics.

``create_app(settings)`` is the composition root of the streaming worker: it
builds the metrics, the session store, the batch processor and the Faust app
with its agent, timers, rebalance hooks and web pages. Nothing connects at
import time. ``disengage worker`` runs it; ``faust -A stream.worker.app worker``
works too (the module attribute ``app`` is built from the environment on
first access).

Delivery is at least once with idempotent effects: :class:`Intake`
(``stream/worker/intake.py``) reads the input a whole fetch at a time, and a
batch's offsets are committed only after :meth:`BatchProcessor.process`
returned, that is after the alerts were acknowledged by the broker, and
below the first record whose session state is not written yet (write-behind,
``DISENGAGE_STATE_FLUSH_S``). A failing batch is retried in place; it is never
skipped. Faust runs the rest: the shared hotspot agent, the timers, the
producer and the web pages.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import faust
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from detectors.models import MODEL_NAME
from stream.kafka_io import KafkaSink
from stream.metrics import Metrics
from stream.model_registry import ModelRegistry
from stream.records import Message, Record
from stream.redis_store import open_store
from stream.retry import backoff, cancelled_by_caller, retry_forever
from stream.settings import Settings
from stream.worker.faults import Fault, describe, quiet_library_repeats
from stream.worker.faust_tuning import (
    LeanMonitor,
    cython_loaded,
    install_uvloop,
    set_fetch_max_wait,
)
from stream.worker.gc_pauses import GcPauses
from stream.worker.health import BrokerProbe, readiness, update_gauges
from stream.worker.hotspot_agent import SharedHotspots
from stream.worker.intake import Intake, carry_over_page_offsets, pages_group
from stream.worker.model_feed import ModelFeed
from stream.worker.pipeline import BatchProcessor
from stream.worker.stalls import BatchLock, LoopLag

log = logging.getLogger("disengage.worker")

T = TypeVar("T")

GAUGE_INTERVAL_S = 5.0
#: Sessions an expiry sweep handles per turn of the batch lock (timed out
#: and quiet ones, each): ~0.3-0.5 ms a session, so a batch waits at most
#: some 50 ms behind a slice.
SWEEP_SLICE = 100
#: The batch lock's holder label (``disengage_lock_held_seconds``) of each timer job.
LOCK_HOLDERS = {"Expiry sweep": "expiry_sweep", "Hotspot checkpoint": "checkpoint"}
#: Slices per partition per sweep tick; what is left goes on at the next tick.
SWEEP_SLICES_PER_TICK = 50
#: Longest wait for the shared monitors' checkpoint at shutdown (seconds):
#: its store calls retry forever, and a stop must not hang on a dead Redis.
SHUTDOWN_CHECKPOINT_S = 10.0
#: Backoff between tries of a failed batch: 0.5 s, doubling, at most 10 s.
BATCH_BACKOFF = (0.5, 10.0)


async def produce_with(
    app: faust.App, timeout_s: float, topic: str, records: Sequence[Record]
) -> None:
    """Produce through the Faust app's own producer (acks=all); return after
    the acks, or raise ``TimeoutError`` after ``timeout_s`` (the batch is then
    retried: a broker that cannot acknowledge must not hang it silently)."""

    async def send_all() -> None:
        producer = app.producer
        futures = [
            await producer.send(topic, r.key, r.value, None, None, r.headers) for r in records
        ]
        await asyncio.gather(*futures)

    await asyncio.wait_for(send_all(), timeout=timeout_s)


class Runtime:
    """Everything the app's callbacks share; one per worker process."""

    def __init__(self, settings: Settings, app: faust.App) -> None:
        self.settings = settings
        self.metrics = Metrics()
        cython = settings.faust_cython and cython_loaded()
        self.metrics.info.info(
            {
                "consumer_group": settings.consumer_group,
                "topic": settings.topic_interactions,
                "faust_cython": str(cython).lower(),
                "event_loop": type(asyncio.get_event_loop_policy()).__module__.split(".")[0],
            }
        )
        if settings.faust_cython and not cython:
            log.warning("Faust's Cython fast paths did not load: running the pure-Python ones")
        ttl_s = settings.detector.session_timeout_ms / 1000 + settings.session_ttl_margin_s
        self.store = open_store(
            settings.redis_url,
            ttl_s,
            password=settings.redis_password,
            tls=settings.redis_tls,
            cluster=settings.redis_cluster,
            observe=self.metrics.observe_redis,
            namespace=settings.topic_interactions,
            clock=time.monotonic,
        )
        self.sink = KafkaSink(partial(produce_with, app, settings.produce_timeout_s), settings)
        # the published model versions; a memory:// store has no registry
        # (the worker then serves untrained models: transparent rules only)
        client = getattr(self.store, "client", None)
        self.feed = (
            ModelFeed(ModelRegistry(client, settings.topic_interactions), self.metrics)
            if client is not None
            else None
        )
        self.processor = BatchProcessor(
            settings.detector,
            self.store,
            self.sink,
            self.metrics,
            clock=time.time,
            idle_grace_s=settings.idle_grace_s,
            cache_sessions=settings.state_cache_sessions,
            feed=self.feed,
            share_hotspots=settings.hotspot_scope == "shared",
            flush_s=settings.state_flush_s,
            sweep_interval_s=settings.sweep_interval_s,
            input_partitions=settings.topic_partitions,
        )
        #: the shared hotspot monitors of the owned page-visits partitions
        #: (hotspot scope ``shared``; ``None``: each partition watches its own)
        self.hotspots = (
            SharedHotspots(
                settings.detector,
                self.store,
                self.sink,
                self.metrics,
                clock=time.time,
                version=self.served_version,
            )
            if settings.hotspot_scope == "shared"
            else None
        )
        self.hotspot_lock = asyncio.Lock()  # visit batches, their checkpoints and rebalances
        self.gc = GcPauses(
            self.metrics.gc_pause_seconds,
            freeze=settings.gc_freeze,
            unfreeze_interval_s=settings.gc_unfreeze_interval_s,
        )
        self.broker = BrokerProbe(settings)
        # batches, sweeps and rebalances never interleave; each hold is timed
        self.lock = BatchLock(self.metrics.lock_held_seconds)
        self.loop_lag = LoopLag(self.metrics.loop_lag_seconds)
        self.intake: Intake  # the input consumer, set by create_app
        self.started_at = time.time()
        self.last_batch_at = 0.0
        self.batches = Fault("Batches", log)
        self.maintenance = {
            name: Fault(name, log) for name in ("Expiry sweep", "Hotspot checkpoint", "Gauges")
        }

    @property
    def healthy(self) -> bool:
        """Batches succeed: the last one was not a failure being retried."""
        return not self.batches.failing

    def owned(self, tps: Any, topic: str | None = None) -> list[int]:
        """The partitions of ``topic`` (default: the input topic) among ``tps``."""
        topic = topic or self.settings.topic_interactions
        return sorted(tp.partition for tp in tps if tp.topic == topic)

    def served_version(self) -> str:
        """The model version the worker serves (named in hotspot alerts)."""
        current = self.feed.current if self.feed is not None else None
        return current.tag if current is not None else f"{MODEL_NAME}@0"


def _credentials(settings: Settings) -> Any:
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = (
        ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
        if protocol.endswith("SSL")
        else None
    )
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def create_app(settings: Settings) -> faust.App:
    """Build the worker app (no network activity until it starts)."""
    set_fetch_max_wait(settings.kafka_fetch_max_wait_ms)
    datadir = Path(tempfile.gettempdir()) / "disengage-faust"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    brokers = ";".join(f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(","))
    app = faust.App(
        # Faust consumes the page-visits topic only, in a group of its own
        # (the worker's group reads the input: stream.worker.intake)
        pages_group(settings),
        broker=brokers,
        broker_credentials=_credentials(settings),
        store="memory://",
        # Faust writes <id>-data/ even with the memory store: keep it out of
        # the working directory
        datadir=str(datadir / pages_group(settings)),
        topic_partitions=settings.topic_partitions,
        web_enabled=True,
        web_port=settings.metrics_port,
        web_bind=settings.metrics_bind,
        # commit acked offsets every second; only acked (= fully processed)
        # messages are ever committed
        broker_commit_interval=1.0,
        broker_commit_every=10_000,
        stream_wait_empty=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        topic_disable_leader=True,
        producer_acks=-1,
        producer_request_timeout=settings.produce_timeout_s,
        logging_config=None,
        cython_optimizations=settings.faust_cython,
        Monitor=LeanMonitor,
    )
    runtime = Runtime(settings, app)
    app.disengage = runtime  # type: ignore[attr-defined]
    # raw bytes both ways; declared with the configured partition count
    interactions, alerts_topic, dlq_topic = (
        app.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
            internal=True,
        )
        for name in (settings.topic_interactions, settings.topic_alerts, settings.topic_dlq)
    )
    # one partition: one trainer learns the examples in the order they closed
    training_topic = app.topic(
        settings.topic_training,
        key_serializer="raw",
        value_serializer="raw",
        partitions=1,
        internal=True,
    )

    # the input: whole fetches to the batch processor, outside Faust's
    # per-message agent path (stream.worker.intake)
    intake = runtime.intake = Intake(
        settings,
        partial(_run_batch, runtime),
        assigned=partial(_assigned, runtime),
        revoked=partial(_revoked, runtime),
        lock=runtime.lock,
        settle=runtime.processor.settle,
        fenced=lambda: runtime.processor.fenced,
    )

    @app.task
    async def loop_lag() -> None:
        await runtime.loop_lag.run()

    @app.task
    async def consume() -> None:
        await interactions.maybe_declare()
        runtime.gc.install()
        try:
            await intake.run()
        finally:
            runtime.gc.uninstall()

    # keyed by hotspot key: one partition's monitor sees every visit of a page
    visits_topic = app.topic(
        settings.topic_page_visits,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        internal=True,
    )
    hotspots = runtime.hotspots

    # Faust's only agent. With DISENGAGE_HOTSPOT_SCOPE=partition no worker
    # sends page visits, but the agent stays: Faust's consumer cannot start
    # with nothing to subscribe to.
    @app.agent(visits_topic)
    async def watch_pages(stream: Any) -> None:
        async for events in stream.take_events(
            settings.batch_size, within=settings.batch_timeout_s
        ):
            messages = [_message(ev) for ev in events]
            if hotspots is None:
                log.warning(
                    "%d page visit(s) ignored: this worker watches hotspots per partition "
                    "(DISENGAGE_HOTSPOT_SCOPE=partition) while another sends them",
                    len(messages),
                )
                continue
            # store calls and produces inside retry until they succeed;
            # nothing else raises on input (bad records are dead-lettered)
            async with runtime.hotspot_lock:
                await hotspots.process(messages)

    @app.task
    async def declare_topics() -> None:
        quiet_library_repeats()  # Faust has set its log handlers up by now
        for topic in (alerts_topic, dlq_topic, training_topic, visits_topic):
            await topic.maybe_declare()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        pages = runtime.owned(revoked, settings.topic_page_visits)
        if hotspots is not None and pages:
            async with runtime.hotspot_lock:
                await hotspots.revoke(pages)
            log.info("revoked page-visits partitions %s (monitors checkpointed)", pages)

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[TP], **kwargs: Any) -> None:
        pages = runtime.owned(assigned, settings.topic_page_visits)
        if hotspots is not None and pages:
            async with runtime.hotspot_lock:
                await hotspots.assign(pages)
            log.info("assigned page-visits partitions %s", pages)

    @app.on_before_shutdown.connect
    async def final_checkpoint(app: faust.App, **kwargs: Any) -> None:
        # the batch in flight ends and its offsets are committed first
        await intake.stop(SHUTDOWN_CHECKPOINT_S)
        # a stop does not always revoke first (e.g. SIGTERM right after an
        # assignment): checkpoint whatever is still owned
        if runtime.processor.partitions:

            async def locked_partitions_checkpoint() -> None:
                async with runtime.lock.hold("shutdown"):
                    await runtime.processor.checkpoint()

            try:
                await asyncio.wait_for(locked_partitions_checkpoint(), SHUTDOWN_CHECKPOINT_S)
                log.info("hotspots checkpointed at shutdown")
            except Exception as exc:
                log.error("hotspot checkpoint at shutdown failed: %s", describe(exc))
        if hotspots is not None and hotspots.monitors:

            async def locked_checkpoint() -> None:
                async with runtime.hotspot_lock:
                    await hotspots.checkpoint()

            try:
                # the lock too: an agent retrying against a dead Kafka holds it
                await asyncio.wait_for(locked_checkpoint(), SHUTDOWN_CHECKPOINT_S)
                log.info("shared hotspot monitors checkpointed at shutdown")
            except Exception as exc:
                log.error("shared hotspot checkpoint at shutdown failed: %s", describe(exc))
        await runtime.broker.close()

    @app.timer(interval=settings.model_poll_s)
    async def models() -> None:
        # outside the batch lock: the load runs in a thread, and the version
        # is adopted at the start of the next batch
        if runtime.feed is not None:
            await runtime.feed.poll()
            runtime.metrics.model_age.set(runtime.feed.age_s())

    @app.timer(interval=settings.sweep_interval_s)
    async def sweep() -> None:
        if not _may_sweep(runtime):
            return  # Redis or Kafka is down, or batches are failing: a later tick sweeps
        closed = 0
        for p in list(runtime.processor.partitions):
            # one partition and one slice per turn of the lock: a batch waiting
            # for it goes in between (a sweep of every partition once held
            # batches up to 5 s after a model version armed the hesitation
            # checks; slices of 1,000 sessions took up to 1.06 s at half load)
            job = partial(runtime.processor.sweep, limit=SWEEP_SLICE, partitions=[p])
            for _ in range(SWEEP_SLICES_PER_TICK):
                closed += await _maintain(runtime, "Expiry sweep", job) or 0
                if not runtime.processor.sweep_left:
                    break
        if closed:
            log.info("closed %d idle session(s)", closed)
        if _may_sweep(runtime):
            # after the sweep: the trainer learns what every partition has passed
            await _maintain(runtime, "Expiry sweep", runtime.processor.send_marks)

    @app.timer(interval=settings.checkpoint_interval_s)
    async def checkpoint() -> None:
        if runtime.processor.store_fault.failing:
            return  # the checkpoint age gauge shows it; retried next interval
        await _maintain(runtime, "Hotspot checkpoint", runtime.processor.checkpoint)
        if hotspots is not None:
            fault = runtime.maintenance["Hotspot checkpoint"]
            try:
                async with runtime.hotspot_lock:
                    await hotspots.checkpoint()
            except Exception as exc:
                fault.failed(exc, "shared hotspot checkpoint")

    @app.timer(interval=GAUGE_INTERVAL_S)
    async def gauges() -> None:
        fault = runtime.maintenance["Gauges"]
        try:
            await update_gauges(app, runtime)
        except Exception as exc:
            fault.failed(exc, "gauge update")
        else:
            fault.ok()

    @app.page("/metrics")
    async def metrics_page(self: View, request: Request) -> Response:
        body = generate_latest(runtime.metrics.registry)
        return self.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        return self.json({"status": "ok", "uptime_s": round(time.time() - runtime.started_at)})

    @app.page("/readyz")
    async def readyz(self: View, request: Request) -> Response:
        ready, store_ok = await readiness(app, runtime)
        body = {
            "ready": ready,
            "partitions": sorted(runtime.processor.partitions),
            "kafka": runtime.broker.up,
            "store": store_ok,
            "rebalancing": bool(app.rebalancing or runtime.intake.rebalancing),
            "batches_ok": runtime.healthy,
        }
        return self.json(body, status=200 if ready else 503)

    return app


def _message(ev: Any) -> Message:
    """A Faust event as the pipeline's :class:`Message` (raw bytes)."""
    return Message(
        value=None if ev.value is None else bytes(ev.value),
        key=None if ev.key is None else bytes(ev.key),
        topic=ev.message.topic,
        partition=ev.message.partition,
        offset=ev.message.offset,
        timestamp_ms=int(ev.message.timestamp * 1000),
    )


async def _run_batch(runtime: Runtime, messages: list[Message], generation: int) -> None:
    """One batch, retried in place until it succeeds (never skipped) or its
    partitions are revoked (``generation``, see :class:`Intake`);
    :class:`~stream.retry.Stopped` when the worker stops meanwhile."""
    await retry_forever(
        partial(_process, runtime, messages, generation),
        wait=backoff(*BATCH_BACKOFF),
        on_failure=partial(_batch_failed, runtime, len(messages)),
        stop=runtime.intake.stopping,
    )
    runtime.batches.ok()
    # a partition whose event time moved a sweep interval on is swept now (one
    # slice each, one partition per hold of the lock, as the timer does), not
    # at the timer's next tick: in a backlog that is minutes of event time
    # later, and its sessions would time out in one burst
    for p in runtime.processor.sweeps_behind():
        if not _may_sweep(runtime) or runtime.intake.stopping.is_set():
            break
        job = partial(runtime.processor.sweep, limit=SWEEP_SLICE, partitions=[p])
        await _maintain(runtime, "Expiry sweep", job)
    runtime.gc.tick()  # between batches: freeze what the last collections kept
    runtime.last_batch_at = time.time()
    runtime.metrics.last_batch.set(runtime.last_batch_at)


def _may_sweep(runtime: Runtime) -> bool:
    """False while Redis or Kafka is down or batches are failing: a sweep
    would only wait for them, holding the batch lock."""
    return not (
        runtime.processor.store_fault.failing or not runtime.healthy or not runtime.broker.up
    )


async def _assigned(runtime: Runtime, parts: list[int]) -> None:
    consumer = runtime.intake.consumer
    known = (
        None
        if consumer is None
        else consumer.partitions_for_topic(runtime.settings.topic_interactions)
    )
    if known:  # the topic's own count (it may predate DISENGAGE_TOPIC_PARTITIONS)
        runtime.processor.input_partitions = max(known) + 1
    await runtime.processor.assign(parts)
    log.info("assigned partitions %s", parts)


async def _revoked(runtime: Runtime, parts: list[int]) -> None:
    await runtime.processor.revoke(parts)
    for p in parts:
        # with shared monitors the hotspot series name page-visits partitions
        runtime.metrics.forget_partition(p, hotspots=runtime.hotspots is None)
    log.info("revoked partitions %s (hotspots checkpointed)", parts)


async def _process(runtime: Runtime, messages: list[Message], generation: int) -> None:
    try:
        async with runtime.lock.hold("batch"):  # batches, sweeps and rebalances never interleave
            if runtime.intake.generation != generation:
                # revoked while the batch waited to be tried again: it is the
                # next owner's now (processing it would take the partitions back)
                log.info("a batch of %d was dropped: its partitions were revoked", len(messages))
                return
            await runtime.processor.process(messages)
    except asyncio.CancelledError as exc:
        if cancelled_by_caller():
            raise  # the worker stops: Faust cancels the agent
        # a library's stray cancellation must not end the input loop: it is
        # a failure like any other, retried
        raise RuntimeError("a client call was cancelled from inside") from exc


async def _maintain(runtime: Runtime, name: str, job: Callable[[], Awaitable[T]]) -> T | None:
    """Run a timer's ``job`` under the batch lock; a failure is logged once
    per outage (:class:`Fault`) and retried on the next tick."""
    fault = runtime.maintenance[name]
    try:
        async with runtime.lock.hold(LOCK_HOLDERS[name]):
            result = await job()
    except Exception as exc:
        fault.failed(exc, name.lower())
        return None
    fault.ok()
    return result


def _batch_failed(runtime: Runtime, size: int, exc: BaseException, delay: float) -> None:
    runtime.batches.failed(exc, f"a batch of {size} (retried in place, never skipped)")


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    """Run until SIGTERM/SIGINT: the input's batch in flight ends, its
    partitions are checkpointed and committed (:meth:`Intake.stop`), the
    hotspot monitors are checkpointed, then the process exits."""
    loop = install_uvloop(settings.uvloop)
    if settings.hotspot_scope == "shared":
        _carry_over(settings)
    app = create_app(settings)
    log.info(
        "event loop %s, Faust Cython fast paths %s",
        loop,
        "on" if settings.faust_cython and cython_loaded() else "off",
    )
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    # with a quiet worker Faust installs a DEBUG spinner on the root logger,
    # which makes every debug record of faust/aiokafka cost time
    worker.spinner = None
    worker.execute_from_commandline()


def _carry_over(settings: Settings, tries: int = 6, wait_s: float = 5.0) -> None:
    """Copy the previous release's page-visits offsets (see
    :func:`carry_over_page_offsets`) before Faust starts, trying for about
    half a minute while the brokers cannot be reached (the copy happens only
    while the pages group has no offsets of its own)."""
    for attempt in range(1, tries + 1):
        try:
            asyncio.run(asyncio.wait_for(carry_over_page_offsets(settings), 30.0))
            return
        except Exception as exc:
            if attempt == tries:
                log.warning(
                    "page-visits offsets not carried over (%s): a worker upgraded from the "
                    "previous release reads the page-visits topic from its start",
                    describe(exc),
                )
                return
            time.sleep(wait_s)


def __getattr__(name: str) -> Any:
    """``faust -A stream.worker.app worker``: build ``app`` from the environment."""
    if name == "app":
        built = create_app(Settings.from_env())
        globals()["app"] = built
        return built
    raise AttributeError(name)
