"""Hesitation: how unusual this moment is for its stage, and whether the
visitor is about to leave without the goal.

Two models, one feeding the other:

* :class:`HesitationModel`, an unsupervised anomaly score relative to what
  is normal for the stage (below);
* :class:`LeaveHazard`, supervised by outcomes: P(the session ends without
  the goal within ``hesitation_horizon_ms`` | this moment), learned online
  from the session's recent moments labelled at close. The anomaly score is
  one of its inputs. A hesitation alert needs the hazard, so "hesitation"
  means "likely to leave without buying, soon, while still here", and is
  validated against outcomes like the trust score.

The anomaly score:

One Half-Space Trees model per stage where hesitation matters (evaluate and
decide) scores the moment-features of :func:`detectors.features.hesitation_features`
(:meth:`HesitationModel.score`, which changes nothing). It learns from the
moments of closed sessions (:meth:`HesitationModel.learn_one`, score first,
learn after), where the trust and hazard models learn too: in the trainer, or
at once offline. The alert threshold is not a constant: it is the rolling
``hesitation_quantile`` of the scores the stage model gave the moments it
learned, so it follows the traffic. Only an anomaly in the
hesitant direction counts (longer than usual dwell or time without progress,
more reversals or revisits); an unusually *fast* visitor is not hesitating.

References
----------
Tan, Ting and Liu (2011), "Fast anomaly detection for streaming data", IJCAI
(Half-Space Trees); River's ``anomaly.HalfSpaceTrees``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from river import anomaly, compose, linear_model, metrics, optim, preprocessing, stats

from detectors.config import DELIBERATION_STAGES, STAGE_ORDER, DetectorConfig
from detectors.features import HESITATION_FEATURES
from detectors.sample_size import too_few_outcomes

#: One model per deliberation stage, in journey order (their seeds follow it).
HESITATION_STAGES: tuple[str, ...] = tuple(s for s in STAGE_ORDER if s in DELIBERATION_STAGES)

#: Rolling window of the adaptive threshold (checkpoints per stage).
THRESHOLD_WINDOW = 5000

#: Words for the reasons of an alert.
HESITATION_WORDS: dict[str, str] = {
    "dwell": "time on this page",
    "max_gap": "longest pause on this page",
    "reversals": "scroll direction changes on this page",
    "scroll_depth": "scroll depth on this page",
    "since_progress": "time without moving forward",
    "revisits": "times this page was revisited",
    "page_events": "interactions on this page",
}

_HESITANT = ("dwell", "max_gap", "reversals", "since_progress", "revisits")


@dataclass(frozen=True, slots=True)
class HesitationScore:
    """Anomaly score in [0, 1] (1 = most unusual), the adaptive threshold
    (``None`` while the stage model warms up) and whether the deviation points
    in the hesitant direction."""

    score: float
    threshold: float | None
    hesitant: bool


class _StageModel:
    def __init__(self, config: DetectorConfig, seed: int) -> None:
        self.hst = anomaly.HalfSpaceTrees(
            n_trees=config.hesitation_trees,
            height=config.hesitation_height,
            window_size=config.hesitation_window,
            seed=seed,
        )
        self.quantile = stats.RollingQuantile(config.hesitation_quantile, THRESHOLD_WINDOW)
        # Welford running mean and sum of squared deviations per feature
        self.mean = dict.fromkeys(HESITATION_FEATURES, 0.0)
        self.m2 = dict.fromkeys(HESITATION_FEATURES, 0.0)
        self.n = 0

    def std(self, name: str) -> float:
        return math.sqrt(self.m2[name] / self.n) if self.n > 1 else 0.0

    def update_moments(self, x: dict[str, float]) -> None:
        self.n += 1
        mean, m2, n = self.mean, self.m2, self.n
        for name in HESITATION_FEATURES:
            value = x[name]
            delta = value - mean[name]
            mean[name] += delta / n
            m2[name] += delta * (value - mean[name])


class HesitationModel:
    """Per-stage Half-Space Trees with adaptive quantile thresholds.

    >>> import random
    >>> cfg = DetectorConfig(hesitation_warmup=200)
    >>> m = HesitationModel(cfg)
    >>> rng = random.Random(0)
    >>> normal = lambda: {k: rng.uniform(0.1, 0.3) for k in HESITATION_FEATURES}
    >>> for _ in range(400):
    ...     _ = m.score_one("evaluate", normal())
    >>> odd = dict(normal(), dwell=0.99, since_progress=0.99, max_gap=0.95)
    >>> r = m.score_one("evaluate", odd)
    >>> r.threshold is not None and r.score > r.threshold and r.hesitant
    True
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.warmup = config.hesitation_warmup
        self.models = {
            stage: _StageModel(config, config.seed + i) for i, stage in enumerate(HESITATION_STAGES)
        }

    def score(self, stage: str, x: dict[str, float]) -> HesitationScore:
        """Score ``x`` against the stage's normal; changes nothing."""
        model = self.models[stage]
        score = float(model.hst.score_one(x))
        threshold: float | None = None
        if model.n >= self.warmup:
            current = model.quantile.get()
            threshold = None if current is None else float(current)
        hesitant = any(x[name] > model.mean[name] + model.std(name) for name in _HESITANT)
        return HesitationScore(score, threshold, hesitant)

    def learn_one(self, stage: str, x: dict[str, float]) -> HesitationScore:
        """Score ``x`` (as :meth:`score`), then learn it: the trees, the
        threshold's window and the stage's feature means."""
        result = self.score(stage, x)
        model = self.models[stage]
        model.hst.learn_one(x)
        model.quantile.update(result.score)
        model.update_moments(x)
        return result

    #: the former name of :meth:`learn_one`
    score_one = learn_one

    def explain(self, stage: str, x: dict[str, float]) -> list[tuple[str, float, float, float]]:
        """Features furthest above the stage's mean: (name, value, mean, z),
        largest z first, hesitant features only."""
        model = self.models[stage]
        out = []
        for name in _HESITANT:
            mean = model.mean[name]
            std = max(model.std(name), 1e-6)
            out.append((name, x[name], mean, (x[name] - mean) / std))
        out.sort(key=lambda item: item[3], reverse=True)
        return out

    def seen(self, stage: str) -> int:
        """Checkpoints the stage model has learned."""
        return self.models[stage].n


