"""``disengage alerts forward``: its argparse subcommand and what it runs."""

from __future__ import annotations

import argparse
from typing import Any

from stream.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise SystemExit(f"disengage: {exc}") from None


def run(args: argparse.Namespace) -> int:
    import logging

    from stream.forward import (
        AlertFilter,
        Backoff,
        ForwardOptions,
        metrics_server,
        parse_rate_limit,
        redact_url,
        run_forwarder,
    )

    settings = _settings()
    url = args.webhook or settings.webhook_url
    if not url:
        raise SystemExit(
            "disengage alerts forward: --webhook URL (or DISENGAGE_WEBHOOK_URL) is required"
        )
    try:
        options = ForwardOptions(
            webhook_url=url,
            fmt=args.format,
            filters=AlertFilter(
                kinds=frozenset(args.kind),
                severities=frozenset(args.severity),
                min_severity=args.min_severity,
                page_types=frozenset(args.page_type),
            ),
            rate_limit=parse_rate_limit(args.rate_limit),
            timeout_s=args.timeout,
            backoff=Backoff(args.backoff_base, args.backoff_cap),
            group=args.group,
            offset_reset=args.offset_reset,
            dlq_topic=args.dlq_topic,
            use_redis=not args.no_redis,
            include_session=not args.no_session_id,
            commit_interval_s=args.commit_interval,
            metrics_port=args.metrics_port,
        )
    except ValueError as exc:
        raise SystemExit(f"disengage alerts forward: {exc}") from None
    level = (args.loglevel or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve = None
    if options.metrics_port is not None:
        serve = metrics_server(options.metrics_port, settings.metrics_bind)
    try:
        return run_forwarder(settings, options, serve)
    except OSError as exc:  # Kafka unreachable at start, metrics port taken, ...
        raise SystemExit(
            f"disengage alerts forward: {exc} (Kafka {settings.kafka_bootstrap_servers}, "
            f"webhook {redact_url(url)})"
        ) from None
    except Exception as exc:
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            raise SystemExit(
                f"disengage alerts forward: cannot reach Kafka at "
                f"{settings.kafka_bootstrap_servers}: {exc}"
            ) from None
        raise


FORWARD_HELP = """\
Post every alert of the alerts topic to a webhook, at least once, for
marketing ops.

payloads:
  slack (default)  Slack incoming-webhook message {"text", "blocks"}: kind,
                   severity, page, page type, stage, up to 3 reasons, the
                   suggested action, the alert id (and the session id unless
                   --no-session-id). User ids are never sent.
  json             the alert's CloudEvent plus a one-line "summary";
                   data.user_hash is null.
Every post carries the alert id, also as the Idempotency-Key header.

delivery:
  timeouts, connection errors, 408, 429 (Retry-After honoured) and 5xx are
  retried forever with exponential backoff and full jitter; other answers go
  to the forward dead-letter topic with header dlq.reason=http_<status>. An
  offset is committed only once its alert was accepted, dead-lettered,
  filtered, a duplicate, or summarised in an accepted rate-limit digest.
  Delivered ids are remembered in memory and in Redis (DISENGAGE_REDIS_URL,
  7 days), so a restart does not post them again.

rate limit:
  a token bucket of N posts per window; alerts over it are held back and
  summarised in one digest post per window ("12 more alerts held back by the
  rate limit (30/min) ...: 8 trust_loss, 4 hesitation.").

The webhook URL is a secret: only its scheme and host are logged. SIGTERM or
SIGINT finishes the post in flight, commits and exits 0.
"""




def add_parser(alerts: Any) -> None:
    from detectors.alerts import ALERT_KINDS, SEVERITIES
    from detectors.config import PAGE_TYPES

    f = alerts.add_parser(
        "forward",
        help="post alerts to a webhook (Slack or JSON)",
        description=FORWARD_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument(
        "--webhook",
        metavar="URL",
        help="http(s) URL to POST to (default: DISENGAGE_WEBHOOK_URL)",
    )
    f.add_argument(
        "--format", choices=["slack", "json"], default="slack", help="payload (default slack)"
    )
    f.add_argument(
        "--kind",
        action="append",
        default=[],
        choices=list(ALERT_KINDS),
        help="send only this kind (repeatable)",
    )
    f.add_argument(
        "--severity",
        action="append",
        default=[],
        choices=list(SEVERITIES),
        help="send only this severity (repeatable)",
    )
    f.add_argument(
        "--min-severity", choices=list(SEVERITIES), help="send only this severity or higher"
    )
    f.add_argument(
        "--page-type",
        action="append",
        default=[],
        choices=[*PAGE_TYPES, "unknown"],
        metavar="TYPE",
        help="send only alerts of this page type (repeatable): data.page_type, the hotspot "
        "key's page type, or the type inferred from data.page; one of "
        + ", ".join([*PAGE_TYPES, "unknown"]),
    )
    f.add_argument(
        "--rate-limit",
        default="30/min",
        metavar="N/min",
        help="posts per minute (or N/s, N/h); 0 = unlimited (default 30/min)",
    )
    f.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds per request (default 10)"
    )
    f.add_argument(
        "--backoff-base",
        type=float,
        default=0.5,
        metavar="S",
        help="first retry wait bound, s (default 0.5)",
    )
    f.add_argument(
        "--backoff-cap",
        type=float,
        default=30.0,
        metavar="S",
        help="longest retry wait, s (default 30)",
    )
    f.add_argument(
        "--group",
        default="disengage-forwarder",
        metavar="NAME",
        help="consumer group (default %(default)s)",
    )
    f.add_argument(
        "--offset-reset",
        choices=["earliest", "latest"],
        default="earliest",
        help="where a new group starts (default earliest: no alert is missed)",
    )
    f.add_argument(
        "--dlq-topic",
        metavar="TOPIC",
        help="dead-letter topic (default <alerts topic>.forward.dlq)",
    )
    f.add_argument(
        "--no-redis",
        action="store_true",
        help="de-duplicate in memory only (a restart may repost uncommitted alerts)",
    )
    f.add_argument(
        "--no-session-id", action="store_true", help="leave session ids out of the payloads"
    )
    f.add_argument(
        "--commit-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="commit handled offsets at most every S seconds, and on exit (default 1)",
    )
    f.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port (default: off)",
    )
    f.add_argument(
        "--loglevel", metavar="LEVEL", help="log level (default DISENGAGE_LOG_LEVEL or INFO)"
    )
    f.set_defaults(func=run)


