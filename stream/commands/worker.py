"""``disengage worker``: the streaming worker (Kafka -> detector -> Redis state -> alerts)."""

from __future__ import annotations

import argparse
from typing import Any

from stream.commands.arguments import start_service


def add_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="run the streaming worker (Kafka -> Redis -> alerts)")
    p.add_argument("--loglevel", help="log level (default DISENGAGE_LOG_LEVEL or INFO)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stream.worker.app import run_worker

    settings, level = start_service("worker", args.loglevel)
    run_worker(settings, loglevel=level.lower())
    return 0
