"""Running real workers against the real broker and Redis, for the tests.

Every test gets its own topics, consumer group and Redis database, so tests
never see each other's data. Workers are real ``disengage worker``
subprocesses: they can be stopped with SIGTERM or killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeVar

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from detectors.config import DetectorConfig
from detectors.offline.runner import replay_alerts
from detectors.session import SessionState
from detectors.simulation.simulator import SimConfig, Simulator
from stream import state_codec
from stream.redis_store import state_key
from tests.conftest import redis_db_url

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Env:
    """Names and settings of one test's pipeline."""

    bootstrap: str
    redis_url: str
    db: int
    partitions: int = 4
    extra: dict[str, str] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def interactions(self) -> str:
        return f"interactions-{self.tag}"

    @property
    def alerts(self) -> str:
        return f"alerts-{self.tag}"

    @property
    def dlq(self) -> str:
        return f"dlq-{self.tag}"

    @property
    def training(self) -> str:
        return f"training-{self.tag}"

    @property
    def page_visits(self) -> str:
        return f"page-visits-{self.tag}"

    @property
    def redis_db_url(self) -> str:
        return redis_db_url(self.redis_url, self.db)

    def worker_env(self, port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DISENGAGE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "DISENGAGE_REDIS_URL": self.redis_db_url,
                "DISENGAGE_TOPIC_INTERACTIONS": self.interactions,
                "DISENGAGE_TOPIC_ALERTS": self.alerts,
                "DISENGAGE_TOPIC_DLQ": self.dlq,
                "DISENGAGE_TOPIC_TRAINING": self.training,
                "DISENGAGE_TOPIC_PAGE_VISITS": self.page_visits,
                "DISENGAGE_TOPIC_MODELS": f"models-{self.tag}",
                "DISENGAGE_TRAINER_GROUP": f"trainer-{self.tag}",
                "DISENGAGE_TRAINER_METRICS_PORT": str(port),
                "DISENGAGE_TOPIC_PARTITIONS": str(self.partitions),
                "DISENGAGE_CONSUMER_GROUP": f"group-{self.tag}",
                "DISENGAGE_METRICS_PORT": str(port),
                "DISENGAGE_METRICS_BIND": "127.0.0.1",
                "DISENGAGE_SWEEP_INTERVAL_S": "1",
                "DISENGAGE_CHECKPOINT_INTERVAL_S": "2",
                "DISENGAGE_LOG_LEVEL": "INFO",
            }
        )
        env.update(self.extra)
        return env


#: Every worker started in this test process, so a failing test can never
#: leave one running (see :func:`reap_workers`).
STARTED: list[Worker] = []


def reap_workers() -> None:
    """Kill whatever workers are still running."""
    while STARTED:
        worker = STARTED.pop()
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()


class Worker:
    """A ``disengage worker`` subprocess (``args``: another subcommand)."""

    def __init__(
        self,
        env: Env,
        name: str = "w",
        args: tuple[str, ...] = ("worker",),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.env = env
        self.args = list(args)
        self.extra_env = dict(extra_env or {})
        self.port = free_port()
        self.log_path = ROOT / ".cache" / "test-logs" / f"{env.tag}-{name}-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", *self.args],
            env={**self.env.worker_env(self.port), **self.extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        STARTED.append(self)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=3) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout: float = 60.0, partitions: int | None = None) -> dict[str, Any]:
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                status, body = self.get("/readyz")
                last = body
                info = json.loads(body)
                if status == 200 and (partitions is None or len(info["partitions"]) == partitions):
                    return dict(info)
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout}s ({last}):\n{self.tail()}")

    def metrics(self) -> dict[str, float]:
        """Samples as ``name{label=value,...}`` -> value (labels sorted)."""
        status, body = self.get("/metrics")
        assert status == 200
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
        return out

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"worker ignored SIGTERM for {timeout}s:\n{self.tail()}"
                ) from None
        return int(self.proc.returncode)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


#: The tracker bundle the browser tests load (built by `make tracker`).
TRACKER_BUNDLE = ROOT / "tracker" / "dist" / "disengage.min.js"
#: Debian's Chromium, driven by Playwright: nothing downloads a browser.
CHROMIUM = "/usr/bin/chromium"
#: Chromium on a machine without a network (see the machine notes): no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


