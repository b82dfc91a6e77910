"""The ``disengage`` command line.

Subcommands that need no infrastructure:

* ``demo``: simulator -> detector in-process, with a live terminal view;
* ``simulate``: write simulated events and their ground truth to JSONL;
* ``replay``: run the detector over a JSONL file, alerts to JSONL;
* ``evaluate``: prequential evaluation against outcomes;
* ``convert otto``: turn the OTTO sample into contract events.

``worker``, ``simulate --kafka``, ``alerts tail`` and ``alerts forward`` need
Kafka (and the worker and the forwarder Redis).

Most subcommands live in :mod:`stream.commands` (one module each, with its
parser); this module assembles them. Exit codes: 0 done, 1 failed while
running, 2 usage (see :mod:`stream.commands.arguments`); failures are one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from detectors.config import DetectorConfig
from stream.commands import convert, demo, replay, simulate, tail
from stream.commands.arguments import CommandError, detector_config, load_settings
from stream.forward.command import add_parser as add_forward_parser
from stream.inputs import check_readable, event_lines, report_invalid, require_events
from stream.settings import Settings


def _settings() -> Settings:
    return load_settings()


def _detector_config(args: argparse.Namespace) -> DetectorConfig:
    return detector_config(args)


# ------------------------------------------------------------------ evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Every input and the plot path are checked before the run (exit 2).
    Labels and ground truth that hardly match the events are said on stderr.
    A plot that fails after the run still leaves the report printed (exit 1)."""
    from stream.evaluate_inputs import check_plot_target, read_labels_file, read_truth_file
    from stream.sim_files import truth_path

    config = _detector_config(args)
    check_readable(args.events)
    labels = read_labels_file(args.labels) if args.labels else None
    truth = None
    if args.truth:
        truth = read_truth_file(args.truth)
    elif args.events != "-" and os.path.exists(truth_path(args.events)):
        truth = read_truth_file(truth_path(args.events), given=False)
    if args.plot:
        check_plot_target(args.plot)

    from detectors.evaluation import LOW_MATCH_SHARE, evaluate
    from detectors.events import EventParser
    from detectors.runner import RunStats, parse_lines, reorder
    from stream.report import format_report, match_warnings

    stats = RunStats()
    with event_lines(args.events, "evaluate") as lines:
        events = reorder(parse_lines(lines, EventParser(config), stats), config.allowed_lateness_ms)
        result = evaluate(events, config, labels=labels, truth=truth, stats=stats)
    report_invalid(stats, args.events, args.prog)
    require_events(stats, args.events)
    summary = result.summary()
    if labels is not None:
        match = result.label_match()
        print(f"labels: {match.given} given, {match.matched} matched", file=sys.stderr)
    for warning in match_warnings(summary, LOW_MATCH_SHARE):
        print(f"{args.prog}: {warning}", file=sys.stderr)
    plot_failure = None
    if args.plot:
        from stream.plots import plot_report

        try:
            plot_report(result, args.plot)
            summary["plot"] = args.plot
        except Exception as exc:  # any matplotlib failure: the report must still come out
            plot_failure = f"the plot failed ({type(exc).__name__}: {exc}); the report is complete"
    if args.json:
        print(json.dumps(summary, indent=None, sort_keys=True))
    else:
        print(format_report(summary))
    if plot_failure:
        print(f"{args.prog}: {plot_failure}", file=sys.stderr)
        return 1
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


# -------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disengage",
        description="Streaming, real-time disengagement detector.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo.add_parser(sub)
    simulate.add_parser(sub)

    p = sub.add_parser("worker", help="run the streaming worker (Kafka -> Redis -> alerts)")
    p.add_argument("--loglevel", help="log level (default DISENGAGE_LOG_LEVEL or INFO)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("alerts", help="the alerts topic")
    alerts = p.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    tail.add_parser(alerts)
    add_forward_parser(alerts)

    replay.add_parser(sub)

    p = sub.add_parser("evaluate", help="prequential evaluation against outcomes")
    p.add_argument("events", help="events JSONL ('-' for stdin)")
    p.add_argument("--goal", help="goal event type (default purchase)")
    p.add_argument("--labels", help="CSV session_id,converted with outcomes from elsewhere")
    p.add_argument("--truth", help="simulator ground truth (default: <events>.truth.jsonl)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--plot", help="write ROC, lead-time and calibration plots to this PNG")
    p.set_defaults(func=cmd_evaluate, prog=p.prog)

    convert.add_parser(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (see :mod:`stream.commands.arguments`).

    A failure the command foresaw is one line on stderr, never a traceback;
    so is an operating-system error nobody foresaw (a disk filling up).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = getattr(args, "prog", f"disengage {args.command}")
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{prog}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
