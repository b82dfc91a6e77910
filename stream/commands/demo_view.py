"""``disengage demo``: the embedded default.

The simulator feeds the detector in-process with in-memory state: no Kafka,
Redis or Docker. Simulated time runs ``speed`` times faster than the wall
clock. On a terminal a live view (``rich``) redraws four times a second: the
figures of the run in a panel (events/s, sessions, alerts by kind, the trust
model's self-measured AUC) and the latest alerts below it, coloured by kind,
as many as fit. It is laid out for 80x24 and uses more room when there is
more. Without a terminal it prints plain lines: ``ALERT``, ``STATUS`` every
few seconds and one ``SUMMARY`` at the end.
"""

from __future__ import annotations

import os
import sys
import time
import webbrowser
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from detectors.alerts import ALERT_KINDS, Alert, rfc3339
from detectors.config import DetectorConfig
from detectors.simulation.simulator import SimConfig, Simulator
from stream.alert_view import alert_line, view_of

if TYPE_CHECKING:  # the detector imports River: loaded when the demo runs, not for --help
    from detectors.console_stats import ConsoleStats
    from detectors.detector import Detector
    from detectors.offline.runner import OfflineRunner
    from detectors.simulation.interventions import InterventionLoop
    from stream.console.server import BackgroundServer

#: Simulated seconds per wall-clock second when ``--speed`` is not given.
DEFAULT_SPEED = 60.0
REFRESH_S = 0.25
PLAIN_STATUS_S = 5.0
#: Alerts kept for the view (more than any terminal shows).
RECENT_ALERTS = 60
#: A run shorter than this (wall seconds) has no meaningful events/s.
MIN_RATE_WINDOW_S = 0.5

KIND_STYLES: dict[str, str] = {
    "hesitation": "yellow",
    "trust_loss": "red",
    "friction_hotspot": "magenta",
}


def describe(alert: Alert) -> str:
    """One line for an alert: kind, where, why, and what to do."""
    return alert_line(view_of(alert.to_cloudevent("urn:disengage:demo"), None, True))


def auc_text(metrics: dict[str, Any]) -> str:
    """The trust model's rolling AUC, or ``n/a`` with the core's reason while
    there are too few outcomes of either kind for it to mean anything
    (:mod:`detectors.sample_size`).

    >>> auc_text({"trust_auc": None,
    ...           "trust_auc_unavailable": "only 3 sessions with a purchase; need 10"})
    'n/a (only 3 sessions with a purchase; need 10)'
    >>> auc_text({"trust_auc": 0.81234, "trust_auc_unavailable": None})
    '0.812'
    """
    auc = metrics["trust_auc"]
    if auc is None:
        return f"n/a ({metrics['trust_auc_unavailable']})"
    return f"{auc:.3f}"


def log_loss_text(metrics: dict[str, Any]) -> str:
    loss = metrics["trust_log_loss"]
    if loss is None or not metrics["snapshots_learned"]:
        return "n/a"
    return f"{loss:.3f}"


