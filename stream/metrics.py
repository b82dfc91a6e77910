"""Prometheus metrics of the worker, in one place.

Built on an injected ``CollectorRegistry`` with explicit buckets. Every label
has a bounded set of values: event types and invalid reasons are closed
lists, alert kinds and severities too, partitions are bounded by the topic,
hotspot keys by ``hotspot_max_keys``. No label ever carries a session id, a
user id or a raw page path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from detectors.alerts import ALERT_KINDS, SEVERITIES
from detectors.config import EVENT_TYPES
from detectors.detector import OUTCOMES, STATUSES
from detectors.events import INVALID_REASONS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
REDIS_OPS = ("load", "save", "due", "pending", "open_sessions", "save_blob", "load_blob", "ping")


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
        self.batch_size = Histogram(
            "disengage_batch_size", "Events per batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
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
            "Rolling ROC-AUC of the trust score against real outcomes (0.5 = chance).",
            registry=r,
        )
        self.trust_log_loss = Gauge(
            "disengage_trust_log_loss", "Rolling log-loss of the trust score (nats).", registry=r
        )
        self.trust_learned = Gauge(
            "disengage_trust_sessions_learned",
            "Closed sessions the trust model has learned from.",
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
            "Messages behind the high watermark, per owned input partition.",
            ["partition"],
            registry=r,
        )
        self.checkpoint_age = Gauge(
            "disengage_model_checkpoint_age_seconds",
            "Seconds since the models were last checkpointed to Redis.",
            registry=r,
        )
        self.hotspot_rate = Gauge(
            "disengage_hotspot_problem_rate",
            "Share of recent visits with friction or abandonment, per page type/step.",
            ["key"],
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
        self.info = Info("disengage_worker", "Worker build and model information.", registry=r)
        self._prime()

    def _prime(self) -> None:
        """Create every labelled series at 0, so dashboards show them at once."""
        for etype in sorted(EVENT_TYPES):
            self.events.labels(etype)
        for status in STATUSES:
            self.event_status.labels(status)
        for reason in (*INVALID_REASONS, "late_event"):
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

    def observe_redis(self, op: str, seconds: float) -> None:
        self.redis_seconds.labels(op).observe(seconds)


def markdown_table() -> str:
    """The metrics reference as a Markdown table (README)."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for family in Metrics().registry.collect():
        labels = sorted({k for s in family.samples for k in s.labels if k != "le"})
        name = family.name + ("_total" if family.type == "counter" else "")
        if family.type == "info":
            name = family.name + "_info"
        shown = ", ".join(f"`{label}`" for label in labels) or "-"
        rows.append(f"| `{name}` | {family.type} | {shown} | {family.documentation} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
