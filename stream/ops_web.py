"""The operational endpoints of a service that is not the Faust worker.

``/metrics`` (its Prometheus registry), ``/healthz`` (the process runs, with
its uptime) and ``/readyz`` (200 or 503 with a JSON body the service
builds): the trainer and the collector serve the same three.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def ops_app(
    registry: CollectorRegistry,
    started_at: float,
    readiness: Callable[[], tuple[bool, dict[str, Any]]],
) -> web.Application:
    """An aiohttp app with the three endpoints; ``readiness()`` gives
    (ready, body) for ``/readyz``."""

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime_s": round(time.time() - started_at)})

    async def readyz(request: web.Request) -> web.Response:
        ready, body = readiness()
        return web.json_response(body, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
