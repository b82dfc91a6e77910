"""``disengage convert``: a public dataset to contract events (JSON Lines)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from stream.commands.arguments import CommandError, UsageError, check_writable, output
from stream.commands.inputs import check_readable, display_name, event_lines

DATASETS = ("otto", "diginetica")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="convert a public dataset to contract events")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument(
        "input",
        help="dataset file, may be gzipped ('-' for stdin); for diginetica the item views",
    )
    p.add_argument(
        "--purchases",
        metavar="FILE",
        help="diginetica only: the purchases file (train-purchases.csv); without it, no "
        "session converts",
    )
    p.add_argument("-o", "--output", help="events JSONL (default stdout)")
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from detectors.offline.datasets import diginetica_to_events, otto_to_events

    if args.purchases and args.dataset != "diginetica":
        raise UsageError("--purchases applies to diginetica only")
    check_readable(args.input)
    if args.purchases:
        check_readable(args.purchases)
    if args.output not in (None, "-"):
        check_writable(args.output)  # a bad output path stops us before the work
    name = "OTTO JSONL" if args.dataset == "otto" else "DIGINETICA CSV"
    try:
        with contextlib.ExitStack() as stack:
            lines = _text(stack.enter_context(event_lines(args.input, "convert")))
            if args.dataset == "otto":
                converted = otto_to_events(lines)
            else:
                orders = (
                    _text(stack.enter_context(event_lines(args.purchases, "convert")))
                    if args.purchases
                    else iter(())
                )
                converted = diginetica_to_events(lines, orders)
            events = sorted(converted, key=lambda e: (e["ts"], e["event_id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandError(
            f"{display_name(args.input)} is not {name}: {type(exc).__name__} {exc}"
        ) from None
    if not events:
        raise CommandError(f"no {args.dataset} events in {display_name(args.input)}")
    with output(args.output) as out:
        for event in events:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    sessions = len({e["session_id"] for e in events})
    goals = sum(e["type"] == "purchase" for e in events)
    print(f"wrote {len(events):,} events of {sessions:,} sessions ({goals:,} purchases)",
          file=sys.stderr)
    if args.dataset == "diginetica" and not args.purchases:
        print(f"{args.prog}: no --purchases file: no session converts", file=sys.stderr)
    return 0


def _text(lines: Iterable[bytes]) -> Iterator[str]:
    return (line.decode("utf-8", "replace") for line in lines)
