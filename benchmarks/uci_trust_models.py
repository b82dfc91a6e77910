"""Which online learner family should the trust model use? Measured on real purchase outcomes.

The disengage trust model is an online River classifier that estimates
P(conversion | session so far) and learns from each session's outcome as it arrives. This
benchmark compares candidate learner families on the UCI "Online Shoppers Purchasing
Intention" data set (Sakar et al. 2019; 12,330 sessions, 1,908 ending in a purchase, label
``Revenue``), the only real labelled session data the project has.

What is measured
----------------
* **Progressive validation** (a.k.a. prequential / test-then-train): for each row the learner
  first predicts (``predict_proba_one``), then learns the true label (``learn_one``). This is
  exactly how the trust model lives in production, so the collected predictions are honest
  out-of-sample predictions and include the cold start.
* From those predictions: exact **ROC-AUC** (``sklearn.metrics.roc_auc_score``; River's
  ``metrics.ROCAUC`` is an approximation on a threshold grid, so it is not used), the AUC over
  the **second half** of the stream (the learner after warm-up), and **log-loss** (natural
  log, probabilities clipped to [1e-15, 1 - 1e-15]; a learner with no opinion yet, i.e. an
  empty ``predict_proba_one``, is scored as 0.5).
* **µs/row**: wall-clock time of one ``predict_proba_one`` plus one ``learn_one`` (building the
  feature dict is excluded). This is the only non-deterministic figure.
* Two **row orders**: the file's order and a seeded shuffle. The file is roughly sorted by
  month (Feb/Mar, then May, then Jun-Oct, then Nov/Dec interleaved) and the purchase rate drifts
  from about 8% in the first thousand rows to about 21% in the last ones, so file order is a
  drift scenario while the shuffled order is the stationary one.
* An **offline reference**: scikit-learn ``HistGradientBoostingClassifier`` with out-of-fold
  predictions from a stratified, shuffled 5-fold split on the same feature matrix. It sees 80%
  of the data in batch and many passes, so it is a ceiling for what the features carry, not a
  fair competitor; the table reports each learner's AUC as a fraction of it.

Column sets
-----------
* ``stream``: what an interaction event stream carries - the page counts and time spent per
  page kind (Administrative, Informational, ProductRelated and their ``_Duration``), plus two
  derived totals, ``Total_Pages`` and ``Total_Duration``.
* ``all``: the stream columns plus BounceRates, ExitRates, PageValues, SpecialDay, Weekend (0/1)
  and one-hot indicators for VisitorType, Month, OperatingSystems, Browser, Region and
  TrafficType. The integer codes of the last four are identifiers, not quantities, so they are
  one-hot encoded rather than used as numbers. The one-hot vocabulary is the sorted set of
  values present in the file (schema only, no label information), and every row carries every
  indicator (dense 0/1): River's ``StandardScaler`` only updates statistics for keys present in
  a dict, so sparse one-hot keys would have zero variance and be scaled away to 0.

Caveat: UCI rows are end-of-session aggregates, so this measures how well each learner family
ranks whole sessions from their aggregates; in production the same model scores prefixes of
live sessions. The figures choose a learner family, they do not predict production accuracy.

The recommendation is the learner with the best progressive AUC on the ``stream`` columns in
shuffled order among those faster than 200 µs/row; learners within 0.005 AUC of the best are
treated as tied and the fastest of them wins. AUC only measures ranking, so the script also
warns when the pick's log-loss is worse than the prior-only reference (the running purchase
rate, no features) and names the best-calibrated learner under the same constraints.

If ``detectors.trust.make_trust_model`` exists, the production pipeline is added as one more
candidate ("disengage trust model (production)") on the stream columns, plus a second row that
feeds it the same dict behind ``log1p`` (the production feature extractor log-compresses counts
and durations itself, so the pipeline may not).

Usage::

    .venv/bin/python benchmarks/uci_trust_models.py            # full run (a few minutes)
    .venv/bin/python benchmarks/uci_trust_models.py --quick    # first 3000 rows, no ARF
    .venv/bin/python benchmarks/uci_trust_models.py --json     # machine-readable results
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from river import (
    compose,
    dummy,
    forest,
    linear_model,
    naive_bayes,
    optim,
    preprocessing,
    tree,
)
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = (
    REPO_ROOT.parent / "shared" / "data" / "uci_online_shoppers" / "online_shoppers_intention.csv"
)

SEED = 42
QUICK_ROWS = 3000
FAST_ENOUGH_US = 200.0
AUC_TIE = 0.005
EPS = 1e-15
PRODUCTION_LABEL = "disengage trust model (production)"

COUNT_COLUMNS = ("Administrative", "Informational", "ProductRelated")
DURATION_COLUMNS = tuple(f"{c}_Duration" for c in COUNT_COLUMNS)
STREAM_COLUMNS = (
    "Administrative",
    "Administrative_Duration",
    "Informational",
    "Informational_Duration",
    "ProductRelated",
    "ProductRelated_Duration",
)
EXTRA_NUMERIC_COLUMNS = ("BounceRates", "ExitRates", "PageValues", "SpecialDay")
CATEGORICAL_COLUMNS = (
    "VisitorType",
    "Month",
    "OperatingSystems",
    "Browser",
    "Region",
    "TrafficType",
)
REQUIRED_COLUMNS = (
    *STREAM_COLUMNS,
    *EXTRA_NUMERIC_COLUMNS,
    *CATEGORICAL_COLUMNS,
    "Weekend",
    "Revenue",
)
COLUMN_SETS = ("stream", "all")
ORDERS = ("file", "shuffled")

Features = dict[str, float]


class OnlineClassifier(Protocol):
    """What the benchmark needs from a River classifier or pipeline."""

    def predict_proba_one(self, x: dict[Any, Any]) -> dict[Any, float]: ...

    def learn_one(self, x: dict[Any, Any], y: Any) -> Any: ...


ModelFactory = Callable[[], OnlineClassifier]
GAUSSIAN_NB: Callable[[], naive_bayes.GaussianNB] = naive_bayes.GaussianNB


# --------------------------------------------------------------------------- data


def load_rows(path: Path) -> list[dict[str, str]]:
    """Read the CSV (CRLF line ends, comma separated) into a list of row dicts."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        return list(reader)


