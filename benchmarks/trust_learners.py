"""Which learner should the trust model use? Prefix AUC of candidates, per dataset (issue 9).

The trust score is online: scored while a session runs, learned only when
it closes. Candidate learners are compared under exactly that protocol, the
one of ``disengage evaluate``, on every dataset of ``make bench-quality``
but OTTO (20 sessions): our simulator, the independent generator's shop,
travel and b2b sites, and the real DIGINETICA sample.

Protocol, per dataset:

1. ``evaluate`` runs once (:func:`detectors.offline.evaluation.evaluate`).
   It fixes each session's *n*, its applied events before the goal (all of
   them for a non-converter), and the scoring points of
   :meth:`~detectors.offline.evaluation.Evaluation.prefix_points`: the
   ``k = max(1, ceil(p * n))``-th applied event for p = 25, 50, 75%, in
   sessions with n >= 3. It also gives the references: the detector's own
   served trust score, the best activity metric (events, page views, clicks
   or seconds so far) and, with scikit-learn, the offline reference
   (``stream/offline_reference.py``: out-of-fold gradient boosting on plain
   prefix counts, a hindsight ceiling, not a competitor).
2. The same events run again through a fresh
   :class:`~detectors.offline.runner.OfflineRunner` (the detector is
   deterministic). At a scoring point every candidate predicts the
   session's trust features (:func:`detectors.features.trust_vector`) as it
   stands at that moment; knowing n only chooses *where* to score. Up to
   :data:`SNAPSHOTS` evenly spaced feature snapshots of the session's first
   n events are kept, and when the session closes every candidate learns
   them with the outcome (the goal reached or not). So each prediction is
   of a session the candidate has not learned, with the labels only of the
   sessions closed before it: cold start included.

Feature sets: ``v1`` is the trust vector before issue 9 (every feature
before ``events``: page and stage counts, stage minutes, journey steps,
friction signal counts, errors); ``v2`` is all of
:data:`~detectors.features.TRUST_FEATURES` (adds plain activity, dwell,
recency and the last stages).

Candidates: the scaled logistic regression of
:func:`detectors.trust.make_trust_model` on v1 and v2; the production forest
(:func:`detectors.compiled_forest.make_forest`); River's ARF with 10 trees
and otherwise default settings but majority-class leaves; a Hoeffding
adaptive tree; bagged Hoeffding trees (10); and the production
:class:`detectors.trust.TrustModel` itself (the linear/forest
champion/challenger pair, whose forest learns half as many snapshots of a
non-converter). Times are wall clock: learn µs per snapshot learned, predict µs
per prediction (River's own code; production scores with its compiled forest).

What the figures choose: the learner and feature set of
:mod:`detectors.trust` should rank at least as well as every alternative
on every dataset at every prefix, at a cost the replay budget (20,000
events/s) allows. Nothing is asserted but a generous floor: the production
model's AUC at 75% on our simulator above ``--floor``.

    python benchmarks/trust_learners.py                  # make bench-learners
    python benchmarks/trust_learners.py --sessions 1000 --only simulator --json
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_quality import (
    LOADERS,
    METRIC_ABBREV,
    Unavailable,
    dataset_arguments,
    parse_objects,
)
from river import ensemble, forest, tree

from detectors.clock import StreamClock
from detectors.compiled_forest import make_forest
from detectors.config import DetectorConfig
from detectors.detector import Detector, StepResult
from detectors.events import Event, EventParser
from detectors.features import TRUST_FEATURES, trust_vector
from detectors.offline.evaluation import PREFIXES, Evaluation, evaluate
from detectors.offline.prefix_features import MIN_PREFIX_EVENTS, best_activity, prefix_lengths
from detectors.offline.runner import OfflineRunner, RunStats, reorder
from detectors.sample_size import roc_auc
from detectors.session import SessionState
from detectors.trust import TrustModel, make_trust_model
from stream.offline_reference import SKIPPED, offline_auc

DATASETS = ("simulator", "shop", "travel", "b2b", "diginetica")
#: Feature snapshots a session contributes to learning, evenly spaced (as
#: the detector keeps a bounded set per session).
SNAPSHOTS = 8
#: Seed of every randomised learner (the production TrustModel's default).
SEED = 42
#: The trust vector before issue 9: the 29 features up to ``errors``.
V1 = TRUST_FEATURES[: TRUST_FEATURES.index("events")]
FEATURE_SETS: dict[str, tuple[str, ...]] = {"v1": V1, "v2": TRUST_FEATURES}
PRODUCTION = "production (champion/challenger)"


@dataclass
class Candidate:
    """A learner under test: ``predict(x) -> P(goal)`` and
    ``learn(snapshots, converted)``, on the features of ``features``, with
    its time spent (seconds) and calls counted; ``points`` holds its
    ``(score, session id)`` per prefix, ``model`` the learner itself."""

    name: str
    features: str
    predict: Callable[[dict[str, float]], float]
    learn: Callable[[list[dict[str, float]], bool], object]
    model: Any = None
    predict_s: float = 0.0
    predictions: int = 0
    learn_s: float = 0.0
    learned: int = 0
    points: dict[str, list[tuple[float, str]]] = field(
        default_factory=lambda: {f"{p}": [] for p in PREFIXES}
    )


def river_candidate(name: str, features: str, model: Any) -> Candidate:
    def predict(x: dict[str, float]) -> float:
        return float(model.predict_proba_one(x).get(True, 0.0))

    def learn(xs: list[dict[str, float]], converted: bool) -> None:
        for x in xs:
            model.learn_one(x, converted)

    return Candidate(name, features, predict, learn, model)


def make_candidates() -> list[Candidate]:
    """Fresh candidates, in table order."""
    production = TrustModel(seed=SEED)
    return [
        river_candidate("logistic (make_trust_model)", "v1", make_trust_model()),
        river_candidate("logistic (make_trust_model)", "v2", make_trust_model()),
        river_candidate("ARF 6 trees (make_forest)", "v2", make_forest(SEED)),
        river_candidate(
            "ARF 10 trees, River defaults",
            "v2",
            forest.ARFClassifier(n_models=10, leaf_prediction="mc", seed=SEED),
        ),
        river_candidate(
            "Hoeffding adaptive tree", "v2", tree.HoeffdingAdaptiveTreeClassifier(seed=SEED)
        ),
        river_candidate(
            "bagged Hoeffding trees (10)",
            "v2",
            ensemble.BaggingClassifier(tree.HoeffdingTreeClassifier(), n_models=10, seed=SEED),
        ),
        Candidate(PRODUCTION, "v2", production.predict, production.learn_session, production),
    ]


def snapshot_positions(n: int, keep: int = SNAPSHOTS) -> frozenset[int]:
    """1-based positions of at most ``keep`` evenly spaced snapshots among
    ``n`` events, the first and last included.

    >>> sorted(snapshot_positions(3)), sorted(snapshot_positions(29))
    ([1, 2, 3], [1, 5, 9, 13, 17, 21, 25, 29])
    """
    if n <= keep:
        return frozenset(range(1, n + 1))
    return frozenset(round(1 + i * (n - 1) / (keep - 1)) for i in range(keep))


class PrequentialHarness:
    """The runner hooks that score candidates at the scoring points and
    make them learn each closed session's snapshots.

    ``lengths`` is each session's n from the ``evaluate`` pass.
    """

    def __init__(self, candidates: list[Candidate], lengths: dict[str, int], goal: str) -> None:
        self.candidates = candidates
        self.goal = goal
        self.scoring: dict[str, dict[int, list[str]]] = {}
        self.snapshot_at: dict[str, frozenset[int]] = {}
        for sid, n in lengths.items():
            self.snapshot_at[sid] = snapshot_positions(n)
            if n >= MIN_PREFIX_EVENTS:
                at: dict[int, list[str]] = {}
                for p, k in zip(PREFIXES, prefix_lengths(n), strict=True):
                    at.setdefault(k, []).append(f"{p}")
                self.scoring[sid] = at
        self.seen: dict[str, int] = {}
        self.snapshots: dict[str, list[dict[str, dict[str, float]]]] = {}
        self.past_goal: set[str] = set()

    def on_step(self, event: Event, result: StepResult) -> None:
        if result.status != "applied":
            return
        sid = event.session_id
        if event.type == self.goal:
            self.past_goal.add(sid)
        if sid in self.past_goal:
            return
        k = self.seen[sid] = self.seen.get(sid, 0) + 1
        prefixes = self.scoring.get(sid, {}).get(k)
        snapshot = k in self.snapshot_at.get(sid, ())
        if not prefixes and not snapshot:
            return
        vector = trust_vector(result.state, event.ts)
        # v1 is a prefix of the vector: zip stops at its end
        views = {
            name: dict(zip(names, vector, strict=False)) for name, names in FEATURE_SETS.items()
        }
        for prefix in prefixes or ():
            for c in self.candidates:
                x = views[c.features]
                started = time.perf_counter()
                score = c.predict(x)
                c.predict_s += time.perf_counter() - started
                c.predictions += 1
                c.points[prefix].append((score, sid))
        if snapshot:
            self.snapshots.setdefault(sid, []).append(views)

    def on_close(self, state: SessionState) -> None:
        views = self.snapshots.pop(state.sid, [])
        converted = state.outcome == "converted"
        for c in self.candidates:
            xs = [v[c.features] for v in views]
            started = time.perf_counter()
            c.learn(xs, converted)
            c.learn_s += time.perf_counter() - started
            c.learned += len(xs)


def session_lengths(result: Evaluation) -> dict[str, int]:
    """n per session, as :meth:`Evaluation.prefix_points` counts it."""
    return {
        sid: track.goal_index if track.goal_index >= 0 else len(track.scores)
        for sid, track in result.tracks.items()
    }


def _aucs(points: dict[str, list[tuple[float, str]]], result: Evaluation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, pts in points.items():
        auc = roc_auc([s for s, _ in pts], [result.converted(sid) for _, sid in pts])
        out[key] = None if auc is None else round(auc, 4)
    return out


def _micros(seconds: float, calls: int) -> float | None:
    return round(seconds / calls * 1e6, 1) if calls else None


def run_dataset(name: str, sessions: int, data: Path, offline: bool) -> dict[str, Any]:
    """The figures of one dataset (``skipped`` with the reason when unavailable)."""
    started = time.perf_counter()
    try:
        loaded = LOADERS[name](sessions, data)
    except Unavailable as exc:
        return {"skipped": str(exc)}
    config = DetectorConfig(goal_event=loaded.goal)
    stats = RunStats()
    parsed = parse_objects(loaded.events, EventParser(config), stats)
    events = list(reorder(parsed, config.allowed_lateness_ms, StreamClock.for_config(config)))
    result = evaluate(events, config, stats=stats)
    lengths = session_lengths(result)
    candidates = make_candidates()
    harness = PrequentialHarness(candidates, lengths, loaded.goal)
    runner = OfflineRunner(Detector(config), on_step=harness.on_step, on_close=harness.on_close)
    for event in events:
        runner.feed(event)
    runner.finish()
    # the second pass must see the sessions the first one did
    mismatched = sum(1 for sid, n in lengths.items() if harness.seen.get(sid, 0) != n)
    detector_auc, reason = result.prefix_auc()
    labels = [label for _, label in result.prefix_points()["0.5"]]
    reference, reference_reason = offline_auc(result) if offline else (None, SKIPPED)
    production: TrustModel = candidates[-1].model
    rows = [
        {
            "candidate": c.name,
            "features": c.features,
            "auc": _aucs(c.points, result),
            "learn_us": _micros(c.learn_s, c.learned),
            "predict_us": _micros(c.predict_s, c.predictions),
            "snapshots_learned": c.learned,
        }
        for c in candidates
    ]
    return {
        "describe": loaded.describe,
        "goal": loaded.goal,
        "sessions": len(lengths),
        "converters": sum(1 for sid in lengths if result.converted(sid)),
        "prefix_sessions": len(labels),
        "prefix_converters": sum(labels),
        "candidates": rows,
        "detector_auc": detector_auc,
        "auc_unavailable": reason,
        "best_activity_auc": best_activity(result.activity_auc()),
        "offline_auc": reference,
        "offline_unavailable": reference_reason,
        "production_serving": production.serving,
        "production_learner_auc": production.learner_auc,
        "sessions_mismatched": mismatched,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _cell(value: float | None, width: int, digits: int = 3) -> str:
    return f"{'n/a' if value is None else f'{value:.{digits}f}':>{width}}"


def _best(best: dict[str, Any] | None) -> str:
    return "n/a" if best is None else f"{best['auc']:.3f} {METRIC_ABBREV[best['metric']]}"


def print_dataset(name: str, row: dict[str, Any]) -> None:
    keys = [f"{p}" for p in PREFIXES]
    print(
        f"\n{name}: {row['describe']}, goal {row['goal']}; {row['sessions']} sessions "
        f"({row['converters']} converters), {row['prefix_sessions']} scored "
        f"({row['prefix_converters']} converters); {row['seconds']} s"
    )
    header = "".join(f"{f'AUC {float(k):.0%}':>10}" for k in keys)
    print(f"{'candidate':<34}{'feat':<6}{header}{'learn µs':>10}{'predict µs':>12}")
    for c in row["candidates"]:
        aucs = "".join(_cell(c["auc"][k], 10) for k in keys)
        learn, predict = _cell(c["learn_us"], 10, 0), _cell(c["predict_us"], 12, 0)
        print(f"{c['candidate']:<34}{c['features']:<6}{aucs}{learn}{predict}")
    detector = "".join(_cell(row["detector_auc"][k], 10) for k in keys)
    print(f"{'detector as run by evaluate':<34}{'v2':<6}{detector}")
    cells = "".join(f"{_best(row['best_activity_auc'].get(k)):>10}" for k in keys)
    print(f"{'best activity metric':<34}{'-':<6}{cells}")
    offline = row["offline_auc"] or {}
    cells = "".join(_cell(offline.get(k), 10) for k in keys)
    print(f"{'offline reference (5-fold HGB)':<34}{'-':<6}{cells}")
    notes = []
    if row["auc_unavailable"]:
        notes.append(f"AUCs n/a: {row['auc_unavailable']}")
    if row["offline_unavailable"]:
        notes.append(f"offline reference n/a: {row['offline_unavailable']}")
    if row["sessions_mismatched"]:
        notes.append(f"{row['sessions_mismatched']} sessions differed between the two passes")
    learner_auc = ", ".join(f"{k} {v:.3f}" for k, v in row["production_learner_auc"].items())
    notes.append(
        f"production serves {row['production_serving']} at the end "
        f"(its own progressive snapshot AUC: {learner_auc})"
    )
    for note in notes:
        print(f"  {note}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = dataset_arguments(
        __doc__.split("\n\n")[0],
        sessions=3000,
        floor_help="fail unless the production model's AUC at 75%% on the simulator is above this",
    )
    args = ap.parse_args(argv)
    rows: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in args.only or DATASETS:
        row = run_dataset(name, args.sessions, args.data, offline=not args.no_offline)
        if "skipped" in row:
            skipped[name] = row["skipped"]
            print(f"{name}: skipped, {row['skipped']}", file=sys.stderr)
            continue
        rows[name] = row
        print(f"{name}: {row['sessions']} sessions in {row['seconds']} s", file=sys.stderr)
        if not args.json:
            print_dataset(name, row)
            sys.stdout.flush()  # a table per dataset as it completes
    if args.json:
        report = {"sessions_requested": args.sessions, "datasets": rows, "skipped": skipped}
        print(json.dumps(report, indent=1, sort_keys=True))
    else:
        for name, reason in skipped.items():
            print(f"\n{name}: skipped, {reason}")
    return check_floor(rows.get("simulator"), args.floor)


def check_floor(row: dict[str, Any] | None, floor: float) -> int:
    """1 when the production model's simulator AUC at 75% is not above
    ``floor``; 0 otherwise, or when it is n/a (said, not failed)."""
    if row is None:
        return 0
    auc = next(c for c in row["candidates"] if c["candidate"] == PRODUCTION)["auc"]["0.75"]
    if auc is None:
        reason = row["auc_unavailable"]
        print(f"floor not checked: the simulator's AUCs are n/a ({reason})", file=sys.stderr)
        return 0
    if auc <= floor:
        failure = f"FAIL: production AUC at 75% on the simulator is {auc}, not above {floor}"
        print(failure, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