class DemoView:
    """The figures and latest alerts of a running demo, as plain lines or a rich view."""

    def __init__(self, runner: OfflineRunner, speed: float, started: float) -> None:
        self.runner = runner
        self.speed = speed
        self.started = started
        self.recent: deque[Alert] = deque(maxlen=RECENT_ALERTS)
        self.rate_window: deque[tuple[float, int]] = deque()
        self.kinds: Counter[str] = Counter()

    def alert(self, alert: Alert) -> None:
        self.kinds[alert.kind] += 1
        self.recent.appendleft(alert)

    def events_per_s(self, now: float) -> float | None:
        """Events per wall second over the last two seconds; ``None`` until
        there is a measurable stretch."""
        self.rate_window.append((now, self.runner.stats.events))
        while len(self.rate_window) > 2 and now - self.rate_window[0][0] > 2.0:
            self.rate_window.popleft()
        (t0, n0), (t1, n1) = self.rate_window[0], self.rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 - t0 >= MIN_RATE_WINDOW_S else None

    def average_rate(self, now: float) -> float | None:
        """Events per wall second over the whole run; ``None`` when too short."""
        elapsed = now - self.started
        return self.runner.stats.events / elapsed if elapsed >= MIN_RATE_WINDOW_S else None

    def _alert_counts(self) -> str:
        return ", ".join(f"{kind} {self.kinds[kind]:,}" for kind in ALERT_KINDS)

    def status(self, rate: float | None) -> str:
        """The figures of the run on one line (plain output)."""
        m = self.runner.detector.metrics()
        return (
            f"events/s {_rate_text(rate)} | events {self.runner.stats.events:,} | "
            f"active sessions {self.runner.active_sessions:,} | closed "
            f"{sum(self.runner.stats.closed.values()):,} | alerts {self._alert_counts()}"
            f" | trust AUC {auc_text(m)} log-loss {log_loss_text(m)} "
            f"({m['sessions_closed']:,} sessions learned)"
        )

    def render(self, console: Console, now: float, sim_ts: int) -> RenderableType:
        """The live view, no taller than the console."""
        m = self.runner.detector.metrics()
        stats = self.runner.stats
        figures = Table.grid(padding=(0, 2))
        figures.add_column(style="bold", no_wrap=True)
        figures.add_column()
        closed = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.closed.items())) or "none"
        rate = self.events_per_s(now)
        per_s = "rate n/a (measuring)" if rate is None else f"{rate:,.0f}/s"
        figures.add_row("events", f"{per_s}, {stats.events:,} in all")
        figures.add_row("sessions", f"{self.runner.active_sessions:,} active; closed: {closed}")
        alerts = Text()
        for kind in ALERT_KINDS:
            alerts.append(f"{kind} ", style=KIND_STYLES.get(kind, ""))
            alerts.append(f"{self.kinds[kind]:,}   ")
        figures.add_row("alerts", alerts)
        figures.add_row("trust model", f"AUC {auc_text(m)}, log-loss {log_loss_text(m)}")
        figures.add_row(
            "learned from",
            f"{m['sessions_closed']:,} sessions ({m['sessions_converted']:,} bought)",
        )
        figures.add_row("open hotspots", ", ".join(m["open_hotspots"]) or "-")
        header = Panel(
            figures,
            title="[bold]disengage demo[/]",
            subtitle=f"simulated {rfc3339(sim_ts)[:19].replace('T', ' ')}, x{self.speed:g}; "
            "Ctrl-C stops",
        )
        width = console.width
        room = console.height - _height(console, header) - 2  # title line, last line
        lines: list[Text] = []
        for alert in self.recent:
            line = Text(describe(alert), style=KIND_STYLES.get(alert.kind, ""))
            need = len(line.wrap(console, width))
            if need > room:
                break
            room -= need
            lines.append(line)
        title = Text("latest alerts", style="bold")
        if not lines:
            title.append("  (none yet)", style="dim")
        return Group(header, title, *lines)


def _height(console: Console, renderable: RenderableType) -> int:
    return len(console.render_lines(renderable, console.options, pad=False))


def _rate_text(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:,.0f}"


def run_demo(
    config: DetectorConfig,
    duration_s: float | None = None,
    speed: float = DEFAULT_SPEED,
    seed: int = SimConfig.seed,
    plain: bool = False,
    out: TextIO | None = None,
    console: ConsoleOptions | None = None,
) -> int:
    """Run until ``duration_s`` (wall seconds) or Ctrl-C; return an exit code.
    ``speed`` is simulated seconds per wall second (above 0). ``console``:
    serve the marketing console of the run (``None``: the terminal only).

    The simulated visitors respond to interventions
    (:mod:`detectors.simulation.interventions`): treated sessions' alerts
    show help, and some visitors buy because of it, so the console's uplift
    panel has an effect to measure against the holdout."""
    from detectors.console_stats import ConsoleStats
    from detectors.detector import Detector
    from detectors.offline.runner import OfflineRunner
    from detectors.simulation.interventions import InterventionEffect, InterventionLoop

    if speed <= 0:
        raise ValueError("speed must be positive")
    out = out or sys.stdout
    detector = Detector(config)
    stats = ConsoleStats(config)
    runner = OfflineRunner(detector, on_step=stats.step, on_close=stats.closed)
    started = time.monotonic()
    view = DemoView(runner, speed, started)
    # the simulator keeps each session's truth while it is in flight: the
    # intervention loop needs the persona; finished ones are dropped below
    simulator = Simulator(demo_sim_config(seed), keep_truth=True)
    loop = InterventionLoop(simulator, runner, InterventionEffect())
    source = DemoSource(stats, detector, speed)
    server = _start_console(console, source, out)
    term = Console(file=out)
    live = None if plain else Live(console=term, auto_refresh=False, transient=False)
    sim_start: int | None = None
    sim_ts = 0
    last_draw = 0.0
    seen_alerts = 0
    last_snapshot = 0.0
    if live is not None:
        live.start()
    try:
        for n, raw in enumerate(loop.events()):  # the loop feeds the runner
            sim_ts = raw["ts"]
            if sim_start is None:
                sim_start = sim_ts
            for alert in loop.alerts[seen_alerts:]:
                stats.alert(alert)
                view.alert(alert)
                if plain:
                    print("ALERT " + describe(alert), file=out, flush=True)
            seen_alerts = len(loop.alerts)
            if seen_alerts > 4096:  # the loop's list is only a hand-over
                del loop.alerts[:]
                seen_alerts = 0
            if n % 65536 == 0:
                _forget_finished(loop, sim_ts, config.session_timeout_ms)
            if n % 256 == 0:
                now = time.monotonic()
                if duration_s is not None and now - started >= duration_s:
                    break
                ahead = (sim_ts - sim_start) / 1000.0 / speed - (now - started)
                if ahead > 0:
                    time.sleep(min(ahead, REFRESH_S))
                now = time.monotonic()
                if now - last_draw >= (PLAIN_STATUS_S if plain else REFRESH_S):
                    last_draw = now
                    if live is not None:
                        live.update(view.render(term, now, sim_ts), refresh=True)
                    else:
                        status = view.status(view.events_per_s(now))
                        print(f"STATUS {rfc3339(sim_ts)} {status}", file=out, flush=True)
                if server is not None and now - last_snapshot >= SNAPSHOT_S:
                    last_snapshot = now
                    source.publish()
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.update(view.render(term, time.monotonic(), sim_ts), refresh=True)
            live.stop()
        if server is not None:
            server.stop()
    summary = f"SUMMARY {view.status(view.average_rate(time.monotonic()))}"
    if plain:
        print(summary, file=out, flush=True)
    else:
        term.print(Text(summary))  # wrapped between words
    return 0


