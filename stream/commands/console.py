"""``disengage console``: the marketing console of a deployment (its Kafka topics)."""

from __future__ import annotations

import argparse
from typing import Any

from stream.commands.arguments import positive_float


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "console",
        help="the marketing console of a deployment: live alerts, hotspots, signals, uplift",
    )
    p.add_argument("--port", type=int, default=8480, help="HTTP port (default 8480)")
    p.add_argument("--bind", default="127.0.0.1", help="address (default 127.0.0.1)")
    p.add_argument(
        "--since-hours",
        type=positive_float,
        default=24.0,
        help="read the alerts and closed sessions of this many hours back first (default 24)",
    )
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from stream.commands.arguments import load_settings, quiet_kafka_client_logs

    settings = load_settings()
    quiet_kafka_client_logs()
    return asyncio.run(_serve(settings, args))


async def _serve(settings: Any, args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal

    from aiohttp import web

    from stream.console.deployment import DeploymentSource
    from stream.console.server import BUILD_HINT, built, console_app, console_dir

    root = console_dir(settings.console_dir)
    if not built(root):
        raise SystemExit(f"disengage console: the page is not built: {BUILD_HINT}")
    source = DeploymentSource(settings, args.since_hours * 3600.0)
    reader = asyncio.create_task(source.run(), name="console-reader")
    runner = web.AppRunner(console_app(source, root), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.bind, args.port).start()
    except OSError as exc:
        reader.cancel()
        raise SystemExit(
            f"disengage console: cannot listen on {args.bind}:{args.port}: {exc}"
        ) from None
    print(f"console: http://{args.bind}:{args.port}/ (Ctrl-C stops)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        source.stop()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await runner.cleanup()
    return 0
