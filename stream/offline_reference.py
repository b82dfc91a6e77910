"""The offline reference: how well a batch model does on the same prefixes.

The trust score is online: each session is scored by the model as it was at
that moment, and learned only when it closes. The reference is what an
offline model reaches with hindsight on plain counts: scikit-learn's
``HistGradientBoostingClassifier`` on the prefix features of
:meth:`detectors.offline.evaluation.Evaluation.prefix_features` (events by
type, page views by page type, duration, distinct pages), scored out of fold
with stratified, shuffled 5-fold cross-validation and a fixed seed. The gap
between the two says how far the online model is from what the plain data
allows.

scikit-learn comes with the ``bench`` extra (``pip install -e '.[bench]'``)
and is imported only when the reference is computed; without it the figure
is ``None`` with the reason :data:`NOT_INSTALLED`. It costs a few seconds
(fifteen fits), hence ``disengage evaluate --no-offline``. The fits run on
one OpenMP thread: on a small, shared machine scikit-learn's default (a
thread per core, spinning while it waits) made 300 sessions take 27 s
instead of 3.
"""

from __future__ import annotations

from typing import Any

from detectors.offline.evaluation import MIN_PREFIX_EVENTS, Evaluation
from detectors.sample_size import roc_auc, too_few_outcomes

#: Folds of the cross-validation.
FOLDS = 5
#: The seed of the folds and of the model: the same data gives the same figure.
SEED = 7
NOT_INSTALLED = "install the bench extra (scikit-learn)"
SKIPPED = "skipped with --no-offline"


def offline_auc(
    evaluation: Evaluation, threads: int = 1
) -> tuple[dict[str, float | None] | None, str | None]:
    """Out-of-fold ROC-AUC per prefix (4 decimals) of the reference model,
    or ``None`` with the reason: scikit-learn missing, or fewer than
    :data:`~detectors.sample_size.MIN_PER_OUTCOME` sessions of an outcome.
    ``threads`` caps scikit-learn's OpenMP threads (see the module docstring)."""
    data = evaluation.prefix_features()
    labels = data["0.5"][1]
    if not labels:
        return None, f"no session with at least {MIN_PREFIX_EVENTS} events before the goal"
    reason = too_few_outcomes(sum(labels), len(labels) - sum(labels), evaluation.goal_event)
    if reason:
        return None, reason
    try:
        import numpy as np
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
    except ImportError:
        return None, NOT_INSTALLED
    out: dict[str, float | None] = {}
    with threadpool_limits(limits=threads, user_api="openmp"):
        for key, (rows, ys) in data.items():
            matrix = np.asarray(rows, dtype=float)
            target = np.asarray(ys, dtype=bool)
            folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
            model = HistGradientBoostingClassifier(random_state=SEED)
            proba = cross_val_predict(model, matrix, target, cv=folds, method="predict_proba")
            auc = roc_auc([float(p) for p in proba[:, 1]], ys)
            out[key] = None if auc is None else round(auc, 4)
    return out, None


def add_offline_reference(
    summary: dict[str, Any], evaluation: Evaluation, skip: bool = False
) -> None:
    """Put ``offline_auc`` into ``summary`` (an :meth:`Evaluation.summary`),
    and its reason under ``not_available`` when it is ``None``."""
    auc, reason = (None, SKIPPED) if skip else offline_auc(evaluation)
    summary["offline_auc"] = auc
    if reason:
        summary.setdefault("not_available", {})["offline_auc"] = reason
