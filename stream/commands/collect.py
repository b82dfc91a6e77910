"""``disengage collect``: the HTTP collector (sites' events to the input topic)."""

from __future__ import annotations

import argparse
from typing import Any

from stream.commands.arguments import start_service


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "collect",
        help="HTTP collector: our contract, Segment/RudderStack and Snowplow calls to Kafka",
    )
    p.add_argument("--loglevel", help="log level (default DISENGAGE_LOG_LEVEL or INFO)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from stream.collector.service import run_collector

    settings, _ = start_service("collector", args.loglevel)
    if not settings.collector_sites:
        raise SystemExit(
            "disengage collect: no site configured: set DISENGAGE_COLLECTOR_SITES, e.g. "
            '\'{"shop": {"write_key": "<a long random key>", "origins": ["https://shop.example"]}}\''
        )
    asyncio.run(run_collector(settings))
    return 0
