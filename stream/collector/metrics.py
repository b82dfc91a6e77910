"""Metrics of ``disengage collect`` (``DISENGAGE_COLLECTOR_METRICS_PORT``).

Labels carry the endpoint family, the site id (configured, so bounded), the
HTTP status and refusal reasons: never a visitor, a session or a URL.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Endpoint families, the ``endpoint`` label.
ENDPOINTS: tuple[str, ...] = ("contract", "segment", "segment_webhook", "snowplow")
#: What became of a call, the ``result`` label.
RESULTS: tuple[str, ...] = ("accepted", "rejected", "ignored")


class CollectorMetrics:
    """On a registry of their own; pass ``registry`` to isolate (tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "disengage_collector_requests_total",
            "HTTP requests by endpoint family and response status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.events = Counter(
            "disengage_collector_events_total",
            "Calls of accepted requests by endpoint family, site and result: accepted (produced "
            "to the input topic), rejected (to the dead-letter topic) or ignored (no interaction, "
            "e.g. Segment identify).",
            ["endpoint", "site", "result"],
            registry=r,
        )
        self.rejected = Counter(
            "disengage_collector_rejected_total",
            "Calls sent to the dead-letter topic, by reason (dlq.reason).",
            ["reason"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "disengage_collector_request_seconds",
            "Time from a request's arrival to its answer, Kafka's acknowledgement included "
            "(seconds).",
            ["endpoint"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=r,
        )
        self.produce_failures = Counter(
            "disengage_collector_produce_failures_total",
            "Requests answered 503 because Kafka did not acknowledge in time (the client "
            "retries; event ids make the retry a duplicate, not a second event).",
            registry=r,
        )
        self.kafka_up = Gauge(
            "disengage_collector_kafka_up",
            "1 when the brokers answered the last metadata probe (every 5 s).",
            registry=r,
        )
        self.interventions_read = Counter(
            "disengage_collector_interventions_read",
            "Alerts of treated sessions read from the alerts topic and kept for their pages "
            "(control sessions' and hotspot alerts are not).",
            registry=r,
        )
        self.interventions_sent = Counter(
            "disengage_collector_interventions_sent",
            "Interventions sent to pages, by transport: sse (Server-Sent Events) or poll.",
            ["transport"],
            registry=r,
        )
        self.channels_open = Gauge(
            "disengage_collector_channels_open",
            "Page channels open now, by transport (an SSE stream or a waiting long poll).",
            ["transport"],
            registry=r,
        )
        self.channel_refused = Counter(
            "disengage_collector_channel_refused",
            "Channel requests refused, by reason: bad_token (forged, changed or malformed), "
            "expired, site (the site is gone or has interventions off), origin.",
            ["reason"],
            registry=r,
        )
        for endpoint in ENDPOINTS:
            self.request_seconds.labels(endpoint)
        for transport in ("sse", "poll"):
            self.interventions_sent.labels(transport)
            self.channels_open.labels(transport)
        self.kafka_up.set(1)
