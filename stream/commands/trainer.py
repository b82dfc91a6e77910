"""``disengage trainer``: learn the deployment's models from the training topic."""

from __future__ import annotations

import argparse
from typing import Any

from stream.commands.arguments import start_service


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "trainer",
        help="learn the models of all workers from the training topic and publish versions",
    )
    p.add_argument("--loglevel", help="log level (default DISENGAGE_LOG_LEVEL or INFO)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from stream.trainer.app import run_trainer

    settings, _ = start_service("trainer", args.loglevel)
    asyncio.run(run_trainer(settings))
    return 0
