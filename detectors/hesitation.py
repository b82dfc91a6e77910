"""Hesitation score: an online anomaly score relative to what is normal for
the stage.

One Half-Space Trees model per stage where hesitation matters (evaluate and
decide) scores the moment-features of :func:`detectors.features.hesitation_features`
and then learns them (score first, learn after). The alert threshold is not
a constant: it is the rolling ``hesitation_quantile`` of the scores the same
stage model produced, so it follows the traffic. Only an anomaly in the
hesitant direction counts (longer than usual dwell or time without progress,
more reversals or revisits); an unusually *fast* visitor is not hesitating.

References
----------
Tan, Ting and Liu (2011), "Fast anomaly detection for streaming data", IJCAI
(Half-Space Trees); River's ``anomaly.HalfSpaceTrees``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from river import anomaly, stats

from detectors.config import DELIBERATION_STAGES, STAGE_ORDER, DetectorConfig
from detectors.features import HESITATION_FEATURES

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

    def score_one(self, stage: str, x: dict[str, float]) -> HesitationScore:
        """Score ``x`` against the stage's normal, then learn it."""
        model = self.models[stage]
        score = float(model.hst.score_one(x))
        threshold: float | None = None
        if model.n >= self.warmup:
            current = model.quantile.get()
            threshold = None if current is None else float(current)
        hesitant = any(x[name] > model.mean[name] + model.std(name) for name in _HESITANT)
        model.hst.learn_one(x)
        model.quantile.update(score)
        model.update_moments(x)
        return HesitationScore(score, threshold, hesitant)

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
