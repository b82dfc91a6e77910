"""``disengage alerts forward``: its subcommand parser and what it runs.

Every default shown or used here is read from :class:`ForwardOptions`
(:func:`option_default`); nothing is written twice.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from detectors.alerts import ALERT_KINDS, SEVERITIES
from stream.commands.arguments import load_settings
from stream.forward.delivery import Backoff
from stream.forward.filters import PAGE_TYPE_CHOICES, AlertFilter
from stream.forward.options import DLQ_SUFFIX, OFFSET_RESETS, ForwardOptions, option_default
from stream.forward.payloads import FORMATS
from stream.forward.ratelimit import parse_rate_limit
from stream.forward.webhook_url import redact_url

_DAY_S = 24 * 3600

FORWARD_HELP = f"""\
Post every alert of the alerts topic to a webhook, at least once, for
marketing ops.

payloads:
  slack (default)  Slack incoming-webhook message {{"text", "blocks"}}: kind,
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
  {option_default("dedupe_ttl_s") // _DAY_S} days), so a restart does not post them again.

rate limit:
  a token bucket of N posts per window; alerts over it are held back and
  summarised in one digest post per window ("12 more alerts held back by the
  rate limit (30/min) ...: 8 trust_loss, 4 hesitation.").

The webhook URL is a secret: only its scheme and host are logged. SIGTERM or
SIGINT finishes the post in flight, commits and exits 0.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``forward`` to ``subparsers`` (those of ``disengage alerts``)."""
    filters: AlertFilter = option_default("filters")
    backoff: Backoff = option_default("backoff")
    f: argparse.ArgumentParser = subparsers.add_parser(
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
        "--format",
        choices=FORMATS,
        default=option_default("fmt"),
        help="payload (default %(default)s)",
    )
    f.add_argument(
        "--kind",
        action="append",
        default=sorted(filters.kinds),
        choices=ALERT_KINDS,
        help="send only this kind (repeatable)",
    )
    f.add_argument(
        "--severity",
        action="append",
        default=sorted(filters.severities),
        choices=SEVERITIES,
        help="send only this severity (repeatable)",
    )
    f.add_argument(
        "--min-severity",
        choices=SEVERITIES,
        default=filters.min_severity,
        help="send only this severity or higher",
    )
    f.add_argument(
        "--page-type",
        action="append",
        default=sorted(filters.page_types),
        choices=PAGE_TYPE_CHOICES,
        metavar="TYPE",
        help="send only alerts of this page type (repeatable): data.page_type, the hotspot "
        "key's page type, or the type inferred from data.page; one of "
        + ", ".join(PAGE_TYPE_CHOICES),
    )
    f.add_argument(
        "--include-control",
        action="store_true",
        default=filters.include_control,
        help="send the alerts of holdout control sessions too (data.treatment = control); "
        "only for a channel where nobody acts on them, or the measured uplift is spoilt",
    )
    f.add_argument(
        "--rate-limit",
        default=str(option_default("rate_limit")),
        metavar="N/min",
        help="posts per minute (or N/s, N/h); 0 = unlimited (default %(default)s)",
    )
    f.add_argument(
        "--timeout",
        type=float,
        default=option_default("timeout_s"),
        metavar="S",
        help="seconds per request (default %(default)g)",
    )
    f.add_argument(
        "--backoff-base",
        type=float,
        default=backoff.base_s,
        metavar="S",
        help="first retry wait bound, s (default %(default)g)",
    )
    f.add_argument(
        "--backoff-cap",
        type=float,
        default=backoff.cap_s,
        metavar="S",
        help="longest retry wait, s (default %(default)g)",
    )
    f.add_argument(
        "--group",
        default=option_default("group"),
        metavar="NAME",
        help="consumer group (default %(default)s)",
    )
    f.add_argument(
        "--offset-reset",
        choices=OFFSET_RESETS,
        default=option_default("offset_reset"),
        help="where a new group starts (default %(default)s: no alert is missed)",
    )
    f.add_argument(
        "--dlq-topic",
        metavar="TOPIC",
        default=option_default("dlq_topic"),
        help=f"dead-letter topic (default <alerts topic>{DLQ_SUFFIX})",
    )
    f.add_argument(
        "--no-redis",
        action="store_false",
        dest="use_redis",
        default=option_default("use_redis"),
        help="de-duplicate in memory only (a restart may repost uncommitted alerts)",
    )
    f.add_argument(
        "--no-session-id",
        action="store_false",
        dest="include_session",
        default=option_default("include_session"),
        help="leave session ids out of the payloads",
    )
    f.add_argument(
        "--commit-interval",
        type=float,
        default=option_default("commit_interval_s"),
        metavar="S",
        help="commit handled offsets at most every S seconds, and on exit (default %(default)g)",
    )
    f.add_argument(
        "--metrics-port",
        type=int,
        default=option_default("metrics_port"),
        metavar="PORT",
        help="serve Prometheus metrics on this port (default: off)",
    )
    f.add_argument(
        "--loglevel", metavar="LEVEL", help="log level (default DISENGAGE_LOG_LEVEL or INFO)"
    )
    f.set_defaults(func=run)
    return f


def options_from(args: argparse.Namespace, webhook_url: str) -> ForwardOptions:
    """The options the parsed ``args`` ask for (``ValueError`` when invalid)."""
    return ForwardOptions(
        webhook_url=webhook_url,
        fmt=args.format,
        filters=AlertFilter(
            kinds=frozenset(args.kind),
            severities=frozenset(args.severity),
            min_severity=args.min_severity,
            page_types=frozenset(args.page_type),
            include_control=args.include_control,
        ),
        rate_limit=parse_rate_limit(args.rate_limit),
        timeout_s=args.timeout,
        backoff=Backoff(args.backoff_base, args.backoff_cap),
        group=args.group,
        offset_reset=args.offset_reset,
        dlq_topic=args.dlq_topic,
        use_redis=args.use_redis,
        include_session=args.include_session,
        commit_interval_s=args.commit_interval,
        metrics_port=args.metrics_port,
    )


def run(args: argparse.Namespace) -> int:
    """Run the forwarder as ``args`` say, until SIGTERM/SIGINT."""
    # imported here, not at the top: every ``disengage`` command builds this
    # parser, and the forwarder's clients (aiokafka, aiohttp, redis) take a
    # noticeable part of a second to import
    from stream.forward import app

    settings = load_settings()
    url = args.webhook or settings.webhook_url
    if not url:
        raise SystemExit(
            "disengage alerts forward: --webhook URL (or DISENGAGE_WEBHOOK_URL) is required"
        )
    try:
        options = options_from(args, url)
    except ValueError as exc:
        raise SystemExit(f"disengage alerts forward: {exc}") from None
    level = (args.loglevel or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve = None
    if options.metrics_port is not None:
        serve = app.metrics_server(options.metrics_port, settings.metrics_bind)
    try:
        return app.run_forwarder(settings, options, serve)
    except OSError as exc:  # Kafka unreachable at start, metrics port taken, ...
        raise SystemExit(
            f"disengage alerts forward: {exc} (Kafka {settings.kafka_bootstrap_servers}, "
            f"webhook {redact_url(url)})"
        ) from None
    except app.KafkaError as exc:
        raise SystemExit(
            f"disengage alerts forward: cannot reach Kafka at "
            f"{settings.kafka_bootstrap_servers}: {exc}"
        ) from None
