"""The ``disengage`` command line.

Subcommands that need no infrastructure:

* ``demo``: simulator -> detector in-process, with a live terminal view;
* ``simulate``: write simulated events and their ground truth to JSONL;
* ``replay``: run the detector over a JSONL file, alerts to JSONL;
* ``evaluate``: prequential evaluation against outcomes;
* ``convert otto``: turn the OTTO sample into contract events.

``worker``, ``simulate --kafka``, ``alerts tail`` and ``alerts forward`` need
Kafka (and the worker and the forwarder Redis).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import IO

from detectors.config import DetectorConfig
from detectors.events import EventParser
from detectors.runner import OfflineRunner, RunStats, parse_lines, reorder
from stream.forward.command import add_parser as add_forward_parser
from stream.settings import Settings, SettingsError


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    """stdout for None or '-', else the file (closed afterwards)."""
    if path in (None, "-"):
        yield sys.stdout
        return
    try:
        with open(path, "w", encoding="utf-8") as out:
            yield out
    except OSError as exc:
        raise SystemExit(f"disengage: cannot write {path}: {exc.strerror}") from None


def _open_text(path: str) -> IO[str]:
    if path == "-":
        return sys.stdin
    try:
        return open(path, encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise SystemExit(f"disengage: cannot read {path}: {exc.strerror}") from None


def _progress(lines: IO[str], path: str, label: str) -> Iterator[str]:
    """Yield lines; draw a progress bar on stderr when it is a terminal."""
    if path == "-" or not sys.stderr.isatty():
        yield from lines
        return
    total = max(os.path.getsize(path), 1)
    done = 0
    step = max(total // 200, 1)
    mark = 0
    for line in lines:
        done += len(line)
        if done >= mark:
            mark = done + step
            frac = min(done / total, 1.0)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{label} [{bar:<30}] {frac:6.1%}")
            sys.stderr.flush()
        yield line
    sys.stderr.write(f"\r{label} [{'#' * 30}] 100.0%\n")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise SystemExit(f"disengage: {exc}") from None


def _detector_config(args: argparse.Namespace) -> DetectorConfig:
    config = _settings().detector
    if getattr(args, "goal", None):
        config = config.with_overrides(goal_event=args.goal)
    try:
        return config.validate()
    except ValueError as exc:
        raise SystemExit(f"disengage: {exc}") from None


# ------------------------------------------------------------------ simulate
def cmd_simulate(args: argparse.Namespace) -> int:
    from detectors.simulator import SimConfig, Simulator, truth_path, write_jsonl

    if args.kafka:
        import asyncio

        from stream.live import produce_simulation

        asyncio.run(
            produce_simulation(
                _settings(),
                rate=args.rate,
                sessions=args.sessions,  # None: endless
                duration_s=args.duration,
                seed=args.seed,
                incident=not args.no_incident,
            )
        )
        return 0
    if not args.output:
        raise SystemExit("disengage simulate: -o/--output is required (or --kafka)")
    sessions = args.sessions if args.sessions is not None else 10_000
    config = SimConfig(
        sessions=sessions,
        seed=args.seed,
        arrival_rate=args.arrival_rate,
        incident=not args.no_incident,
    )
    n = write_jsonl(args.output, Simulator(config))
    print(f"wrote {n} events of {sessions} sessions to {args.output}", file=sys.stderr)
    print(f"ground truth in {truth_path(args.output)}", file=sys.stderr)
    return 0


# -------------------------------------------------------------------- replay
def cmd_replay(args: argparse.Namespace) -> int:
    """Alerts as CloudEvents JSONL. The end of the file is not a session
    timeout, so sessions still open at the end are left open (no closes)."""
    from detectors.detector import Detector

    config = _detector_config(args)
    parser = EventParser(config)
    runner = OfflineRunner(Detector(config))
    stats = runner.stats
    source = config.source
    with _open_text(args.events) as lines, _output(args.output) as out:
        events = reorder(
            parse_lines(_progress(lines, args.events, "replay"), parser, stats),
            config.allowed_lateness_ms,
        )
        for event in events:
            for alert in runner.feed(event):
                out.write(json.dumps(alert.to_cloudevent(source), separators=(",", ":")) + "\n")
    summary = {
        "events": stats.events,
        "applied": stats.applied,
        "invalid": dict(stats.invalid),
        "statuses": dict(stats.statuses),
        "alerts": dict(stats.alerts),
        "sessions_closed": dict(stats.closed),
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0


# ------------------------------------------------------------------ evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from detectors.evaluation import evaluate, read_labels, read_truth
    from detectors.simulator import truth_path
    from stream.report import format_report

    config = _detector_config(args)
    labels = None
    if args.labels:
        with _open_text(args.labels) as f:
            try:
                labels = read_labels(f)
            except ValueError as exc:
                raise SystemExit(f"disengage evaluate: {exc}") from None
    truth = None
    truth_file = args.truth
    if truth_file is None and args.events != "-" and os.path.exists(truth_path(args.events)):
        truth_file = truth_path(args.events)
    if truth_file:
        with _open_text(truth_file) as f:
            truth = read_truth(f)
    parser = EventParser(config)
    stats = RunStats()
    with _open_text(args.events) as lines:
        events = reorder(
            parse_lines(_progress(lines, args.events, "evaluate"), parser, stats),
            config.allowed_lateness_ms,
        )
        result = evaluate(events, config, labels=labels, truth=truth, stats=stats)
    summary = result.summary()
    if args.plot:
        from stream.plots import plot_report

        plot_report(result, args.plot)
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary, indent=None, sort_keys=True))
    else:
        print(format_report(summary))
    return 0


# ------------------------------------------------------------------- convert
def cmd_convert(args: argparse.Namespace) -> int:
    from detectors.datasets import otto_to_events

    with _open_text(args.input) as f:
        try:
            events = sorted(otto_to_events(f), key=lambda e: (e["ts"], e["event_id"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"disengage convert: {args.input} is not OTTO JSONL: {exc}") from None
    with _output(args.output) as out:
        for event in events:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    print(f"wrote {len(events)} events", file=sys.stderr)
    return 0


# -------------------------------------------------------------------- worker
def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from stream.app import run_worker
    from stream.kafka_io import ensure_topics

    settings = _settings()
    level = (args.loglevel or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("disengage.worker").info("settings %s", settings.redacted())
    try:
        asyncio.run(ensure_topics(settings))  # logs what it created
    except Exception as exc:  # broker unreachable or refused: say so, exit non-zero
        raise SystemExit(
            f"disengage worker: cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}"
        ) from None
    run_worker(settings, loglevel=level.lower())
    return 0


# -------------------------------------------------------------------- alerts
def cmd_alerts_tail(args: argparse.Namespace) -> int:
    import asyncio

    from stream.live import tail_alerts

    asyncio.run(
        tail_alerts(
            _settings(),
            kinds=set(args.kind),
            page=args.page,
            from_beginning=args.from_beginning,
            as_json=args.json,
            limit=args.limit,
            idle_timeout_s=args.idle_timeout,
        )
    )
    return 0


# ---------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from stream.demo import run_demo

    config = _detector_config(args)
    return run_demo(
        config,
        duration_s=args.duration,
        speed=args.speed,
        seed=args.seed,
        plain=args.plain or not sys.stdout.isatty(),
    )


# -------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disengage",
        description="Streaming, real-time disengagement detector.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="live demo: simulator -> detector, in-process, no Kafka")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--speed", type=float, default=60.0, help="simulated seconds per real second (default 60)"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--plain", action="store_true", help="plain lines instead of the live view")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "simulate", help="write simulated events and their ground truth, or produce them live"
    )
    p.add_argument(
        "--sessions",
        type=int,
        default=None,
        help="sessions to simulate (default 10000 to a file, endless with --kafka)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--arrival-rate",
        type=float,
        default=2.0,
        help="new sessions per simulated second (default 2)",
    )
    p.add_argument("--no-incident", action="store_true", help="no hotspot incident")
    p.add_argument("-o", "--output", help="events JSONL path")
    p.add_argument(
        "--kafka",
        action="store_true",
        help="produce to the interactions topic (DISENGAGE_* settings) instead",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=500.0,
        help="events/s with --kafka; event time tracks real time (default 500)",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds (--kafka)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("worker", help="run the streaming worker (Kafka -> Redis -> alerts)")
    p.add_argument("--loglevel", help="log level (default DISENGAGE_LOG_LEVEL or INFO)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("alerts", help="the alerts topic")
    alerts = p.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    t = alerts.add_parser("tail", help="watch alerts live")
    t.add_argument(
        "--kind",
        action="append",
        default=[],
        choices=["hesitation", "trust_loss", "friction_hotspot"],
        help="only this kind (repeatable)",
    )
    t.add_argument("--page", help="only alerts whose page or hotspot key contains this")
    t.add_argument("--from-beginning", action="store_true", help="start at the oldest alert")
    t.add_argument("--json", action="store_true", help="print the CloudEvents JSON")
    t.add_argument("-n", "--limit", type=int, default=None, help="stop after N alerts")
    t.add_argument(
        "--idle-timeout", type=float, default=None, help="stop after S seconds without alerts"
    )
    t.set_defaults(func=cmd_alerts_tail)
    add_forward_parser(alerts)

    p = sub.add_parser("replay", help="run the detector over a JSONL file in event order")
    p.add_argument("events", help="events JSONL ('-' for stdin)")
    p.add_argument("-o", "--output", help="alerts JSONL (default stdout)")
    p.add_argument("--goal", help="goal event type (default purchase)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("evaluate", help="prequential evaluation against outcomes")
    p.add_argument("events", help="events JSONL ('-' for stdin)")
    p.add_argument("--goal", help="goal event type (default purchase)")
    p.add_argument("--labels", help="CSV session_id,converted with outcomes from elsewhere")
    p.add_argument("--truth", help="simulator ground truth (default: <events>.truth.jsonl)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--plot", help="write ROC, lead-time and calibration plots to this PNG")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("convert", help="convert a public dataset to contract events")
    p.add_argument("dataset", choices=["otto"])
    p.add_argument("input", help="dataset file")
    p.add_argument("-o", "--output", help="events JSONL (default stdout)")
    p.set_defaults(func=cmd_convert)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
