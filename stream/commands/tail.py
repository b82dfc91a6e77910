"""``disengage alerts tail``: watch the alerts topic."""

from __future__ import annotations

import argparse
from typing import Any

from detectors.alerts import ALERT_KINDS
from stream.commands.arguments import (
    kafka_failure,
    load_settings,
    positive_float,
    positive_int,
    quiet_kafka_client_logs,
)


def add_parser(alerts: Any) -> None:
    t = alerts.add_parser("tail", help="watch alerts live")
    t.add_argument(
        "--kind",
        action="append",
        default=[],
        choices=ALERT_KINDS,
        help="only this kind (repeatable)",
    )
    t.add_argument("--page", help="only alerts whose page or hotspot key contains this")
    t.add_argument("--from-beginning", action="store_true", help="start at the oldest alert")
    t.add_argument("--json", action="store_true", help="print the CloudEvents JSON")
    t.add_argument("-n", "--limit", type=positive_int, default=None, help="stop after N alerts")
    t.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=None,
        help="stop after S seconds without alerts",
    )
    t.set_defaults(func=run, prog=t.prog)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from aiokafka.errors import KafkaError

    from stream.commands.live import tail_alerts

    settings = load_settings()
    quiet_kafka_client_logs()
    try:
        asyncio.run(
            tail_alerts(
                settings,
                kinds=set(args.kind),
                page=args.page,
                from_beginning=args.from_beginning,
                as_json=args.json,
                limit=args.limit,
                idle_timeout_s=args.idle_timeout,
            )
        )
    except (KafkaError, OSError) as exc:
        raise kafka_failure(settings, exc) from None
    return 0