#: The write key of the site ``shop`` of :class:`CollectorProcess`.
COLLECTOR_KEY = "wk_integration_0123456789"


class CollectorProcess(Worker):
    """A ``disengage collect`` subprocess on free ports, serving the site
    ``shop`` (key :data:`COLLECTOR_KEY`); ``port`` is its /readyz."""

    def __init__(self, env: Env, sites: dict[str, Any] | None = None) -> None:
        self.http_port = free_port()
        super().__init__(env, "collector", ("collect",))
        sites = sites or {"shop": {"write_key": COLLECTOR_KEY, "origins": ["https://shop.example"]}}
        self.extra_env = {
            "DISENGAGE_COLLECTOR_SITES": json.dumps(sites),
            "DISENGAGE_COLLECTOR_PORT": str(self.http_port),
            "DISENGAGE_COLLECTOR_BIND": "127.0.0.1",
            "DISENGAGE_COLLECTOR_METRICS_PORT": str(self.port),
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dg"

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to ``path`` (under the prefix): (status, JSON answer)."""
        request = urllib.request.Request(
            self.base_url + path,
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        if not key.startswith(name + "{"):
            continue
        body = key[len(name) + 1 : -1]
        have = dict(part.split("=", 1) for part in body.split(",") if part)
        if all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


# ------------------------------------------------------------------- kafka
async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    n = 0
    try:
        futures = []
        for key, value in records:
            futures.append(await producer.send(topic, value, key=key))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


def event_records(events: Iterable[dict[str, Any]]) -> list[tuple[bytes | None, bytes]]:
    return [
        (e["session_id"].encode(), json.dumps(e, separators=(",", ":")).encode()) for e in events
    ]


async def consume(
    bootstrap: str,
    topic: str,
    until: Any = None,
    timeout: float = 60.0,
    idle: float | None = None,
) -> list[Any]:
    """Read ``topic`` from the beginning until ``until(messages)`` is true,
    the topic has been idle for ``idle`` seconds, or ``timeout``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for part in batch.values():
                messages.extend(part)
            if batch:
                last = time.monotonic()
            if until is not None and until(messages):
                break
            if idle is not None and time.monotonic() - last > idle and messages:
                break
    finally:
        await consumer.stop()
    return messages


# ------------------------------------------------------------------- redis
async def wait_settled(env: Env, counts: dict[str, int], timeout: float) -> dict[str, SessionState]:
    """The states of ``counts``'s sessions once each holds exactly its number
    of events and no outbox waits: the last batch is saved *and* its alerts
    and training examples produced (a batch saves before it produces)."""
    deadline = time.time() + timeout
    states: dict[str, SessionState] = {}
    while time.time() < deadline:
        states = await load_states(env, counts)
        applied = len(states) == len(counts) and all(
            states[s].n_events == n for s, n in counts.items()
        )
        if applied and not any(s.outbox for s in states.values()):
            return states
        await asyncio.sleep(0.5)
    wrong = {
        s: (states[s].n_events if s in states else None, n)
        for s, n in counts.items()
        if s not in states or states[s].n_events != n
    }
    pending = [s for s, state in states.items() if state.outbox]
    raise AssertionError(
        f"{len(wrong)} sessions not as expected, e.g. {list(wrong.items())[:5]}; "
        f"{len(pending)} with an outbox still pending, e.g. {pending[:5]}"
    )


async def load_states(env: Env, sids: Iterable[str]) -> dict[str, SessionState]:
    client = aioredis.Redis.from_url(env.redis_db_url)
    try:
        out = {}
        for sid in sids:
            blob = await client.get(state_key(sid))
            if isinstance(blob, bytes):
                out[sid] = state_codec.decode(blob)
        return out
    finally:
        await client.aclose()


async def create_topics(env: Env) -> None:
    """Create the test's topics with its partition count (a produce before
    any worker ran would otherwise auto-create them with one partition)."""
    from stream.kafka_io import ensure_topics
    from stream.settings import Settings

    env_vars = env.worker_env(0)
    await ensure_topics(Settings.from_env(env_vars))


async def flush(env: Env) -> None:
    client = aioredis.Redis.from_url(env.redis_db_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


# ------------------------------------------------------------------ oracle
def offline_alert_ids(
    events: list[dict[str, Any]], rule: str | None = None, **overrides: Any
) -> set[str]:
    """Alert ids the offline detector raises for the same events, optionally
    only those of one rule (the transparent rules do not depend on how the
    models were partitioned)."""
    config = DetectorConfig().with_overrides(**overrides)
    alerts = replay_alerts(sorted(events, key=lambda e: e["ts"]), config)
    return {alert.id for alert in alerts if rule is None or alert.rule == rule}


# ------------------------------------------------------------ simulated load
def simulated(sessions: int, seed: int) -> tuple[list[dict[str, Any]], Simulator]:
    """Sessions that started 40 minutes ago, in event order."""
    start = int(time.time() * 1000) - 40 * 60 * 1000
    sim = Simulator(SimConfig(sessions=sessions, seed=seed, start_ts=start, incident=False))
    return list(sim.events()), sim


def friction_oracle(events: list[dict[str, Any]]) -> set[str]:
    """Friction alert ids of the offline detector with the same settings."""
    return offline_alert_ids(
        events,
        rule="friction_pileup",
        trust_min_closed=100_000_000,
        hesitation_warmup=100_000_000,
        alert_budget_per_1000=0.0,
        hotspot_min_visits=100_000_000,
    )


def expected_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    """Events each session's state must have applied: all of them, except
    what comes after a purchase (refused after close)."""
    counts: Counter[str] = Counter()
    closed: set[str] = set()
    for e in sorted(events, key=lambda e: e["ts"]):
        sid = e["session_id"]
        if sid in closed:
            continue
        counts[sid] += 1
        if e["type"] == "purchase":
            closed.add(sid)
    return dict(counts)


#: The demo shop page (its tracker points at ``{{COLLECTOR}}`` with ``{{KEY}}``).
SHOP = ROOT / "tracker" / "demo" / "shop.html"

T = TypeVar("T")


class ShopServer:
    """The demo shop on every path (an SPA), pointing its tracker at the collector."""

    def __init__(self, collector_url: str) -> None:
        page = SHOP.read_text().replace("{{COLLECTOR}}", collector_url)
        body = page.replace("{{KEY}}", COLLECTOR_KEY).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ShopServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def off_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end in a thread of its own: Playwright's sync
    API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def session_of(page: Any) -> str:
    stored = page.evaluate("localStorage.getItem('dg_sid')")
    assert stored, "the tracker keeps its session in localStorage"
    return str(stored).split(".")[0]


def holdout_sessions(salt: str, share: float, prefix: str) -> tuple[str, str]:
    """A treated and a control session id for the holdout of ``salt`` and ``share``."""
    from detectors.uplift import CONTROL, TREATED, treatment_of

    found: dict[str, str] = {}
    for i in range(10_000):
        sid = f"{prefix}{i:04d}"
        found.setdefault(treatment_of(sid, salt, share), sid)
        if len(found) == 2:
            return found[TREATED], found[CONTROL]
    raise AssertionError("no session id of each group found")


def open_shop(browser: Any, shop: ShopServer, sid: str) -> tuple[Any, Any, list[str]]:
    """A new visitor (browser context) of the shop with session ``sid``:
    (context, page, the page's console errors and uncaught exceptions)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    # the tracker keeps "<session id>.<last event ms>" in localStorage
    context.add_init_script(f"localStorage.setItem('dg_sid', '{sid}.' + Date.now())")
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{shop.origin}/products/1")
    return context, page, errors


#: In-page clock of the help panel: the time (performance.now, ms) it became
#: visible, set by a MutationObserver the test installs.
WATCH_HELP = """
window.__helpShownAt = null;
new MutationObserver(() => {
  const help = document.getElementById('dg-help');
  const shown = help && !help.hidden;
  if (shown && window.__helpShownAt === null) window.__helpShownAt = performance.now();
}).observe(document.body, {attributes: true, subtree: true, attributeFilter: ['hidden']});
"""


def rage_click_pay(page: Any, clicks: int = 5, gap_ms: int = 150) -> float:
    """Rage-click the broken Pay button; the in-page time (ms) of the last click."""
    page.evaluate(WATCH_HELP)
    for i in range(clicks):
        page.click("#pay")
        if i < clicks - 1:
            page.wait_for_timeout(gap_ms)
    return float(page.evaluate("performance.now()"))