def category_vocabulary(rows: Sequence[dict[str, str]]) -> dict[str, list[str]]:
    """Sorted set of values per categorical column (the schema; no label information)."""

    def key(v: str) -> tuple[int, float | str]:
        try:
            return (0, float(v))
        except ValueError:
            return (1, v)

    return {c: sorted({r[c] for r in rows}, key=key) for c in CATEGORICAL_COLUMNS}


def stream_features(row: dict[str, str]) -> Features:
    """Page counts and durations per page kind, plus their totals."""
    x = {c: float(row[c]) for c in STREAM_COLUMNS}
    x["Total_Pages"] = sum(x[c] for c in COUNT_COLUMNS)
    x["Total_Duration"] = sum(x[c] for c in DURATION_COLUMNS)
    return x


def all_features(row: dict[str, str], vocab: dict[str, list[str]]) -> Features:
    """Stream features, the Google Analytics metrics and dense one-hot categoricals."""
    x = stream_features(row)
    for c in EXTRA_NUMERIC_COLUMNS:
        x[c] = float(row[c])
    x["Weekend"] = 1.0 if row["Weekend"] == "TRUE" else 0.0
    for c in CATEGORICAL_COLUMNS:
        for v in vocab[c]:
            x[f"{c}={v}"] = 1.0 if row[c] == v else 0.0
    return x


# --------------------------------------------------------------------------- candidates


def signed_log1p(x: Features) -> Features:
    """log1p on every feature (sign-preserving), taming heavy-tailed counts and durations."""
    return {k: math.copysign(math.log1p(abs(v)), v) for k, v in x.items()}


def log1p_step() -> compose.FuncTransformer:
    return compose.FuncTransformer(signed_log1p)


@dataclass(frozen=True)
class Candidate:
    name: str
    factory: ModelFactory
    slow: bool = False  # skipped by --quick
    reference: bool = False  # shown, never recommended
    column_sets: tuple[str, ...] = COLUMN_SETS