#: Wall seconds between two snapshots of the figures for the console.
SNAPSHOT_S = 1.0
#: Endless arrivals (the demo runs until stopped).
DEMO_SESSIONS = 10**9
#: The demo's hotspot incident (checkout step 2 broken for everyone), in
#: simulated minutes from the start: a few wall seconds in at the default speed.
DEMO_INCIDENT_MIN = (12.0, 30.0)


def demo_sim_config(seed: int) -> SimConfig:
    """The demo's endless simulation, with one hotspot incident early on."""
    span_s = DEMO_SESSIONS / SimConfig.arrival_rate
    start, end = (60.0 * m / span_s for m in DEMO_INCIDENT_MIN)
    return SimConfig(sessions=DEMO_SESSIONS, seed=seed, incident_window=(start, end))


@dataclass(frozen=True)
class ConsoleOptions:
    """Serve the console on ``host``:``port`` (0: any free port); ``open``:
    open it in the desktop's browser when there is one."""

    host: str = "127.0.0.1"
    port: int = 8480
    open: bool = True


class DemoSource:
    """The console's figures of the running demo. The demo's own thread
    takes them (:meth:`publish`, every :data:`SNAPSHOT_S`) between events,
    so the console's thread never reads the detector while it changes; the
    server hands out the latest."""

    def __init__(self, stats: ConsoleStats, detector: Detector, speed: float) -> None:
        self.stats = stats
        self.detector = detector
        self.speed = speed
        self.latest: dict[str, Any] = {}
        self.publish()

    def publish(self) -> None:
        """Take the figures now (on the demo's thread)."""
        open_hotspots = self.detector.metrics()["open_hotspots"]
        snap = self.stats.snapshot(self.detector.models.uplift, open_hotspots)
        snap["source"] = f"embedded demo: simulated traffic at x{self.speed:g}"
        self.latest = snap  # one reference swap: the server never sees a half-made one

    def snapshot(self) -> dict[str, Any]:
        return self.latest


def _start_console(
    options: ConsoleOptions | None, source: DemoSource, out: TextIO
) -> BackgroundServer | None:
    """Serve the console, and open it when a desktop browser is there; on
    any failure the demo goes on in the terminal alone, saying why."""
    from stream.console.server import BUILD_HINT, BackgroundServer, built, console_app, console_dir

    if options is None:
        return None
    from stream.commands.arguments import load_settings

    root = console_dir(load_settings().console_dir)
    if not built(root):
        print(f"console not built, terminal view only: {BUILD_HINT}", file=out, flush=True)
        return None
    try:
        server = BackgroundServer(console_app(source, root), options.host, options.port).start()
    except OSError as exc:
        print(f"console not served ({exc}); terminal view only", file=out, flush=True)
        return None
    print(f"console: {server.url}", file=out, flush=True)
    if options.open and _desktop():
        webbrowser.open(server.url)
    return server


def _desktop() -> bool:
    """A graphical session a browser can open in (never a text browser in
    this terminal, which the live view is using)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _forget_finished(loop: InterventionLoop, now_ts: int, timeout_ms: int) -> None:
    """Drop what is kept of sessions that ended over two timeouts ago (an
    endless demo must not keep them all): the simulator's ground truth and
    the intervention loop's record of them."""
    truth = loop.sim.truth
    if len(truth) < 20_000:
        return
    gone = [sid for sid, t in truth.items() if t.end_ts and t.end_ts + 2 * timeout_ms < now_ts]
    for sid in gone:
        del truth[sid]
    loop.forget(gone)
