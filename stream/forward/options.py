"""The forwarder's options: what ``disengage alerts forward`` takes from its flags,
and the limits behind them.

:class:`ForwardOptions` is the only place their defaults are written: the
command line reads its argparse defaults from here (:func:`option_default`),
and the modules below take every limit as an argument.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from stream.forward.delivery import Backoff
from stream.forward.filters import AlertFilter
from stream.forward.payloads import FORMATS
from stream.forward.ratelimit import RateLimit
from stream.forward.webhook_url import check_webhook_url

#: ``--offset-reset`` values: where a consumer group without offsets starts.
OFFSET_RESETS: tuple[str, ...] = ("earliest", "latest")
#: The default dead-letter topic is the alerts topic plus this.
DLQ_SUFFIX = ".forward.dlq"


@dataclass(frozen=True)
class ForwardOptions:
    """Everything ``disengage alerts forward`` takes from its flags (the flag
    is named after each field), plus the caps that have no flag."""

    #: where to POST (http or https); a secret, see ``webhook_url.py``
    webhook_url: str
    #: payload format, one of ``payloads.FORMATS``
    fmt: str = "slack"
    #: which alerts to send (``--kind``, ``--severity``, ``--min-severity``, ``--page-type``)
    filters: AlertFilter = field(default_factory=AlertFilter)
    #: posts per window; over it, alerts are summarised in a digest per window
    rate_limit: RateLimit = field(default_factory=lambda: RateLimit(30, 60.0))
    #: seconds per HTTP request
    timeout_s: float = 10.0
    #: retry waits (seconds): full jitter below min(cap, base * 2**n)
    backoff: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0))
    #: longest ``Retry-After`` honoured (seconds)
    retry_after_max_s: float = 600.0
    #: Kafka consumer group, also the namespace of the Redis dedupe records
    group: str = "disengage-forwarder"
    #: where a new group starts: earliest, so that alerts produced before the
    #: first start (or after committed offsets expired) are not lost; the rate
    #: limit and the digest keep such a backlog from flooding the channel
    offset_reset: str = "earliest"
    #: dead-letter topic; ``None`` = the alerts topic + DLQ_SUFFIX
    dlq_topic: str | None = None
    #: remember delivered ids in Redis too (else in memory only)
    use_redis: bool = True
    #: send session ids (pseudonymous; user ids are never sent)
    include_session: bool = True
    #: seconds between commits of handled offsets (also on revocation and exit)
    commit_interval_s: float = 1.0
    #: longest wait for the last commit on exit (seconds), so that a stop
    #: during a Kafka outage still exits
    final_commit_timeout_s: float = 10.0
    #: Prometheus metrics port; ``None`` = off
    metrics_port: int | None = None
    #: held-back messages kept in memory at most (some 20 MB): when reached, the
    #: loop reads nothing more until the window's digest went out
    held_max: int = 10_000
    #: seconds between checks while paused at ``held_max``
    pause_step_s: float = 1.0
    #: delivered ids kept in memory (about 100 bytes each)
    dedupe_capacity: int = 100_000
    #: lifetime of the Redis record of a delivered id (seconds): 7 days, the
    #: default retention of a Kafka topic
    dedupe_ttl_s: int = 7 * 24 * 3600
    #: after a Redis failure, seconds without asking Redis
    redis_pause_s: float = 5.0
    #: Redis socket and connect timeout (seconds): dedupe must not hold delivery
    redis_timeout_s: float = 2.0
    #: longest wait of one poll of the alerts topic (ms), and its most records
    poll_timeout_ms: int = 500
    poll_max_records: int = 100

    def __post_init__(self) -> None:
        check_webhook_url(self.webhook_url)
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown format {self.fmt!r} (one of {FORMATS})")
        if self.offset_reset not in OFFSET_RESETS:
            raise ValueError("offset reset must be earliest or latest")
        if self.timeout_s <= 0:
            raise ValueError("timeout must be positive")
        if self.commit_interval_s < 0:
            raise ValueError("commit interval must not be negative")
        if not self.group:
            raise ValueError("consumer group must not be empty")
        if self.held_max < 1:
            raise ValueError("held_max must be at least 1")

    def dlq_topic_for(self, alerts_topic: str) -> str:
        """The dead-letter topic when the alerts topic is ``alerts_topic``.

        >>> ForwardOptions("http://h/x").dlq_topic_for("alerts")
        'alerts.forward.dlq'
        """
        return self.dlq_topic or f"{alerts_topic}{DLQ_SUFFIX}"


def option_default(name: str) -> Any:
    """The default of the :class:`ForwardOptions` field ``name``.

    >>> option_default("group"), str(option_default("rate_limit"))
    ('disengage-forwarder', '30/min')
    """
    for f in fields(ForwardOptions):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise ValueError(f"ForwardOptions.{name} has no default")
    raise KeyError(name)
