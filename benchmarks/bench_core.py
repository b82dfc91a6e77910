"""Benchmark of the pure core: speed and detection quality, with baselines.

Prints (and with ``--json`` emits) figures measured in one run:

Speed (one process, one core):
* simulator events/s;
* replay events/s (parse + reorder + detect) and the ratio to a raw
  ``json.loads`` loop over the same lines (the floor any Python consumer
  pays), plus p50/p99 per-event detector latency;

Quality, prequential on ``--sessions`` simulated sessions with a fixed seed:
* trust-score prefix ROC-AUC at 25/50/75%, next to a "clicks and time on
  page" baseline (the score teams use when they count engagement) computed
  on the same prefixes;
* alerts per 1000 sessions, alert precision, median lead time;
* injected-friction recall and delay, hotspot-incident detection;
* rage-click false alarms on harmless look-alikes (steppers, date pickers,
  carousels, text selection) for our rule vs the naive published rule.

Targets from the project's issue are printed next to each figure. The only
assertion is a generous floor on replay speed (``--floor``).

    python benchmarks/bench_core.py                 # 10,000 sessions, seed 7
    python benchmarks/bench_core.py --sessions 2000 --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from detectors.clock import StreamClock
from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import Event, EventParser
from detectors.offline.evaluation import MIN_PREFIX_EVENTS, PREFIXES, evaluate
from detectors.offline.runner import OfflineRunner, RunStats, parse_lines, reorder
from detectors.sample_size import roc_auc
from detectors.simulation.simulator import SimConfig, Simulator

#: Issue 9's targets on our own simulator (10,000 arrivals, seed 7).
TARGETS = {
    "prefix_auc_0.25": (">=", 0.80),
    "prefix_auc_0.5": (">=", 0.88),
    "prefix_auc_0.75": (">=", 0.95),
    "hesitation_recall": (">=", 0.6),
    "alert_precision": (">=", 0.8),
    "alerts_per_1000_sessions": ("<=", 60.0),
    "lead_time_s_median": (">=", 30.0),
    "friction_recall": (">=", 0.9),
    "replay_events_per_s": (">=", 20_000.0),
}


def simulate(sessions: int, seed: int) -> tuple[list[str], Simulator, float]:
    sim = Simulator(SimConfig(sessions=sessions, seed=seed))
    encode = json.JSONEncoder(separators=(",", ":")).encode
    started = time.perf_counter()
    lines = [encode(e) for e in sim.events()]
    return lines, sim, time.perf_counter() - started


def raw_parse_baseline(lines: list[str]) -> float:
    started = time.perf_counter()
    for line in lines:
        json.loads(line)
    return len(lines) / (time.perf_counter() - started)


def replay_speed(lines: list[str], config: DetectorConfig) -> dict[str, float]:
    parser = EventParser(config)
    runner = OfflineRunner(Detector(config))
    started = time.perf_counter()
    for event in reorder(
        parse_lines(lines, parser), config.allowed_lateness_ms, StreamClock.for_config(config)
    ):
        runner.feed(event)
    seconds = time.perf_counter() - started
    # per-event latency of the detector step on a second, instrumented pass
    runner = OfflineRunner(Detector(config))
    events = list(
        reorder(
            parse_lines(lines, parser), config.allowed_lateness_ms, StreamClock.for_config(config)
        )
    )
    samples = []
    clock = time.perf_counter_ns
    for event in events:
        t0 = clock()
        runner.feed(event)
        samples.append(clock() - t0)
    samples.sort()
    return {
        "replay_events_per_s": len(lines) / seconds,
        "detector_p50_us": samples[len(samples) // 2] / 1000.0,
        "detector_p99_us": samples[int(len(samples) * 0.99)] / 1000.0,
    }


def engagement_baseline(lines: list[str], config: DetectorConfig) -> dict[str, float | None]:
    """Prefix AUC of 'clicks + pages + minutes on site' as the score."""
    parser = EventParser(config)
    per: dict[str, list[Event]] = {}
    for event in parse_lines(lines, parser):
        per.setdefault(event.session_id, []).append(event)
    out: dict[str, float | None] = {}
    for frac in PREFIXES:
        scores, labels = [], []
        for events in per.values():
            goal = next((i for i, e in enumerate(events) if e.type == config.goal_event), -1)
            n = goal if goal >= 0 else len(events)
            if n < MIN_PREFIX_EVENTS:
                continue
            prefix = events[: max(1, math.ceil(frac * n))]
            clicks = sum(1 for e in prefix if e.type == "click")
            pages = sum(1 for e in prefix if e.type == "page_view")
            minutes = (prefix[-1].ts - prefix[0].ts) / 60_000.0
            scores.append(clicks + pages + minutes)
            labels.append(goal >= 0)
        auc = roc_auc(scores, labels)
        out[f"{frac}"] = None if auc is None else round(auc, 4)
    return out


def rage_false_alarms(lines: list[str], sim: Simulator, config: DetectorConfig) -> dict[str, int]:
    """Rage-click hits in sessions with no friction episode (so every hit is
    a false alarm), for our rule and for the naive rule without exclusions."""
    clean = {sid for sid, t in sim.truth.items() if not t.episodes}
    events = [e for e in parse_lines(lines, EventParser(config)) if e.session_id in clean]
    never = (r"(?!x)x",)  # a pattern that matches nothing: no exclusions
    counts = {"clean_sessions": len(clean)}
    for name, cfg in (
        ("ours", config),
        ("naive", config.with_overrides(rage_ignore_targets=never)),
    ):
        detector = Detector(cfg)
        states: dict[str, Any] = {}
        hits = 0
        for event in events:
            result = detector.process(states.get(event.session_id), event)
            states[event.session_id] = result.state
            hits += sum(1 for h in result.hits if h.name == "rage_click")
        counts[name] = hits
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=SimConfig.seed)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--floor",
        type=float,
        default=5_000.0,
        help="fail when replay is slower than this many events/s",
    )
    args = ap.parse_args(argv)
    config = DetectorConfig()

    lines, sim, sim_seconds = simulate(args.sessions, args.seed)
    figures: dict[str, Any] = {
        "sessions_requested": args.sessions,
        "seed": args.seed,
        "events": len(lines),
        "simulator_events_per_s": round(len(lines) / sim_seconds),
    }
    baseline = raw_parse_baseline(lines)
    speed = replay_speed(lines, config)
    figures["raw_json_loads_events_per_s"] = round(baseline)
    figures["replay_events_per_s"] = round(speed["replay_events_per_s"])
    figures["replay_ratio_to_raw_json"] = round(speed["replay_events_per_s"] / baseline, 3)
    figures["detector_p50_us"] = round(speed["detector_p50_us"], 1)
    figures["detector_p99_us"] = round(speed["detector_p99_us"], 1)

    truth = sim.ground_truth()
    stats = RunStats()
    parser = EventParser(config)
    result = evaluate(
        reorder(
            parse_lines(lines, parser, stats),
            config.allowed_lateness_ms,
            StreamClock.for_config(config),
        ),
        config,
        truth=truth,
        stats=stats,
    )
    quality = result.summary()
    figures["quality"] = quality
    figures["engagement_baseline_prefix_auc"] = engagement_baseline(lines, config)
    figures["rage_click_false_alarms"] = rage_false_alarms(lines, sim, config)

    flat = {
        **{f"prefix_auc_{p}": quality["prefix_auc"][f"{p}"] for p in PREFIXES},
        "hesitation_recall": quality["truth"]["hesitation_recall"],
        "alert_precision": quality["alert_precision"],
        "alerts_per_1000_sessions": quality["alerts_per_1000_sessions"],
        "lead_time_s_median": quality["lead_time_s_median"],
        "friction_recall": quality["truth"]["friction_recall"],
        "replay_events_per_s": figures["replay_events_per_s"],
    }
    verdicts = {}
    for key, (op, target) in TARGETS.items():
        value = flat[key]
        ok = value is not None and (value >= target if op == ">=" else value <= target)
        verdicts[key] = {"value": value, "target": f"{op} {target:g}", "met": ok}
    figures["targets"] = verdicts

    if args.json:
        print(json.dumps(figures, indent=1, sort_keys=True))
    else:
        _print(figures)
    if figures["replay_events_per_s"] < args.floor:
        print(
            f"FAIL: replay {figures['replay_events_per_s']} events/s < floor {args.floor:g}",
            file=sys.stderr,
        )
        return 1
    return 0


def _print(f: dict[str, Any]) -> None:
    q = f["quality"]
    base = f["engagement_baseline_prefix_auc"]
    rage = f["rage_click_false_alarms"]
    print(
        f"disengage core benchmark: {q['sessions']} sessions ({f['sessions_requested']} "
        f"arrivals, seed {f['seed']}), {f['events']:,} events"
    )
    print("\nspeed (one core)")
    print(f"  simulator             {f['simulator_events_per_s']:>10,} events/s")
    print(f"  raw json.loads loop   {f['raw_json_loads_events_per_s']:>10,} events/s  (baseline)")
    print(
        f"  replay (parse+detect) {f['replay_events_per_s']:>10,} events/s  "
        f"= {f['replay_ratio_to_raw_json']:.2f} x baseline"
    )
    print(f"  detector step         p50 {f['detector_p50_us']} us   p99 {f['detector_p99_us']} us")
    print("\nquality (prequential; each session scored live, learned at close)")
    print(
        "  prefix AUC            "
        + "   ".join(
            f"{k}: {q['prefix_auc'][k]} (engagement baseline {base[k]})" for k in map(str, PREFIXES)
        )
    )
    print(
        f"  trust model           rolling AUC {q['trust_model']['rolling_auc']}, "
        f"log-loss {q['trust_model']['rolling_log_loss']}"
    )
    print(f"  alerts/1000 sessions  {q['alerts_per_1000_sessions']}   by kind {q['by_kind']}")
    print(f"  alert precision       {q['alert_precision']}")
    lead_s, lead_n = q["lead_time_s_median"], q["lead_time_events_median"]
    print(f"  lead time (median)    {lead_s} s, {lead_n} events")
    t = q["truth"]
    print(
        f"  friction recall       {t['friction_recall']} of {t['friction_episodes']} "
        f"(median delay {t['friction_delay_s_median']} s)"
    )
    print(f"  hesitation recall     {t['hesitation_recall']} of {t['hesitation_episodes']}")
    for inc in t["incidents"]:
        late = f" (late by {inc['late_by_s']} s)" if inc["late"] else ""
        print(
            f"  hotspot incident      {inc['key']} detected={inc['detected']} "
            f"delay={inc['delay_s']} s{late}"
        )
    print(
        f"  false hotspots        {t['hotspot_alerts_outside_incidents']} outside incidents, "
        f"{t['hotspot_alerts_outside_incidents_steady_traffic']} of them during steady traffic"
    )
    print(
        f"  rage-click false alarms on {rage['clean_sessions']} friction-free sessions: "
        f"ours {rage['ours']}, naive published rule {rage['naive']}"
    )
    print("\ntargets")
    for key, v in f["targets"].items():
        print(f"  {'met ' if v['met'] else 'MISS'}  {key:<26} {v['value']}  (target {v['target']})")


if __name__ == "__main__":
    sys.exit(main())
