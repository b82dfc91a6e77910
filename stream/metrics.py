"""Prometheus metrics of the worker, in one place.

Built on an injected ``CollectorRegistry`` with explicit buckets. Every label
has a bounded set of values: event types and invalid reasons are closed
lists, alert kinds and severities too, partitions are bounded by the topic,
hotspot keys by ``hotspot_max_keys``. No label ever carries a session id, a
user id or a raw page path.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
)

from detectors.alerts import ALERT_KINDS, SEVERITIES
from detectors.config import EVENT_TYPES
from detectors.detector import DEAD_LETTER_STATUSES, OUTCOMES, STATUSES
from detectors.events import INVALID_REASONS
from detectors.hotspots import HotspotMonitor
from detectors.uplift import CONTROL, TREATED, UpliftTracker
from stream.collector.metrics import CollectorMetrics

#: Every ``dlq.reason`` the worker writes: the parser's, plus ``late_event``
#: (older than its session's newest event by more than the allowed lateness),
#: ``after_close`` (after its session's purchase, or at or before its close by
#: exit or timeout), ``tombstone`` (a record with a null value) and
#: ``invalid_visits`` (a page-visits record the shared hotspot monitors cannot read).
DLQ_REASONS: tuple[str, ...] = (
    *INVALID_REASONS,
    *DEAD_LETTER_STATUSES.values(),
    "tombstone",
    "invalid_visits",
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Garbage-collection pauses (seconds): young collections take microseconds, a full one
#: of a large heap hundreds of milliseconds.
GC_PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: The stages of a worker batch, in order (``disengage_batch_stage_seconds``).
BATCH_STAGES = ("recover", "parse", "load", "detect", "save", "produce", "gauges")
#: How late the worker's event loop woke a 100 ms sleeper (seconds).
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
REDIS_OPS = (
    "load",
    "save",
    "due",
    "checks_due",
    "pending",
    "open_sessions",
    "save_blob",
    "load_blob",
    "ping",
    "claim",
)


class Metrics:
    """All worker metrics; pass ``registry`` to isolate (tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.events = Counter(
            "disengage_events_total", "Events consumed, by event type.", ["type"], registry=r
        )
        self.event_status = Counter(
            "disengage_event_status_total",
            "Valid events by what the detector did with them.",
            ["status"],
            registry=r,
        )
        self.invalid = Counter(
            "disengage_invalid_events_total",
            "Invalid events sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.alerts = Counter(
            "disengage_alerts_total", "Alerts produced.", ["kind", "severity"], registry=r
        )
        self.event_to_alert = Histogram(
            "disengage_event_to_alert_seconds",
            "From the triggering event's time to the alert's produce acknowledgement.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "disengage_batch_seconds",
            "Processing time of one batch, consume to commit-ready.",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_stage_seconds = Histogram(
            "disengage_batch_stage_seconds",
            "Time of one stage of a batch: recover (pending outboxes after a failed produce), "
            "parse, load (states, and models of newly owned partitions), detect, save (the "
            "states with an outbox, then the others while the dead letters, alerts and "
            "training examples are produced; with a state flush interval the others are only "
            "marked dirty), produce (what is left of their acks, and the page visits when "
            "there is no flush interval), gauges (model gauges).",
            ["stage"],
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.lock_held_seconds = Histogram(
            "disengage_lock_held_seconds",
            "Time the batch lock was held, by holder: batch, commit (the state writes due "
            "before an offset commit), rebalance, expiry_sweep (one slice), checkpoint, "
            "shutdown. Batches wait while another holder has it (stream/worker/stalls.py).",
            ["holder"],
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.loop_lag_seconds = Histogram(
            "disengage_event_loop_lag_seconds",
            "How late the event loop woke a 100 ms sleeper: time it could run nothing "
            "(CPU work outside the batches, a thread holding the GIL, a garbage collection).",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.gc_pause_seconds = Histogram(
            "disengage_gc_pause_seconds",
            "Pause of one garbage collection by generation (2: full); the event loop waits.",
            ["generation"],
            buckets=GC_PAUSE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "disengage_batch_size", "Events per batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.states_flushed = Counter(
            "disengage_states_flushed_total",
            "Session states written by the periodic flush (DISENGAGE_STATE_FLUSH_S): "
            "batches leave the states without an outbox dirty in the worker's cache.",
            registry=r,
        )
        self.partitions_fenced = Counter(
            "disengage_partitions_fenced_total",
            "Owned partitions found claimed by another worker when writing their states (this "
            "worker was dropped from the group and came back): their unwritten states are "
            "dropped, and the new owner reads their events again from the last commit.",
            registry=r,
        )
        self.dirty_states = Gauge(
            "disengage_dirty_states",
            "Session states changed and not yet written to Redis (written at the next flush, "
            "before the input's offsets are committed).",
            registry=r,
        )
        self.active_sessions = Gauge(
            "disengage_active_sessions", "Open sessions in the owned partitions.", registry=r
        )
        self.sessions_closed = Counter(
            "disengage_sessions_closed_total",
            "Sessions closed, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.trust_auc = Gauge(
            "disengage_trust_auc",
            "Rolling ROC-AUC of the served trust model against real outcomes (0.5 = chance), "
            "as the trainer measured it (predict first, then learn).",
            registry=r,
        )
        self.trust_log_loss = Gauge(
            "disengage_trust_log_loss", "Rolling log-loss of the trust score (nats).", registry=r
        )
        self.trust_learned = Gauge(
            "disengage_trust_sessions_learned",
            "Closed sessions the served trust model has learned from (all partitions).",
            registry=r,
        )
        self.trust_score = Histogram(
            "disengage_trust_score",
            "Trust scores (P(goal | session so far)) at scoring points.",
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.redis_seconds = Histogram(
            "disengage_redis_seconds",
            "Redis round-trip latency.",
            ["op"],
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        self.redis_errors = Counter(
            "disengage_redis_errors_total", "Failed Redis operations.", ["op"], registry=r
        )
        self.consumer_lag = Gauge(
            "disengage_consumer_lag",
            "Messages behind the high watermark not processed yet, per owned input partition "
            "(the committed offsets trail by up to DISENGAGE_STATE_FLUSH_S: write-behind).",
            ["partition"],
            registry=r,
        )
        self.checkpoint_age = Gauge(
            "disengage_model_checkpoint_age_seconds",
            "Seconds since the oldest checkpoint to Redis of the owned partitions' local state "
            "(alert budget; hotspot monitors: of the input partitions with hotspot scope "
            "partition, of the page-visits partitions with scope shared).",
            registry=r,
        )
        self.hotspot_rate = Gauge(
            "disengage_hotspot_problem_rate",
            "Share of recent visits with friction or abandonment (0-1), per page type and "
            "step, as seen by the monitor of one page-visits partition (hotspot scope shared: "
            "every visit of the page) or of one input partition (scope partition).",
            ["page_type", "step", "partition"],
            registry=r,
        )
        self.page_visits = Counter(
            "disengage_page_visits_total",
            "Page visits sent to the shared hotspot monitors (side=sent, by the sessions' "
            "workers) and observed by them (side=observed, by the monitors' workers).",
            ["side"],
            registry=r,
        )
        self.hotspots_open = Gauge(
            "disengage_hotspots_open", "Page types/steps with an open incident.", registry=r
        )
        self.dlq = Counter(
            "disengage_dlq_messages_total",
            "Messages written to the dead-letter topic.",
            ["reason"],
            registry=r,
        )
        self.budget_suppressed = Counter(
            "disengage_alerts_suppressed_total",
            "Alerts suppressed by the alert budget.",
            registry=r,
        )
        self.ready = Gauge(
            "disengage_worker_ready",
            "1 while the worker owns partitions, reaches Redis and its batches succeed.",
            registry=r,
        )
        self.last_batch = Gauge(
            "disengage_last_batch_timestamp_seconds",
            "Unix time of the last successfully processed batch (0 = none yet).",
            registry=r,
        )
        self.kafka_up = Gauge(
            "disengage_kafka_up",
            "1 while the worker's last metadata request to the Kafka brokers succeeded "
            "(probed every 5 s).",
            registry=r,
        )
        self.redis_up = Gauge(
            "disengage_redis_up",
            "1 while Redis answered the worker's last ping within 1 s (probed every 5 s).",
            registry=r,
        )
        self.clock_ahead = Counter(
            "disengage_clock_ahead_total",
            "Events further ahead of their partition's stream clock than "
            "DISENGAGE_MAX_CLOCK_SKEW_MS (a client clock that is wrong): applied to their "
            "session, but they do not move the clock.",
            ["partition"],
            registry=r,
        )
        self.produce_failures = Counter(
            "disengage_produce_failures_total",
            "Produce calls that failed or timed out (the batch is retried; outboxes are "
            "delivered before its offsets are committed).",
            ["what"],
            registry=r,
        )
        self.training_examples = Counter(
            "disengage_training_examples_total",
            "Labelled examples of closed sessions produced to the training topic.",
            registry=r,
        )
        self.model_version = Gauge(
            "disengage_model_version",
            "Number of the published model version the worker serves (0 = none yet: the "
            "model-based rules are off).",
            registry=r,
        )
        self.model_age = Gauge(
            "disengage_model_age_seconds",
            "Age of the model version the worker serves (seconds since the trainer published "
            "it; 0 = none yet).",
            registry=r,
        )
        self.model_loads = Counter(
            "disengage_model_loads_total",
            "Model versions loaded by the worker, by result (loaded, failed).",
            ["result"],
            registry=r,
        )
        self.info = Info("disengage_worker", "Worker build and model information.", registry=r)
        # process_* (CPU, RSS, open fds) for the worker-health panel
        ProcessCollector(registry=r)
        self._prime()

    def _prime(self) -> None:
        """Create every labelled series at 0, so dashboards show them at once."""
        for etype in sorted(EVENT_TYPES):
            self.events.labels(etype)
        for status in STATUSES:
            self.event_status.labels(status)
        for reason in DLQ_REASONS:
            self.invalid.labels(reason)
            self.dlq.labels(reason)
        for kind in ALERT_KINDS:
            self.event_to_alert.labels(kind)
            for severity in SEVERITIES:
                self.alerts.labels(kind, severity)
        for outcome in OUTCOMES:
            self.sessions_closed.labels(outcome)
        for op in REDIS_OPS:
            self.redis_seconds.labels(op)
            self.redis_errors.labels(op)
        for what in ("alerts", "dead_letters", "training", "visits"):
            self.produce_failures.labels(what)
        for side in ("sent", "observed"):
            self.page_visits.labels(side)
        for result in ("loaded", "failed"):
            self.model_loads.labels(result)
        for stage in BATCH_STAGES:
            self.batch_stage_seconds.labels(stage)
        self.kafka_up.set(1)
        self.redis_up.set(1)

    def forget_partition(self, partition: int, hotspots: bool = True) -> None:
        """Drop the per-partition series of an input partition this worker no
        longer owns (``hotspots``: its hotspot rates too, when they are the
        input partition's: hotspot scope ``partition``)."""
        label = str(partition)
        for labels in list(self.consumer_lag._metrics):
            if labels == (label,):
                self.consumer_lag.remove(*labels)
        for labels in list(self.clock_ahead._metrics):
            if labels == (label,):
                self.clock_ahead.remove(*labels)
        for labels in list(self.hotspot_rate._metrics) if hotspots else []:
            if labels[2] == label:
                self.hotspot_rate.remove(*labels)

    def show_hotspots(self, monitors: Mapping[int, HotspotMonitor]) -> None:
        """Every ``hotspot_rate`` series and the open incidents from the
        monitors (partition number -> monitor) this worker holds; series of
        keys a monitor evicted, or of partitions given up, disappear."""
        rates: dict[tuple[str, str, str], float] = {}
        open_keys = 0
        for number, monitor in monitors.items():
            for key in monitor.keys:
                rate = monitor.rate(key)
                if rate is not None:
                    page_type, _, step = key.partition("/")
                    rates[(page_type, step, str(number))] = rate
            open_keys += len(monitor.open_incidents())
        for labels in list(self.hotspot_rate._metrics):
            if labels not in rates:
                self.hotspot_rate.remove(*labels)
        for labels, rate in rates.items():
            self.hotspot_rate.labels(*labels).set(rate)
        self.hotspots_open.set(open_keys)

    def observe_redis(self, op: str, seconds: float) -> None:
        self.redis_seconds.labels(op).observe(seconds)


class TrainerMetrics:
    """Metrics of ``disengage trainer`` (``DISENGAGE_TRAINER_METRICS_PORT``), on
    a registry of their own; pass ``registry`` to isolate (tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.records = Counter(
            "disengage_trainer_records_total",
            "Training records read, by what the trainer did: learned (at once: no closure "
            "marks yet), held (for its turn in close order), late (closed before the "
            "watermark: learned at once), ahead (closed further ahead of its production "
            "than max_clock_skew_ms: learned at once), mark (a closure mark), duplicate (an id "
            "learned or held already) or invalid.",
            ["status"],
            registry=r,
        )
        self.active = Gauge(
            "disengage_trainer_active",
            "1 while this trainer owns the training topic and learns (the others stand by).",
            registry=r,
        )
        self.lag = Gauge(
            "disengage_trainer_lag",
            "Training records not yet learned (end offset minus position).",
            registry=r,
        )
        self.held = Gauge(
            "disengage_trainer_held_examples",
            "Examples read and not learned yet: held until every input partition's closure "
            "mark passes their close (DISENGAGE_TRAINER_HOLD_MAX at most), or released and "
            "due (learned in close order, 50 at a time between the consumer's heartbeats).",
            registry=r,
        )
        self.watermark = Gauge(
            "disengage_trainer_watermark_seconds",
            "Event time (Unix seconds) up to which the trainer learned the closed sessions: "
            "the slowest input partition's closure mark (or the last session learned when "
            "more than DISENGAGE_TRAINER_HOLD_MAX waited). time() minus it is how far "
            "learning trails the input.",
            registry=r,
        )
        self.published = Counter(
            "disengage_models_published_total", "Model versions published.", registry=r
        )
        self.publish_seconds = Histogram(
            "disengage_model_publish_seconds",
            "Time to publish one version: pickle, compress, models topic and Redis (seconds).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.version = Gauge(
            "disengage_trainer_model_version", "Number of the latest published version.", registry=r
        )
        self.examples = Gauge(
            "disengage_trainer_examples",
            "Closed sessions the deployment's models learned in total.",
            registry=r,
        )
        self.auc = Gauge(
            "disengage_trainer_auc",
            "Progressive ROC-AUC of the latest version's models (trust: P(goal) on "
            "snapshots; hazard: P(leave soon) on moments); absent until validated.",
            ["model"],
            registry=r,
        )
        self.arena_auc = Gauge(
            "disengage_trainer_challenger_window_auc",
            "ROC-AUC of the trust champion and challenger over the last "
            "challenger_window_sessions sessions, at the last comparison.",
            ["role"],
            registry=r,
        )
        self.promotions = Gauge(
            "disengage_trainer_challenger_promotions",
            "Trust challenger promotions in the models' history (a counter "
            "that survives trainer failover, hence a gauge).",
            registry=r,
        )
        self.uplift = Gauge(
            "disengage_uplift",
            "Uplift of acting on alerts: conversion of alerted treated minus alerted control "
            "sessions (bound=difference), with Newcombe's 95% interval (bound=lower, upper), "
            "overall (dimension=all), by alert kind and by suggested action; absent until "
            "both groups have UPLIFT_MIN_SESSIONS (30) alerted sessions.",
            ["dimension", "value", "bound"],
            registry=r,
        )
        self.uplift_sessions = Gauge(
            "disengage_uplift_sessions",
            "Alerted sessions closed, by holdout group (treatment) and outcome (converted or "
            "not), overall and by kind and action: the counts behind disengage_uplift (a gauge "
            "that survives trainer failover, as the models do).",
            ["dimension", "value", "treatment", "outcome"],
            registry=r,
        )
        for status in ("learned", "duplicate", "invalid"):
            self.records.labels(status)

    def show_uplift(self, tracker: UpliftTracker) -> None:
        """Set the uplift gauges from the models' tracker."""
        for dimension, value in tracker.slices():
            u = tracker.uplift(dimension, value)
            for treatment, arm in ((TREATED, u.treated), (CONTROL, u.control)):
                counts = self.uplift_sessions.labels
                counts(dimension, value, treatment, "converted").set(arm.converted)
                counts(dimension, value, treatment, "not_converted").set(
                    arm.sessions - arm.converted
                )
            if u.difference is not None and u.lower is not None and u.upper is not None:
                for bound, figure in (
                    ("difference", u.difference),
                    ("lower", u.lower),
                    ("upper", u.upper),
                ):
                    self.uplift.labels(dimension, value, bound).set(figure)


def markdown_table() -> str:
    """The metrics reference as a Markdown table (README)."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    metrics = Metrics()
    forwarder = ForwarderMetrics()  # disengage alerts forward
    trainer = TrainerMetrics()  # disengage trainer
    parts = (metrics, forwarder, trainer, CollectorMetrics())  # ..., disengage collect
    declared = {
        m._name: m._labelnames
        for part in parts
        for m in vars(part).values()
        if hasattr(m, "_labelnames")
    }
    for family in [f for part in parts for f in part.registry.collect()]:
        if family.name.startswith("process_"):
            continue  # prometheus_client's standard process metrics
        labels = sorted(declared.get(family.name, ()))
        name = family.name + ("_total" if family.type == "counter" else "")
        if family.type == "info":
            name = family.name + "_info"
        shown = ", ".join(f"`{label}`" for label in labels) or "-"
        rows.append(f"| `{name}` | {family.type} | {shown} | {family.documentation} |")
    return "\n".join(rows)


#: What happened to an alert the forwarder read; each alert counts once.
FORWARD_RESULTS: tuple[str, ...] = (
    "sent",  # the webhook accepted it (2xx)
    "filtered",  # excluded by --kind/--severity/--min-severity/--page-type
    "duplicate",  # its id was already delivered (in-memory LRU or Redis)
    "rate_limited",  # held back by the rate limit, summarised in a digest post
    "dead_lettered",  # the webhook refused it for good (4xx): forward DLQ
    "invalid",  # not JSON or not a disengage alert CloudEvent: forward DLQ
)
#: Why a webhook post was retried.
FORWARD_RETRY_CAUSES: tuple[str, ...] = (
    "connection",
    "timeout",
    "http_408",
    "http_429",
    "http_5xx",
)
POST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ForwarderMetrics:
    """Metrics of ``disengage alerts forward`` (``--metrics-port``), on a
    registry of their own; pass ``registry`` to isolate (tests). Labels are
    closed sets: :data:`FORWARD_RESULTS` and :data:`FORWARD_RETRY_CAUSES`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.alerts = Counter(
            "disengage_forward_alerts_total",
            "Alerts read by the forwarder, by what happened to them: sent, filtered, "
            "duplicate, rate_limited, dead_lettered or invalid.",
            ["result"],
            registry=r,
        )
        self.retries = Counter(
            "disengage_forward_retries_total",
            "Webhook posts retried, by cause.",
            ["cause"],
            registry=r,
        )
        self.post_seconds = Histogram(
            "disengage_forward_post_seconds",
            "Duration of one webhook POST attempt, answered or not (seconds).",
            buckets=POST_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            "disengage_forward_last_success_timestamp_seconds",
            "Unix time of the last post the webhook accepted (0 = none yet).",
            registry=r,
        )
        self.digests = Counter(
            "disengage_forward_digests_total",
            "Rate-limit digests the webhook accepted.",
            registry=r,
        )
        self.redis_errors = Counter(
            "disengage_forward_redis_errors_total",
            "Failed Redis de-duplication reads or writes (forwarding goes on without them).",
            registry=r,
        )
        for result in FORWARD_RESULTS:
            self.alerts.labels(result)
        for cause in FORWARD_RETRY_CAUSES:
            self.retries.labels(cause)


if __name__ == "__main__":
    print(markdown_table())
