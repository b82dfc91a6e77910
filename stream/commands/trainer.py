"""``disengage trainer``: learn the deployment's models from the training topic."""

from __future__ import annotations

import argparse
from typing import Any

from stream.commands.arguments import load_settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "trainer",
        help="learn the models of all workers from the training topic and publish versions",
    )
    p.add_argument("--loglevel", help="log level (default DISENGAGE_LOG_LEVEL or INFO)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from stream.kafka_io import ensure_topics
    from stream.trainer.app import run_trainer

    settings = load_settings()
    level = (args.loglevel or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("disengage.trainer").info("settings %s", settings.redacted())
    try:
        asyncio.run(ensure_topics(settings))
    except Exception as exc:  # broker unreachable or refused: say so, exit non-zero
        raise SystemExit(
            f"disengage trainer: cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}"
        ) from None
    asyncio.run(run_trainer(settings))
    return 0