def candidates(seed: int) -> list[Candidate]:
    return [
        Candidate("prior only (no features)", lambda: dummy.PriorClassifier(), reference=True),
        Candidate(
            "scale | logreg",
            lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        ),
        Candidate(
            "log1p | scale | logreg",
            lambda: (
                log1p_step() | preprocessing.StandardScaler() | linear_model.LogisticRegression()
            ),
        ),
        Candidate(
            "log1p | scale | logreg SGD(0.05)",
            lambda: (
                log1p_step()
                | preprocessing.StandardScaler()
                | linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
            ),
        ),
        Candidate(
            "log1p | scale | logreg Adam(0.01) l2=1e-4",
            lambda: (
                log1p_step()
                | preprocessing.StandardScaler()
                | linear_model.LogisticRegression(optimizer=optim.Adam(0.01), l2=1e-4)
            ),
        ),
        # The class itself is the factory (its __init__ is untyped, so no call here).
        Candidate("GaussianNB", naive_bayes.GaussianNB),
        Candidate("log1p | GaussianNB", lambda: log1p_step() | GAUSSIAN_NB()),
        Candidate("HoeffdingAdaptiveTree", lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=seed)),
        Candidate(
            "log1p | HoeffdingAdaptiveTree",
            lambda: log1p_step() | tree.HoeffdingAdaptiveTreeClassifier(seed=seed),
        ),
        Candidate(
            "ARF(n_models=10)",
            lambda: forest.ARFClassifier(seed=seed, n_models=10),
            slow=True,
        ),
    ]


def production_candidates() -> tuple[list[Candidate], str]:
    """The production pipeline from ``detectors.trust``, if that module exists yet.

    It is fed the stream feature dict as is, and once more behind ``log1p``, because the
    production feature extractor log-compresses counts and durations before the model sees them.
    """
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        from detectors.trust import make_trust_model
    except ImportError as exc:
        return [], f"not available ({exc})"

    def on_log1p() -> OnlineClassifier:
        return log1p_step() | make_trust_model()

    return (
        [
            Candidate(PRODUCTION_LABEL, make_trust_model, column_sets=("stream",)),
            Candidate(f"{PRODUCTION_LABEL}, log1p", on_log1p, column_sets=("stream",)),
        ],
        "included (detectors.trust.make_trust_model on the stream columns, raw and log1p)",
    )


# --------------------------------------------------------------------------- evaluation


@dataclass
class ProgressiveResult:
    column_set: str
    order: str
    learner: str
    auc: float
    auc_second_half: float
    log_loss: float
    us_per_row: float
    auc_over_gbm: float
    reference: bool


@dataclass
class GbmResult:
    column_set: str
    auc: float
    log_loss: float
    seconds: float


def p_true(proba: dict[Any, float]) -> float:
    """P(Revenue=True) from a River probability dict; 0.5 when the learner has no opinion."""
    total = sum(proba.values())
    if total <= 0:
        return 0.5
    return proba.get(True, 0.0) / total


