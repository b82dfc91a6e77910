"""What splitting the traffic over input partitions costs hotspot detection.

Hotspot monitors stay per input partition (README, "Models: one learner for
the deployment"): an incident must be raised on the very page leave that
tips it, which a trainer downstream of session closes cannot do. The price
is that each partition's monitor sees 1/N of the visits. This benchmark
measures that price instead of arguing it: the same simulated traffic, with
a checkout incident, is split by session id over N partitions (N = 1, 2, 4,
8), each with its own detector, as N worker partitions would be; the first
``friction_hotspot`` alert of any partition is the one an SRE sees.

Printed per N: incidents detected (of the seeds), the median delay from the
incident's start to the first alert (s), and false hotspot alerts (outside
any incident and its late window) per seed. Only our simulator injects
incidents (the independent generator has none), so this measures the traffic
split, not detection quality on foreign data.

    python benchmarks/bench_hotspots_partitions.py
    python benchmarks/bench_hotspots_partitions.py --sessions 10000 --seeds 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.alerts import Alert  # noqa: E402
from detectors.config import DetectorConfig  # noqa: E402
from detectors.detector import Detector, observe_visit  # noqa: E402
from detectors.events import EventParser  # noqa: E402
from detectors.hotspots import HotspotMonitor  # noqa: E402
from detectors.journey import JourneyTracker  # noqa: E402
from detectors.offline.runner import OfflineRunner  # noqa: E402
from detectors.offline.truth_comparison import false_hotspots, incident_result  # noqa: E402
from detectors.simulation.simulator import SimConfig, Simulator  # noqa: E402

#: A hotspot alert this long after an incident ended still counts as its (late) detection.
LATE_MS = 1_800_000


def partition_of(session_id: str, partitions: int) -> int:
    """A stable split by session id (Kafka's keyed partitioner also hashes the key)."""
    return zlib.crc32(session_id.encode()) % partitions


def run(sessions: int, seed: int, partitions: int, shared: bool = False) -> dict[str, Any]:
    """``shared``: the partitions' page visits go to one monitor (the shared
    hotspot agent), in the order they happen, instead of each partition's own."""
    config = DetectorConfig()
    parser = EventParser(config)
    sim = Simulator(SimConfig(sessions=sessions, seed=seed, incident=True))
    detectors = [Detector(config, share_hotspots=shared) for _ in range(partitions)]
    runners = [OfflineRunner(d) for d in detectors]
    monitor, journey = HotspotMonitor(config), JourneyTracker(config)
    hotspots: list[Alert] = []

    def collect(alerts: list[Alert], detector: Detector) -> None:
        hotspots.extend(a for a in alerts if a.kind == "friction_hotspot")
        for visit in detector.visits:
            alert = observe_visit(config, journey, monitor, visit, "shared")
            if alert is not None:
                hotspots.append(alert)
        detector.visits.clear()

    for raw in sim.events():
        event = parser.parse(raw)
        p = partition_of(event.session_id, partitions)
        collect(runners[p].feed(event), detectors[p])
    for runner, detector in zip(runners, detectors, strict=True):
        collect(runner.finish(), detector)
    truth = sim.ground_truth()
    results = [incident_result(i, hotspots, LATE_MS) for i in truth.incidents]
    return {
        "detected": sum(r.detected for r in results),
        "incidents": len(results),
        "delays_s": [r.delay_s for r in results if r.delay_s is not None],
        "false": len(false_hotspots(truth, hotspots, LATE_MS)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=4000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument(
        "--shared",
        action="store_true",
        help="also run each split with one shared monitor fed by every partition's visits",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    started = time.perf_counter()
    table: dict[str, dict[str, Any]] = {}
    for n, shared in [(n, False) for n in args.partitions] + [
        (n, True) for n in args.partitions if n > 1 and args.shared
    ]:
        runs = [run(args.sessions, seed, n, shared) for seed in args.seeds]
        delays = [d for r in runs for d in r["delays_s"]]
        table[f"{n} shared" if shared else str(n)] = {
            "detected": sum(r["detected"] for r in runs),
            "incidents": sum(r["incidents"] for r in runs),
            "delay_s_median": statistics.median(delays) if delays else None,
            "delay_s": delays,
            "false_per_seed": round(sum(r["false"] for r in runs) / len(runs), 2),
        }
        print(f"  {n} partition(s){' shared' if shared else ''} done", file=sys.stderr)
    if args.json:
        print(json.dumps({"sessions": args.sessions, "seeds": args.seeds, "by_partitions": table}))
        return 0
    print(
        f"hotspot incidents, {args.sessions} simulated sessions per seed, seeds {args.seeds} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    print(f"{'partitions':>10} {'detected':>9} {'median delay':>13} {'false/seed':>11}  delays (s)")
    for n, row in table.items():
        median = "-" if row["delay_s_median"] is None else f"{row['delay_s_median']:.0f} s"
        print(
            f"{n:>10} {row['detected']:>4} of {row['incidents']:<2} {median:>13} "
            f"{row['false_per_seed']:>11}  {row['delay_s']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
