"""The console's web server: the page, its bundle and ``/api/snapshot``.

The page (``console/public/index.html``) and its script (``console/dist/
console.js``, Chart.js bundled by esbuild: ``make console``) are served from
this checkout, or from ``DISENGAGE_CONSOLE_DIR`` (the image's); nothing is loaded from
another host. ``/api/snapshot`` is the data of every panel
(:meth:`detectors.console_stats.ConsoleStats.snapshot` plus ``source``),
read from a :class:`ConsoleSource`; the page polls it every second.
``/healthz`` answers 200 while the server runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger("disengage.console")

#: What ``make console`` builds, and where the page and its styles are.
BUILD_HINT = "cd console && npm ci && npm run build (or: make console)"


class ConsoleSource(Protocol):
    """Where the console's figures come from (the demo, or a deployment)."""

    def snapshot(self) -> dict[str, Any]:
        """Every panel's data (see :mod:`detectors.console_stats`), plus
        ``source``: what the figures are of, in words."""
        ...


def console_dir(configured: str = "") -> Path:
    """The console package: ``configured``, else this checkout's ``console/``."""
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "console"


def built(root: Path) -> bool:
    """Whether the page's script was built."""
    return (root / "dist" / "console.js").is_file()


def console_app(source: ConsoleSource, root: Path) -> web.Application:
    """The console's aiohttp application over ``source``, serving ``root``."""

    async def index(request: web.Request) -> web.StreamResponse:
        if not built(root):
            return web.Response(
                status=503,
                text=f"The console's script is not built ({root / 'dist'}): {BUILD_HINT}",
            )
        return web.FileResponse(root / "public" / "index.html")

    def static(path: Path, content_type: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            if not path.is_file():
                return web.Response(status=404, text=f"{path.name} is missing: {BUILD_HINT}")
            return web.FileResponse(path, headers={"Content-Type": content_type})

        return handler

    async def snapshot(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            await asyncio.to_thread(source.snapshot), headers={"Cache-Control": "no-store"}
        )

    async def health(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/console.js", static(root / "dist" / "console.js", "text/javascript"))
    app.router.add_get("/style.css", static(root / "public" / "style.css", "text/css"))
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/healthz", health)
    return app


class BackgroundServer:
    """The console served from a thread of its own (the demo's loop is not
    asyncio): :meth:`start` returns once it listens, :meth:`stop` ends it."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> BackgroundServer:
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            runner = self._runner = web.AppRunner(self.app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port)
            loop.run_until_complete(site.start())
            if self.port == 0:  # an ephemeral port: the one the OS chose
                server = site._server
                sockets = getattr(server, "sockets", None) or []
                if sockets:
                    self.port = int(sockets[0].getsockname()[1])
        except BaseException as exc:  # the port taken, most often
            self._error = exc
            self._started.set()
            return
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
