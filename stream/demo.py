"""``disengage demo``: the embedded default.

The simulator feeds the detector in-process with in-memory state: no Kafka,
Redis or Docker. Simulated time runs ``speed`` times faster than the wall
clock. On a terminal a live view redraws four times a second: alerts
scrolling with their reasons, events/s, active sessions, alerts by kind and
the trust model's self-measured AUC. Without a terminal it prints plain lines.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter, deque
from typing import TextIO

from detectors.alerts import Alert, rfc3339
from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import EventParser, InvalidEvent
from detectors.runner import OfflineRunner
from detectors.simulator import SimConfig, Simulator
from stream.alert_view import alert_line, view_of

REFRESH_S = 0.25
PLAIN_STATUS_S = 5.0
ALERT_LINES = 12

_KIND_COLOUR = {"hesitation": "\x1b[33m", "trust_loss": "\x1b[31m", "friction_hotspot": "\x1b[35m"}
_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"


def describe(alert: Alert) -> str:
    """One line for an alert: kind, where, why, and what to do."""
    return alert_line(view_of(alert.to_cloudevent("urn:disengage:demo"), None, True))


class _View:
    def __init__(self, runner: OfflineRunner, out: TextIO, plain: bool, speed: float) -> None:
        self.runner = runner
        self.out = out
        self.plain = plain
        self.speed = speed
        self.recent: deque[Alert] = deque(maxlen=ALERT_LINES)
        self.rate_window: deque[tuple[float, int]] = deque()
        self.kinds: Counter[str] = Counter()
        self.last_draw = 0.0

    def alert(self, alert: Alert) -> None:
        self.kinds[alert.kind] += 1
        self.recent.appendleft(alert)
        if self.plain:
            print("ALERT " + describe(alert), file=self.out, flush=True)

    def events_per_s(self, now: float) -> float:
        self.rate_window.append((now, self.runner.stats.events))
        while len(self.rate_window) > 2 and now - self.rate_window[0][0] > 2.0:
            self.rate_window.popleft()
        (t0, n0), (t1, n1) = self.rate_window[0], self.rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def status(self, now: float) -> str:
        m = self.runner.detector.metrics()
        return (
            f"events/s {self.events_per_s(now):,.0f} | events {self.runner.stats.events:,} | "
            f"active sessions {self.runner.active_sessions:,} | closed "
            f"{sum(self.runner.stats.closed.values()):,} | alerts "
            + ", ".join(
                f"{k} {self.kinds[k]}" for k in ("hesitation", "trust_loss", "friction_hotspot")
            )
            + f" | trust AUC {m['trust_auc']:.3f} log-loss {m['trust_log_loss']:.3f} "
            f"({m['sessions_closed']:,} sessions learned)"
        )

    def draw(self, now: float, sim_ts: int, force: bool = False) -> None:
        interval = PLAIN_STATUS_S if self.plain else REFRESH_S
        if not force and now - self.last_draw < interval:
            return
        self.last_draw = now
        if self.plain:
            print(f"STATUS {rfc3339(sim_ts)} {self.status(now)}", file=self.out, flush=True)
            return
        m = self.runner.detector.metrics()
        lines = [
            f"{_BOLD}disengage demo{_RESET}  simulated time {rfc3339(sim_ts)[:19]}  "
            f"(x{self.speed:g})   Ctrl-C to stop",
            "",
            f"  events/s        {self.events_per_s(now):>10,.0f}     events      "
            f"{self.runner.stats.events:>12,}",
            f"  active sessions {self.runner.active_sessions:>10,}     closed      "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(self.runner.stats.closed.items())),
            "  alerts          "
            + "   ".join(
                f"{_KIND_COLOUR[k]}{k}{_RESET} {self.kinds[k]:,}"
                for k in ("hesitation", "trust_loss", "friction_hotspot")
            ),
            f"  trust model     AUC {m['trust_auc']:.3f}   log-loss {m['trust_log_loss']:.3f}"
            f"   sessions learned {m['sessions_closed']:,}   base rate {m['base_rate']:.1%}",
            f"  open hotspots   {', '.join(m['open_hotspots']) or '-'}",
            "",
            f"{_BOLD}latest alerts{_RESET}",
        ]
        size = shutil.get_terminal_size((120, 30))
        room = max(size.lines - len(lines) - 1, 1)
        for alert in list(self.recent)[:room]:
            colour = _KIND_COLOUR.get(alert.kind, "")
            lines.append(f"{colour}{describe(alert)[: size.columns - 1]}{_RESET}")
        self.out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        self.out.flush()


def run_demo(
    config: DetectorConfig,
    duration_s: float | None = None,
    speed: float = 60.0,
    seed: int = 7,
    plain: bool = False,
    out: TextIO | None = None,
) -> int:
    """Run until ``duration_s`` (wall seconds) or Ctrl-C; return an exit code."""
    out = out or sys.stdout
    if speed <= 0:
        raise SystemExit("disengage demo: --speed must be positive")
    parser = EventParser(config)
    runner = OfflineRunner(Detector(config))
    view = _View(runner, out, plain, speed)
    simulator = Simulator(SimConfig(sessions=10**9, seed=seed, incident=False), keep_truth=False)
    started = time.monotonic()
    sim_start: int | None = None
    sim_ts = 0
    if not plain:
        out.write("\x1b[?25l")
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
            if n % 256 == 0:
                now = time.monotonic()
                if duration_s is not None and now - started >= duration_s:
                    break
                ahead = (sim_ts - sim_start) / 1000.0 / speed - (now - started)
                if ahead > 0:
                    time.sleep(min(ahead, REFRESH_S))
                view.draw(time.monotonic(), sim_ts)
    except KeyboardInterrupt:
        pass
    finally:
        if not plain:
            out.write("\x1b[?25h")
    view.draw(time.monotonic(), sim_ts, force=True)
    print(f"SUMMARY {view.status(time.monotonic())}", file=out, flush=True)
    return 0
