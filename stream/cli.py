"""The ``disengage`` command line.

Subcommands that need no infrastructure:

* ``demo``: simulator -> detector in-process, with a live terminal view and
  the marketing console in the browser;
* ``simulate``: write simulated events and their ground truth to JSONL;
* ``replay``: run the detector over a JSONL file, alerts to JSONL;
* ``evaluate``: prequential evaluation against outcomes;
* ``convert otto``: turn the OTTO sample into contract events.

``worker``, ``trainer``, ``collect``, ``console``, ``simulate --kafka``,
``alerts tail`` and ``alerts forward`` need Kafka (and the worker, the
trainer and the forwarder Redis); ``models`` needs Redis.

Most subcommands live in :mod:`stream.commands` (one module each, with its
parser); this module assembles them. Exit codes: 0 done, 1 failed while
running, 2 usage (see :mod:`stream.commands.arguments`); failures are one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stream.commands import (
    collect,
    console,
    convert,
    demo,
    evaluate,
    models,
    replay,
    simulate,
    tail,
    trainer,
    worker,
)
from stream.commands.arguments import CommandError
from stream.forward.command import add_parser as add_forward_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disengage",
        description="Streaming, real-time disengagement detector.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo.add_parser(sub)
    simulate.add_parser(sub)

    worker.add_parser(sub)
    trainer.add_parser(sub)
    collect.add_parser(sub)
    console.add_parser(sub)
    models.add_parser(sub)

    p = sub.add_parser("alerts", help="the alerts topic")
    alerts = p.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    tail.add_parser(alerts)
    add_forward_parser(alerts)

    replay.add_parser(sub)

    evaluate.add_parser(sub)

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