def safe_auc(y: np.ndarray, p: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def progressive(
    factory: ModelFactory, xs: Sequence[Features], ys: Sequence[bool], order: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Test-then-train over ``order``; returns labels, predictions and µs per row."""
    model = factory()
    preds = np.empty(len(order))
    labels = np.empty(len(order), dtype=bool)
    elapsed = 0.0
    clock = time.perf_counter
    for k, i in enumerate(order):
        x, y = xs[i], ys[i]
        t0 = clock()
        proba = model.predict_proba_one(x)
        model.learn_one(x, y)
        elapsed += clock() - t0
        preds[k] = p_true(proba)
        labels[k] = y
    return labels, preds, elapsed / max(len(order), 1) * 1e6


def gbm_baseline(matrix: np.ndarray, ys: np.ndarray, seed: int) -> tuple[float, float]:
    """Out-of-fold AUC and log-loss of a 5-fold HistGradientBoostingClassifier."""
    model = HistGradientBoostingClassifier(random_state=seed)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    oof = cross_val_predict(model, matrix, ys, cv=folds, method="predict_proba")[:, 1]
    return safe_auc(ys, oof), float(log_loss(ys, np.clip(oof, EPS, 1 - EPS)))


def recommend(results: Sequence[ProgressiveResult]) -> dict[str, Any]:
    pool = [
        r
        for r in results
        if r.column_set == "stream"
        and r.order == "shuffled"
        and not r.reference
        and r.us_per_row < FAST_ENOUGH_US
        and not math.isnan(r.auc)
    ]
    if not pool:
        return {"learner": None, "reason": f"no learner under {FAST_ENOUGH_US:.0f} µs/row"}
    best_auc = max(r.auc for r in pool)
    tied = [r for r in pool if r.auc >= best_auc - AUC_TIE]
    pick = min(tied, key=lambda r: r.us_per_row)
    # Not part of the rule, reported beside it: the trust score is used as a probability, so
    # say when the pick is worse calibrated than knowing only the running purchase rate.
    prior = next(
        (
            r.log_loss
            for r in results
            if r.reference and r.column_set == "stream" and r.order == "shuffled"
        ),
        None,
    )
    best_ll = min(pool, key=lambda r: r.log_loss)
    return {
        "learner": pick.learner,
        "auc": pick.auc,
        "log_loss": pick.log_loss,
        "us_per_row": pick.us_per_row,
        "prior_log_loss": prior,
        "worse_calibrated_than_prior": prior is not None and pick.log_loss > prior,
        "best_log_loss_learner": best_ll.learner,
        "best_log_loss": best_ll.log_loss,
        "best_log_loss_auc": best_ll.auc,
        "best_auc": best_auc,
        "tied_within": AUC_TIE,
        "tied": [r.learner for r in sorted(tied, key=lambda r: r.us_per_row)],
        "rule": (
            f"best progressive AUC on stream columns, shuffled order, < {FAST_ENOUGH_US:.0f} "
            f"µs/row; within {AUC_TIE} AUC the faster learner wins"
        ),
    }


# --------------------------------------------------------------------------- output


def print_table(
    results: Sequence[ProgressiveResult],
    gbm: dict[str, GbmResult],
    meta: dict[str, Any],
    rec: dict[str, Any],
) -> None:
    print("UCI Online Shoppers: online trust-model candidates, progressive validation")
    print(
        f"data: {meta['data']}  rows: {meta['rows']}  purchases: {meta['positives']} "
        f"({meta['positive_rate']:.1%})  seed: {meta['seed']}"
        + ("  [QUICK: first rows only, ARF skipped]" if meta["quick"] else "")
    )
    for name in COLUMN_SETS:
        print(f"columns '{name}' ({len(meta['column_sets'][name])}): " + meta["column_notes"][name])
    print(f"production trust model: {meta['production']}")
    print()
    print("offline reference: HistGradientBoostingClassifier, stratified 5-fold out-of-fold")
    for name in COLUMN_SETS:
        g = gbm[name]
        print(f"  {name:<7} AUC {g.auc:.4f}  log-loss {g.log_loss:.4f}  ({g.seconds:.1f} s)")
    print()
    header = (
        f"{'columns':<7} {'order':<8} {'learner':<42} {'AUC':>6} {'AUC 2nd':>7} "
        f"{'logloss':>8} {'µs/row':>8} {'AUC/GBM':>7}"
    )
    print(header)
    print("-" * len(header))
    previous: tuple[str, str] | None = None
    for r in results:
        if previous is not None and previous != (r.column_set, r.order):
            print()
        previous = (r.column_set, r.order)
        print(
            f"{r.column_set:<7} {r.order:<8} {r.learner:<42} {r.auc:>6.4f} "
            f"{r.auc_second_half:>7.4f} {r.log_loss:>8.4f} {r.us_per_row:>8.1f} "
            f"{r.auc_over_gbm:>7.3f}"
        )
    print()
    print("AUC = progressive ROC-AUC over all rows; AUC 2nd = over the second half of the stream;")
    print("AUC/GBM = progressive AUC / GBM 5-fold AUC on the same columns.")
    print()
    if rec["learner"] is None:
        print(f"recommendation: none ({rec['reason']})")
    else:
        print(
            f"recommended trust model: {rec['learner']} "
            f"(stream columns, shuffled: AUC {rec['auc']:.4f}, {rec['us_per_row']:.1f} µs/row)"
        )
        print(f"  rule: {rec['rule']}")
        tied = ", ".join(rec["tied"])
        print(f"  tied within {AUC_TIE} of best AUC {rec['best_auc']:.4f}: {tied}")
        if rec["worse_calibrated_than_prior"]:
            print(
                f"  warning: its log-loss {rec['log_loss']:.4f} is worse than the prior-only "
                f"{rec['prior_log_loss']:.4f}; its probabilities are miscalibrated"
            )
        print(
            f"  best log-loss under the same constraints: {rec['best_log_loss_learner']} "
            f"(log-loss {rec['best_log_loss']:.4f}, AUC {rec['best_log_loss_auc']:.4f})"
        )
    print(f"total run time: {meta['elapsed_s']:.1f} s")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path of the CSV")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: first {QUICK_ROWS} rows only and skip ARF",
    )
    parser.add_argument("--rows", type=int, default=None, help="use only the first N rows")
    parser.add_argument("--seed", type=int, default=SEED, help="seed for shuffle and models")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser.parse_args(argv)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    data: Path = args.data
    if not data.is_file():
        print(
            f"error: UCI online shoppers data not found at {data}\n"
            "  expected ../shared/data/uci_online_shoppers/online_shoppers_intention.csv next to "
            "the repository (see shared/data/README.md), or pass --data PATH",
            file=sys.stderr,
        )
        return 2
    try:
        rows = load_rows(data)
    except (ValueError, OSError, csv.Error) as exc:
        print(f"error: cannot read {data}: {exc}", file=sys.stderr)
        return 2

    n_rows = args.rows if args.rows is not None else (QUICK_ROWS if args.quick else None)
    vocab = category_vocabulary(rows)  # from the whole file: the schema, not the labels
    if n_rows is not None:
        rows = rows[:n_rows]
    ys = [r["Revenue"] == "TRUE" for r in rows]
    y_arr = np.array(ys, dtype=bool)
    feats: dict[str, list[Features]] = {
        "stream": [stream_features(r) for r in rows],
        "all": [all_features(r, vocab) for r in rows],
    }
    feature_names = {name: list(feats[name][0]) for name in COLUMN_SETS}

    shuffled = list(range(len(rows)))
    random.Random(args.seed).shuffle(shuffled)
    orders = {"file": list(range(len(rows))), "shuffled": shuffled}

    gbm: dict[str, GbmResult] = {}
    for name in COLUMN_SETS:
        t0 = time.perf_counter()
        matrix = np.array([[x[k] for k in feature_names[name]] for x in feats[name]])
        auc, ll = gbm_baseline(matrix, y_arr, args.seed)
        gbm[name] = GbmResult(name, auc, ll, time.perf_counter() - t0)
        log(f"[gbm {name}] AUC {auc:.4f}")

    cands = [c for c in candidates(args.seed) if not (args.quick and c.slow)]
    prod, prod_status = production_candidates()
    cands.extend(prod)

    results: list[ProgressiveResult] = []
    for name in COLUMN_SETS:
        for order_name in ORDERS:
            order = orders[order_name]
            for cand in cands:
                if name not in cand.column_sets:
                    continue
                t0 = time.perf_counter()
                labels, preds, us = progressive(cand.factory, feats[name], ys, order)
                half = len(labels) // 2
                auc = safe_auc(labels, preds)
                result = ProgressiveResult(
                    column_set=name,
                    order=order_name,
                    learner=cand.name,
                    auc=auc,
                    auc_second_half=safe_auc(labels[half:], preds[half:]),
                    log_loss=float(log_loss(labels, np.clip(preds, EPS, 1 - EPS))),
                    us_per_row=us,
                    auc_over_gbm=auc / gbm[name].auc,
                    reference=cand.reference,
                )
                results.append(result)
                log(
                    f"[{name}/{order_name}] {cand.name}: AUC {auc:.4f} "
                    f"({time.perf_counter() - t0:.1f} s)"
                )

    rec = recommend(results)
    positives = int(y_arr.sum())
    meta: dict[str, Any] = {
        "data": str(data),
        "rows": len(rows),
        "positives": positives,
        "positive_rate": positives / max(len(rows), 1),
        "seed": args.seed,
        "quick": bool(args.quick),
        "column_sets": feature_names,
        "column_notes": {
            "stream": "page counts and durations per page kind + Total_Pages, Total_Duration",
            "all": (
                "stream + BounceRates, ExitRates, PageValues, SpecialDay, Weekend, "
                "dense one-hot VisitorType/Month/OS/Browser/Region/TrafficType"
            ),
        },
        "production": prod_status,
        "elapsed_s": time.perf_counter() - started,
    }
    if args.json:
        out = {
            **meta,
            "gbm_5fold": {k: asdict(v) for k, v in gbm.items()},
            "progressive": [asdict(r) for r in results],
            "recommendation": rec,
        }
        print(json.dumps(out, indent=2, allow_nan=True))
    else:
        print_table(results, gbm, meta, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
