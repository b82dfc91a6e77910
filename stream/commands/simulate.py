"""``disengage simulate``: simulated events and their ground truth to JSONL, or live to Kafka."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from detectors.simulation.interventions import InterventionLoop
from detectors.simulation.simulator import SimConfig, Simulator
from stream.commands.arguments import (
    UsageError,
    check_writable,
    kafka_failure,
    load_settings,
    open_output,
    positive_float,
    positive_int,
    quiet_kafka_client_logs,
)
from stream.commands.sim_files import truth_path, write_events, write_truth

#: Events per second produced with ``--kafka`` when ``--rate`` is not given.
DEFAULT_KAFKA_RATE = 500.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="write simulated events and their ground truth, or produce them live"
    )
    p.add_argument(
        "--sessions",
        type=positive_int,
        default=None,
        help=f"visitors to simulate; return visits add sessions (default {SimConfig.sessions} "
        "to a file, endless with --kafka)",
    )
    p.add_argument("--seed", type=int, default=SimConfig.seed, help=f"(default {SimConfig.seed})")
    p.add_argument(
        "--arrival-rate",
        type=positive_float,
        default=SimConfig.arrival_rate,
        help=f"new sessions per simulated second (default {SimConfig.arrival_rate:g}; "
        "with --kafka it follows --rate)",
    )
    p.add_argument("--no-incident", action="store_true", help="no hotspot incident")
    p.add_argument(
        "-o",
        "--output",
        help="events JSONL path ('-' for stdout); the ground truth goes next to it "
        "as <name>.truth.jsonl (not for stdout)",
    )
    p.add_argument(
        "--interventions",
        action="store_true",
        help="close the loop: run the detector (DISENGAGE_* settings, its holdout "
        "included) on the simulated traffic, show help on the treated sessions' alerts "
        "(intervention events) and let some visitors respond by buying "
        "(detectors/simulation/interventions.py); prints the true effect",
    )
    p.add_argument(
        "--kafka",
        action="store_true",
        help="produce to the interactions topic (DISENGAGE_* settings) instead",
    )
    p.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        help=f"events/s with --kafka; event time tracks real time (default {DEFAULT_KAFKA_RATE:g})",
    )
    p.add_argument(
        "--duration", type=positive_float, default=None, help="stop after S seconds (--kafka)"
    )
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    if args.kafka:
        if args.output:
            raise UsageError("-o/--output and --kafka exclude each other")
        if args.interventions:
            raise UsageError("--interventions writes a file; the live loop is the demo's")
        return _to_kafka(args)
    if not args.output:
        raise UsageError("-o/--output is required (or --kafka)")
    if args.rate is not None or args.duration is not None:
        raise UsageError("--rate and --duration apply to --kafka only")
    sessions = args.sessions if args.sessions is not None else SimConfig.sessions
    config = SimConfig(
        sessions=sessions,
        seed=args.seed,
        arrival_rate=args.arrival_rate,
        incident=not args.no_incident,
    )
    to_stdout = args.output == "-"
    # both paths are checked, then opened, before the simulation starts, so a bad
    # one stops it at once and never leaves the other truncated
    if not to_stdout:
        check_writable(args.output)
        check_writable(truth_path(args.output))
    events_out = open_output(args.output)
    truth_out = None if to_stdout else open_output(truth_path(args.output))
    simulator = Simulator(config, keep_truth=not to_stdout or args.interventions)
    loop = _intervention_loop(args, simulator) if args.interventions else None
    try:
        n = write_events(simulator.events() if loop is None else loop.events(), events_out)
        if loop is not None:
            loop.runner.finish()
        if truth_out is not None:
            write_truth(simulator, truth_out)
    finally:
        for out in (events_out, truth_out):
            if out is not None and out is not sys.stdout:
                out.close()
    where = "stdout" if to_stdout else args.output
    print(f"wrote {n:,} events of {sessions:,} visitors to {where}", file=sys.stderr)
    if truth_out is not None:
        print(f"ground truth in {truth_path(args.output)}", file=sys.stderr)
    else:
        print("ground truth not written (events went to stdout; use -o FILE)", file=sys.stderr)
    if loop is not None:
        truth = loop.truth
        effect = truth.true_effect
        print(
            f"interventions: {len(truth.alerted):,} alerted sessions, help shown to "
            f"{len(truth.shown):,} treated, {len(truth.rescued):,} of them bought because of it: "
            "true effect "
            + ("n/a (no treated session alerted)" if effect is None else f"{effect:+.3f}")
            + " (disengage evaluate measures it from the holdout)",
            file=sys.stderr,
        )
    return 0


def _intervention_loop(args: argparse.Namespace, simulator: Simulator) -> InterventionLoop:
    """The closed loop around ``simulator``: a learning detector with the
    settings' config (holdout included) and the default visitor responses."""
    from detectors.detector import Detector
    from detectors.offline.runner import OfflineRunner
    from detectors.simulation.interventions import InterventionEffect
    from stream.commands.arguments import detector_config

    runner = OfflineRunner(Detector(detector_config(args)))
    return InterventionLoop(simulator, runner, InterventionEffect())


def _to_kafka(args: argparse.Namespace) -> int:
    import asyncio

    from aiokafka.errors import KafkaError

    from stream.commands.live import produce_simulation

    settings = load_settings()
    quiet_kafka_client_logs()
    try:
        asyncio.run(
            produce_simulation(
                settings,
                rate=args.rate if args.rate is not None else DEFAULT_KAFKA_RATE,
                sessions=args.sessions,  # None: endless
                duration_s=args.duration,
                seed=args.seed,
                incident=not args.no_incident,
            )
        )
    except (KafkaError, OSError) as exc:
        raise kafka_failure(settings, exc) from None
    return 0
