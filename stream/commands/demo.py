"""``disengage demo``: simulator -> detector in-process, with a live terminal view."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from detectors.simulation.simulator import SimConfig
from stream.commands.arguments import detector_config, positive_float


def add_parser(sub: Any) -> None:
    from stream.commands.demo_view import DEFAULT_SPEED

    p = sub.add_parser(
        "demo",
        help="live demo: simulator -> detector, in-process, no Kafka; with the marketing console",
    )
    p.add_argument(
        "--duration", type=positive_float, default=None, help="stop after this many seconds"
    )
    p.add_argument(
        "--speed",
        type=positive_float,
        default=DEFAULT_SPEED,
        help=f"simulated seconds per real second (default {DEFAULT_SPEED:g})",
    )
    p.add_argument("--seed", type=int, default=SimConfig.seed, help=f"(default {SimConfig.seed})")
    p.add_argument("--plain", action="store_true", help="plain lines instead of the live view")
    p.add_argument(
        "--console-port",
        type=int,
        default=8480,
        help="serve the marketing console on this port (default 8480; 0: any free port)",
    )
    p.add_argument(
        "--console-bind", default="127.0.0.1", help="address of the console (default 127.0.0.1)"
    )
    p.add_argument("--no-console", action="store_true", help="the terminal view only")
    p.add_argument(
        "--no-browser",
        action="store_true",
        help="serve the console without opening it (it opens when a desktop browser is there)",
    )
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from stream.commands.demo_view import ConsoleOptions, run_demo

    console = None
    if not args.no_console:
        console = ConsoleOptions(args.console_bind, args.console_port, not args.no_browser)
    return run_demo(
        detector_config(args),
        duration_s=args.duration,
        speed=args.speed,
        seed=args.seed,
        plain=args.plain or not sys.stdout.isatty(),
        console=console,
    )
