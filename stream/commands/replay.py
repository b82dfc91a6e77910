"""``disengage replay``: the detector over a JSON Lines file, alerts out as CloudEvents."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stream.commands.arguments import add_goal_option, detector_config, output
from stream.commands.inputs import check_readable, event_lines, report_invalid, require_events


def add_parser(sub: Any) -> None:
    p = sub.add_parser("replay", help="run the detector over a JSONL file in event order")
    p.add_argument("events", help="events JSONL, may be gzipped ('-' for stdin)")
    p.add_argument("-o", "--output", help="alerts JSONL (default stdout)")
    add_goal_option(p)
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    """Alerts as CloudEvents JSONL. The end of the file is not a session
    timeout, so sessions still open at the end are left open (no closes).
    Bad lines are reported on stderr; no valid event at all is a failure."""
    config = detector_config(args)
    check_readable(args.events)
    with event_lines(args.events, "replay") as lines, output(args.output) as out:
        # River loads only now: a bad path or file fails without waiting for it
        from detectors.clock import StreamClock
        from detectors.detector import Detector
        from detectors.events import EventParser
        from detectors.offline.runner import OfflineRunner, parse_lines, reorder

        runner = OfflineRunner(Detector(config))
        stats = runner.stats
        parsed = parse_lines(lines, EventParser(config), stats)
        events = reorder(parsed, config.allowed_lateness_ms, StreamClock.for_config(config))
        for event in events:
            for alert in runner.feed(event):
                out.write(
                    json.dumps(alert.to_cloudevent(config.source), separators=(",", ":")) + "\n"
                )
    report_invalid(stats, args.events, args.prog)
    require_events(stats, args.events)
    summary = {
        "events": stats.events,
        "applied": stats.applied,
        "invalid": dict(stats.invalid),
        "statuses": dict(stats.statuses),
        "dead_letters": dict(stats.dead_letters),
        "clock_ahead": stats.ahead,
        "alerts": dict(stats.alerts),
        "sessions_closed": dict(stats.closed),
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0
