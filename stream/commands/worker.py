"""``disengage worker``: the streaming worker (Kafka -> detector -> Redis state -> alerts)."""

from __future__ import annotations

import argparse
from typing import Any

from stream.commands.arguments import load_settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="run the streaming worker (Kafka -> Redis -> alerts)")
    p.add_argument("--loglevel", help="log level (default DISENGAGE_LOG_LEVEL or INFO)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from stream.kafka_io import ensure_topics
    from stream.worker.app import run_worker

    settings = load_settings()
    level = (args.loglevel or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("disengage.worker").info("settings %s", settings.redacted())
    try:
        asyncio.run(ensure_topics(settings))  # logs what it created
    except Exception as exc:  # broker unreachable or refused: say so, exit non-zero
        raise SystemExit(
            f"disengage worker: cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}"
        ) from None
    run_worker(settings, loglevel=level.lower())
    return 0
