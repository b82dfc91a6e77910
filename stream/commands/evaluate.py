"""``disengage evaluate``: prequential evaluation of the detector against real outcomes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from stream.commands.arguments import add_goal_option, detector_config
from stream.commands.inputs import check_readable, event_lines, report_invalid, require_events


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="prequential evaluation against outcomes")
    p.add_argument("events", help="events JSONL, may be gzipped ('-' for stdin)")
    add_goal_option(p)
    p.add_argument("--labels", help="CSV session_id,converted with outcomes from elsewhere")
    p.add_argument("--truth", help="simulator ground truth (default: <events>.truth.jsonl)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--plot", help="write ROC, lead-time and calibration plots to this PNG")
    p.add_argument(
        "--no-offline",
        action="store_true",
        help="skip the offline gradient-boosting reference (it takes seconds; needs the "
        "bench extra)",
    )
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    """Every input and the plot path are checked before the run (exit 2).
    Labels and ground truth that hardly match the events are said on stderr.
    A plot that fails after the run still leaves the report printed (exit 1)."""
    from stream.commands.evaluate_inputs import check_plot_target, read_labels_file, read_truth_file
    from stream.commands.sim_files import truth_path

    config = detector_config(args)
    check_readable(args.events)
    labels = read_labels_file(args.labels) if args.labels else None
    truth = None
    if args.truth:
        truth = read_truth_file(args.truth)
    elif args.events != "-" and os.path.exists(truth_path(args.events)):
        truth = read_truth_file(truth_path(args.events), given=False)
    if args.plot:
        check_plot_target(args.plot)

    from detectors.clock import StreamClock
    from detectors.events import EventParser
    from detectors.offline.evaluation import LOW_MATCH_SHARE, evaluate
    from detectors.offline.runner import RunStats, parse_lines, reorder
    from stream.commands.report import format_report, match_warnings
    from stream.offline_reference import add_offline_reference

    stats = RunStats()
    with event_lines(args.events, "evaluate") as lines:
        events = reorder(
            parse_lines(lines, EventParser(config), stats),
            config.allowed_lateness_ms,
            StreamClock.for_config(config),
        )
        result = evaluate(events, config, labels=labels, truth=truth, stats=stats)
    report_invalid(stats, args.events, args.prog)
    require_events(stats, args.events)
    summary = result.summary()
    add_offline_reference(summary, result, skip=args.no_offline)
    if labels is not None:
        match = result.label_match()
        print(f"labels: {match.given} given, {match.matched} matched", file=sys.stderr)
    for warning in match_warnings(summary, LOW_MATCH_SHARE):
        print(f"{args.prog}: {warning}", file=sys.stderr)
    plot_failure = None
    if args.plot:
        from stream.commands.plots import plot_report

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
