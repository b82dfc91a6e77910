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

import sys
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from detectors.alerts import ALERT_KINDS, Alert, rfc3339
from detectors.config import DetectorConfig
from detectors.events import EventParser, InvalidEvent
from detectors.simulation.simulator import SimConfig, Simulator
from stream.alert_view import alert_line, view_of

if TYPE_CHECKING:  # the detector imports River: loaded when the demo runs, not for --help
    from detectors.offline.runner import OfflineRunner

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
) -> int:
    """Run until ``duration_s`` (wall seconds) or Ctrl-C; return an exit code.
    ``speed`` is simulated seconds per wall second (above 0)."""
    from detectors.detector import Detector
    from detectors.offline.runner import OfflineRunner

    if speed <= 0:
        raise ValueError("speed must be positive")
    out = out or sys.stdout
    parser = EventParser(config)
    runner = OfflineRunner(Detector(config))
    started = time.monotonic()
    view = DemoView(runner, speed, started)
    simulator = Simulator(SimConfig(sessions=10**9, seed=seed, incident=False), keep_truth=False)
    console = Console(file=out)
    live = None if plain else Live(console=console, auto_refresh=False, transient=False)
    sim_start: int | None = None
    sim_ts = 0
    last_draw = 0.0
    if live is not None:
        live.start()
    try:
        for n, raw in enumerate(simulator.events()):
            sim_ts = raw["ts"]
            if sim_start is None:
                sim_start = sim_ts
            try:
                event = parser.parse(raw)
            except InvalidEvent:
                continue
            for alert in runner.feed(event):
                view.alert(alert)
                if plain:
                    print("ALERT " + describe(alert), file=out, flush=True)
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
                        live.update(view.render(console, now, sim_ts), refresh=True)
                    else:
                        status = view.status(view.events_per_s(now))
                        print(f"STATUS {rfc3339(sim_ts)} {status}", file=out, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.update(view.render(console, time.monotonic(), sim_ts), refresh=True)
            live.stop()
    summary = f"SUMMARY {view.status(view.average_rate(time.monotonic()))}"
    if plain:
        print(summary, file=out, flush=True)
    else:
        console.print(Text(summary))  # wrapped between words
    return 0
