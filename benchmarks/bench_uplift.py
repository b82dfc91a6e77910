"""Uplift recovered from the holdout, on simulated interventions.

    python benchmarks/bench_uplift.py                  # 20,000 visitors, the default 10% holdout
    python benchmarks/bench_uplift.py --sessions 40000 --holdout 0.2

Two closed-loop runs of the simulator and the learning detector
(:mod:`detectors.simulation.interventions`), with the default per-persona
responses to help and then with none:

* the true effect: the share of alerted treated sessions that help turned
  into buyers (known by construction);
* the measured uplift: treated minus control conversion of alerted
  sessions, with Newcombe's 95% interval, overall and by alert kind;
* whether the interval contains the true effect (and 0 for the run without
  an effect), and events/s of the loop.

Exits 1 when an interval misses its truth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.offline.runner import OfflineRunner
from detectors.simulation.interventions import InterventionEffect, InterventionLoop
from detectors.simulation.simulator import SimConfig, Simulator


def run(sessions: int, seed: int, holdout: float, effect: InterventionEffect) -> dict[str, Any]:
    config = DetectorConfig(holdout_share=holdout)
    detector = Detector(config)
    runner = OfflineRunner(detector)
    loop = InterventionLoop(Simulator(SimConfig(sessions=sessions, seed=seed)), runner, effect)
    started = time.perf_counter()
    events = sum(1 for _ in loop.events())
    runner.finish()
    seconds = time.perf_counter() - started
    tracker = detector.models.uplift
    truth = loop.truth.true_effect
    out: dict[str, Any] = {
        "events": events,
        "events_per_s": round(events / seconds),
        "alerted_sessions": len(loop.truth.alerted),
        "rescued": len(loop.truth.rescued),
        "true_effect": None if truth is None else round(truth, 4),
        "slices": {},
    }
    for dimension, value in (("all", ""), ("kind", "trust_loss"), ("kind", "hesitation")):
        u = tracker.uplift(dimension, value)
        out["slices"][value or "all"] = {
            "treated": [u.treated.converted, u.treated.sessions],
            "control": [u.control.converted, u.control.sessions],
            "difference": None if u.difference is None else round(u.difference, 4),
            "interval": None if u.lower is None else [round(u.lower, 4), round(u.upper or 0, 4)],
        }
    overall = out["slices"]["all"]
    target = 0.0 if truth is None else truth
    out["interval_contains_truth"] = (
        None
        if overall["interval"] is None
        else overall["interval"][0] <= target <= overall["interval"][1]
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--holdout", type=float, default=DetectorConfig().holdout_share)
    args = ap.parse_args()
    figures = {
        "with_effect": run(args.sessions, args.seed, args.holdout, InterventionEffect()),
        "without_effect": run(args.sessions, args.seed, args.holdout, InterventionEffect.none()),
    }
    for name, f in figures.items():
        overall = f["slices"]["all"]
        print(
            f"{name}: true effect {f['true_effect']}, measured {overall['difference']} "
            f"{overall['interval']} (treated {overall['treated']}, control {overall['control']}), "
            f"contains the truth: {f['interval_contains_truth']}; {f['events_per_s']} events/s"
        )
    print(json.dumps(figures, indent=1))
    ok = all(f["interval_contains_truth"] is not False for f in figures.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