#: Inputs of the leave hazard: the moment (each in [0, 1], see
#: :func:`detectors.features.moment_vector`), its anomaly score, the trust
#: score, and where the session stands.
HAZARD_FEATURES: tuple[str, ...] = (
    *HESITATION_FEATURES,
    "anomaly",
    "trust",
    "in_decide",
    "furthest_stage",
    "pages",
    "quiet",
)

_IN_DECIDE = HAZARD_FEATURES.index("in_decide")


def moment_stage(vector: Sequence[float]) -> str:
    """The stage of a moment (:data:`HAZARD_FEATURES` order): decide when it
    was in the basket or checkout, else evaluate."""
    return HESITATION_STAGES[-1] if vector[_IN_DECIDE] >= 0.5 else HESITATION_STAGES[0]


def moment_features(vector: Sequence[float]) -> dict[str, float]:
    """The :data:`~detectors.features.HESITATION_FEATURES` of a moment, the
    anomaly model's input (the first entries of :data:`HAZARD_FEATURES`)."""
    return {name: float(vector[i]) for i, name in enumerate(HESITATION_FEATURES)}


#: Window of the hazard model's rolling ROC-AUC (labelled moments).
HAZARD_METRIC_WINDOW = 5000


class LeaveHazard:
    """Online P(leave without the goal within the horizon | moment).

    Each closed session's recent moments (``SessionState.moments``) are
    labelled: 1 when the session ended without the goal at most
    ``horizon_ms`` after the moment, else 0. Before learning them the model
    predicts them, for its progressive ROC-AUC (:attr:`auc`, ``None`` until
    enough outcomes of both kinds, see :mod:`detectors.sample_size`).
    Standard-scaled logistic regression: the inputs are few and bounded,
    and it learns from the first sessions.

    >>> h = LeaveHazard(horizon_ms=60_000)
    >>> calm = [0.1] * len(HAZARD_FEATURES)
    >>> stuck = [0.9] * len(HAZARD_FEATURES)
    >>> for _ in range(100):
    ...     h.learn_session([(0, calm)], True, 10_000)
    ...     h.learn_session([(0, calm), (50_000, stuck)], False, 80_000)
    >>> h.predict(stuck) > 0.5 > h.predict(calm)
    True
    >>> h.auc is not None and h.auc > 0.9, h.leavers
    (True, 100)
    """

    def __init__(self, horizon_ms: int, quantile: float = 0.9) -> None:
        self.horizon_ms = horizon_ms
        # per stage: the rolling quantile of the hazards predicted for the
        # moments learned (before learning them)
        self.levels = {
            stage: stats.RollingQuantile(quantile, THRESHOLD_WINDOW) for stage in HESITATION_STAGES
        }
        self.model = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.AdaGrad(0.1), l2=1e-4),
        )
        self.auc_metric = metrics.RollingROCAUC(window_size=HAZARD_METRIC_WINDOW)
        self.closed = 0
        self.leavers = 0  # sessions with at least one moment labelled 1
        self.stayers = 0
        self._auc = 0.5

    def predict(self, vector: Sequence[float]) -> float:
        """P(leave within the horizon), in [0, 1]; ``vector`` in
        :data:`HAZARD_FEATURES` order."""
        x = dict(zip(HAZARD_FEATURES, vector, strict=True))
        return float(self.model.predict_proba_one(x).get(True, 0.0))

    def level(self, stage: str) -> float:
        """The stage's rolling quantile of the hazards the model predicted for
        the moments it learned (0 before the first); changes nothing."""
        current = self.levels[stage].get()
        return 0.0 if current is None else float(current)

    def learn_session(
        self, moments: Sequence[tuple[int, Sequence[float]]], converted: bool, end_ts: int
    ) -> None:
        """Label a closed session's moments ``(ts, vector)`` by whether it
        ended without the goal within the horizon of each (``end_ts``: epoch
        ms of the session's last event), predict them, then learn them.
        Moments after the last event are not learned (see below)."""
        self.closed += 1
        for _, vector in moments:  # the thresholds see every check, as served
            self.levels[moment_stage(vector)].update(self.predict(vector))
        # a check after the session's last event saw a visitor who, as it
        # turned out, had already gone: learning it would teach the model
        # that silence means leaving, which is true and useless
        moments = [(ts, vector) for ts, vector in moments if ts <= end_ts]
        if not moments:
            return
        labelled = [
            (
                dict(zip(HAZARD_FEATURES, vector, strict=True)),
                not converted and end_ts - ts <= self.horizon_ms,
            )
            for ts, vector in moments
        ]
        if any(y for _, y in labelled):
            self.leavers += 1
        else:
            self.stayers += 1
        for x, y in labelled:
            self.auc_metric.update(y, float(self.model.predict_proba_one(x).get(True, 0.0)))
        for x, y in labelled:
            self.model.learn_one(x, y)
        if self.closed % 10 == 0 or self.closed < 100:
            self._auc = float(self.auc_metric.get())

    @property
    def auc_unavailable(self) -> str | None:
        """Why :attr:`auc` is ``None``: too few sessions with a moment that
        left soon after, or with none."""
        return too_few_outcomes(self.leavers, self.stayers, "departure within the horizon")

    @property
    def auc(self) -> float | None:
        """Rolling ROC-AUC of the hazard on moments it had not learned."""
        return None if self.auc_unavailable else self._auc
