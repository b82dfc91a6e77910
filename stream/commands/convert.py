"""``disengage convert``: a public dataset to contract events (JSON Lines)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stream.commands.arguments import CommandError, open_output, output
from stream.commands.inputs import check_readable, display_name, event_lines

DATASETS = ("otto",)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="convert a public dataset to contract events")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("input", help="dataset file, may be gzipped ('-' for stdin)")
    p.add_argument("-o", "--output", help="events JSONL (default stdout)")
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from detectors.offline.datasets import otto_to_events

    check_readable(args.input)
    if args.output not in (None, "-"):
        open_output(args.output).close()  # a bad output path stops us before the work
    with event_lines(args.input, "convert") as lines:
        text = (line.decode("utf-8", "replace") for line in lines)
        try:
            events = sorted(otto_to_events(text), key=lambda e: (e["ts"], e["event_id"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CommandError(
                f"{display_name(args.input)} is not OTTO JSONL: {type(exc).__name__} {exc}"
            ) from None
    if not events:
        raise CommandError(f"no OTTO events in {display_name(args.input)}")
    with output(args.output) as out:
        for event in events:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    print(f"wrote {len(events):,} events", file=sys.stderr)
    return 0
