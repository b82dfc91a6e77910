"""Trust score: an online classifier for P(goal | session so far).

Labels arrive late: a session's outcome is known only when it closes. While
it runs, the detector keeps a bounded set of feature snapshots in the session
state; at close they are labelled (1 = the goal was reached, 0 = exit or
timeout without it) and learned here. Before a closed session's snapshots
are learned, every learner predicts them, and the predictions feed
progressive ROC-AUCs and the log-loss: the system always knows how well its
own score predicts outcomes.

Two learners see the same snapshots (a champion/challenger pair):

* a **forest**, River's adaptive random forest (:mod:`detectors.compiled_forest`),
  non-linear; it needs a few hundred sessions, then ranks best. Chosen with
  ``benchmarks/trust_learners.py`` on our simulator, an independently written
  generator and real DIGINETICA sessions, where the linear model underfits
  (the forest gained 0.03 to 0.09 prefix AUC on the independent generator);
* a **linear** model, standard-scaled logistic regression, which learns
  quickly from few sessions and whose weights explain an alert's reasons.

The score served is the linear model's until :data:`CHAMPION_MIN_SESSIONS`
sessions closed, then the forest's while its progressive AUC is at least
the linear model's, else the linear one's (:attr:`TrustModel.serving`).
Before enough outcomes exist the model-based alert rules stay off (cold
start): only the transparent friction and hesitation rules alert.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from river import compose, linear_model, metrics, optim, preprocessing, stats

from detectors.compiled_forest import CompiledForest, compile_forest, make_forest
from detectors.config import DELIBERATION_STAGES, STAGE_INDEX
from detectors.features import TRUST_FEATURES
from detectors.sample_size import too_few_outcomes

#: Window of the rolling ROC-AUC and log-loss (labelled snapshots).
METRIC_WINDOW = 5000
#: The rolling AUC is re-read every this many closed sessions (a read costs
#: ~0.2 ms over the 5000-snapshot window); every session for the first 100.
AUC_REFRESH_SESSIONS = 10
#: The forest is read into its fast form (:func:`compile_forest`, ~1-4 ms)
#: after every this many closed sessions; after every one of the first 100.
FOREST_REFRESH_SESSIONS = 10
#: Closed sessions before the forest may serve (it needs data to split).
CHAMPION_MIN_SESSIONS = 200
#: Snapshots of a session the forest learns (evenly spaced): all of a
#: converter's up to this many, half as many of a non-converter's. Learning
#: costs ~0.6 ms a snapshot, the largest cost of a closed session; the
#: under-sampling is corrected for in the served probability (case-control
#: prior correction: the odds are multiplied by the share of non-converter
#: snapshots learned over the share of converter snapshots learned).
FOREST_SNAPSHOTS = 8
FOREST_NEGATIVE_SNAPSHOTS = 4
#: Snapshots of a session the linear model learns (evenly spaced, either
#: outcome): its learning step costs ~0.1 ms, and more snapshots of one
#: session add little that its neighbours do not say.
LINEAR_SNAPSHOTS = 4

#: Words for the reasons of a trust-loss alert, by feature.
TRUST_WORDS: dict[str, str] = {
    "pages": "pages viewed",
    "minutes": "minutes in the session",
    "furthest_stage": "furthest journey stage reached",
    "in_decide": "being in the basket or checkout",
    "discover_pages": "home and landing pages viewed",
    "consider_pages": "product and category pages viewed",
    "evaluate_pages": "comparison, review and policy pages viewed",
    "decide_pages": "basket and checkout pages viewed",
    "support_pages": "support and account pages viewed",
    "evaluate_minutes": "minutes spent evaluating",
    "decide_minutes": "minutes spent in basket and checkout",
    "regressions": "steps back in the journey",
    "revisits": "pages revisited",
    "skipped": "journey stages skipped",
    "carts": "items added to the basket",
    "cart_removes": "items removed from the basket",
    "checkout_steps": "checkout steps completed",
    "searches": "searches",
    "minutes_since_progress": "minutes since the last step forward",
    "rage_click": "rage-click bursts",
    "dead_or_error_click": "clicks that did nothing or failed",
    "u_turn": "quick returns to the previous page",
    "page_loop": "page loops",
    "scroll_thrash": "bursts of frantic scrolling",
    "form_trouble": "form errors and abandoned form fields",
    "slow_page": "slow page loads",
    "stall": "stalls without progress",
    "trust_touchpoint": "returns, shipping, review or pricing checks after reaching the basket",
    "errors": "errors shown",
    "events": "interactions",
    "clicks": "clicks",
    "scrolls": "scrolls",
    "form_fields": "form fields used",
    "tab_switches": "tab switches",
    "dwell_minutes": "minutes on the current page",
    "mean_page_minutes": "minutes per page",
    "minutes_since_cart": "minutes since the last basket add",
    "events_per_minute": "interactions per minute",
    "stage_now": "current journey stage",
    "stage_before": "previous journey stage",
    "stage_before_that": "journey stage before the previous one",
}


_STAGE_NOW = TRUST_FEATURES.index("stage_now")
#: ``stage_now`` values of the deliberation stages (``STAGE_INDEX / 4``)
_DELIBERATION_LEVELS = tuple(STAGE_INDEX[s] / (len(STAGE_INDEX) - 1) for s in DELIBERATION_STAGES)


def _deliberating(vector: Sequence[float]) -> bool:
    """Whether a snapshot was taken in a deliberation stage."""
    now = vector[_STAGE_NOW]
    return any(abs(now - level) < 1e-3 for level in _DELIBERATION_LEVELS)


def make_trust_model() -> compose.Pipeline:
    """The production learner: standard scaling, then logistic regression.

    AdaGrad (learning rate 0.1) adapts the step per feature, which matters
    for the rare friction counts; a light L2 (1e-4) keeps the weights stable
    on the correlated count features. In the prequential comparison on
    simulated sessions it beat SGD(0.02), SGD(0.1) and Adam(0.01) at every
    prefix. Deterministic (no random init).
    """
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.AdaGrad(0.1), l2=1e-4),
    )


@dataclass(frozen=True, slots=True)
class Contribution:
    """A feature's push on the log-odds: ``weight * (value - mean) / std``."""

    name: str
    value: float
    mean: float
    effect: float


class TrustModel:
    """Online P(goal | session so far), learned from delayed labels.

    >>> m = TrustModel()
    >>> good = {k: 0.0 for k in TRUST_FEATURES} | {"carts": 1.0, "checkout_steps": 1.0}
    >>> bad = {k: 0.0 for k in TRUST_FEATURES} | {"rage_click": 1.5}
    >>> for _ in range(200):
    ...     _ = m.learn_session([good], True), m.learn_session([bad], False)
    >>> m.predict(good) > 0.8 > 0.2 > m.predict(bad)
    True
    >>> m.closed, round(m.base_rate, 2), m.auc is not None and m.auc > 0.9
    (400, 0.5, True)
    >>> m.serving  # the forest serves only while it ranks at least as well
    'linear'
    >>> fresh = TrustModel()
    >>> fresh.learn_session([good], True)  # the prediction made before learning
    [0.5]
    >>> fresh.auc, fresh.auc_unavailable, fresh.serving
    (None, 'only 1 session with a purchase; need 10', 'linear')
    """

    #: The learner family, in model versions and the champion/challenger
    #: report (:mod:`detectors.challenger`).
    kind: ClassVar[str] = "online"
    #: Whether the forest learns and may serve (a linear-only subclass: no).
    uses_forest: ClassVar[bool] = True

    def __init__(self, drop_quantile: float = 0.98, seed: int = 42) -> None:
        self.model = make_trust_model()
        self.forest = make_forest(seed)
        self.drops = stats.RollingQuantile(drop_quantile, METRIC_WINDOW)
        self.drops_seen = 0
        self.auc_metric = metrics.RollingROCAUC(window_size=METRIC_WINDOW)
        self.linear_auc_metric = metrics.RollingROCAUC(window_size=METRIC_WINDOW)
        self.forest_auc_metric = metrics.RollingROCAUC(window_size=METRIC_WINDOW)
        self._losses: deque[float] = deque(maxlen=METRIC_WINDOW)
        self._loss_sum = 0.0
        self.closed = 0
        self.converted = 0
        self.learned = 0
        self.serving = "linear"
        self._auc = 0.5
        self._terms: tuple[tuple[int, float, float], ...] = ()
        self._bias = 0.0
        self._compiled_at = -1
        self._fast: CompiledForest | None = None
        self._fast_due = True
        # snapshots offered to and learned by the forest: [offered, learned]
        # for non-converters, then for converters
        self._kept = [0, 0, 0, 0]
        self._odds = 1.0

    def predict(self, x: dict[str, float]) -> float:
        """P(goal | features), in [0, 1], from the serving learner."""
        return self.predict_vector([x[name] for name in TRUST_FEATURES])

    def predict_vector(self, vector: Sequence[float]) -> float:
        """:meth:`predict` for features as a list in :data:`TRUST_FEATURES`
        order (the scoring hot path builds no dict)."""
        if self.serving == "forest":
            return self._forest_vector(vector)
        return self._linear_vector(vector)

    def _linear_vector(self, vector: Sequence[float]) -> float:
        """The linear model's probability, equal to the River pipeline's
        ``predict_proba_one`` (a test holds them to 1e-9) but computed from
        scaler and weights folded into one term per feature, refreshed only
        when the model learns."""
        if self._compiled_at != self.learned:
            self._compile()
        z = self._bias
        for index, mean, k in self._terms:
            z += k * (vector[index] - mean)
        if z < -30.0:
            return 0.0
        if z > 30.0:
            return 1.0
        return 1.0 / (1.0 + math.exp(-z))

    def _forest_vector(self, vector: Sequence[float]) -> float:
        """The forest's probability, corrected for its under-sampled
        non-converters (see :data:`FOREST_NEGATIVE_SNAPSHOTS`)."""
        fast = self._fast
        if fast is None or self._fast_due:
            fast = self._refresh_forest()
        # None: a node type the reader does not know, so River's own walk
        p = self.forest_river(vector) if fast is None else fast.predict(vector)
        odds = self._odds
        return p * odds / (p * odds + 1.0 - p) if p < 1.0 else 1.0

    def forest_river(self, vector: Sequence[float]) -> float:
        """The forest's raw probability through River's own trees (reference)."""
        x = dict(zip(TRUST_FEATURES, vector, strict=True))
        return float(self.forest.predict_proba_one(x).get(True, 0.0))

    def predict_river(self, x: dict[str, float]) -> float:
        """The linear model's probability through River's own pipeline (reference)."""
        return float(self.model.predict_proba_one(x).get(True, 0.0))

    def _refresh_forest(self) -> CompiledForest | None:
        """Read the forest into its fast form, with its prior correction."""
        fast = self._fast = compile_forest(self.forest, TRUST_FEATURES)
        self._fast_due = False
        kept = self._kept
        if kept[1] and kept[3]:
            self._odds = (kept[1] / kept[0]) / (kept[3] / kept[2])
        return fast

    def prepare(self) -> None:
        """Bring the fast scoring forms (the compiled forest, the folded
        linear terms) up to date, as the next prediction would. A published
        version is prepared, so the workers' scoring changes nothing, not
        even a cache; predictions are the same either way."""
        if self.uses_forest and (self._fast is None or self._fast_due):
            self._refresh_forest()
        if self._compiled_at != self.learned:
            self._compile()

    def serving_copy(self) -> TrustModel:
        """A copy that scores exactly as this model does, without what only
        learning needs: the River forest itself (~75% of the pickled model)
        once its compiled form serves. For the workers, which never learn;
        :meth:`learn_session` on the copy raises."""
        self.prepare()
        clone = copy.copy(self)
        if self._fast is not None:
            clone.forest = None  # type: ignore[assignment]  # a serving copy never learns
        return clone

    def _compile(self) -> None:
        scaler = self.model.steps["StandardScaler"]
        lr = self.model.steps["LogisticRegression"]
        terms = []
        for index, name in enumerate(TRUST_FEATURES):
            var = float(scaler.vars.get(name, 0.0))
            weight = float(lr.weights.get(name, 0.0))
            if var > 0.0 and weight != 0.0:
                terms.append((index, float(scaler.means.get(name, 0.0)), weight / var**0.5))
        self._terms = tuple(terms)
        self._bias = float(lr.intercept)
        self._compiled_at = self.learned

    def learn_session(self, snapshots: list[dict[str, float]], converted: bool) -> list[float]:
        """Learn a closed session's snapshots with its outcome. Every learner
        first predicts them all, as it stood before the session closed, so
        the progressive metrics only ever see unseen data. Returns the served
        predictions (probabilities in [0, 1], one per snapshot, made before
        learning): what a champion/challenger comparison scores."""
        self.closed += 1
        self.converted += int(converted)
        served_scores: list[float] = []
        if snapshots:
            vectors = [[x[name] for name in TRUST_FEATURES] for x in snapshots]
            peak = 0.0
            forests = self.uses_forest
            for vector in vectors:
                linear = self._linear_vector(vector)
                forest = self._forest_vector(vector) if forests else linear
                served = forest if self.serving == "forest" else linear
                served_scores.append(served)
                peak = max(peak, served)
                if _deliberating(vector):  # where the drop rule decides
                    self.observe_drop(peak - served)
                self.linear_auc_metric.update(converted, linear)
                self.forest_auc_metric.update(converted, forest)
                self.auc_metric.update(converted, served)
                self._add_loss(-math.log(max(served if converted else 1.0 - served, 1e-15)))
            for x in _evenly(snapshots, LINEAR_SNAPSHOTS):
                self.model.learn_one(x, converted)
                self.learned += 1
            if forests:
                keep = FOREST_SNAPSHOTS if converted else FOREST_NEGATIVE_SNAPSHOTS
                chosen = _evenly(snapshots, keep)
                for x in chosen:
                    self.forest.learn_one(x, converted)
                side = 2 * int(converted)
                self._kept[side] += len(snapshots)
                self._kept[side + 1] += len(chosen)
                if self.closed % FOREST_REFRESH_SESSIONS == 0 or self.closed < 100:
                    self._fast_due = True
        if self.closed % AUC_REFRESH_SESSIONS == 0 or self.closed < 100:
            if snapshots:
                self._auc = float(self.auc_metric.get())
            self._choose()
        return served_scores

    def _choose(self) -> None:
        """Serve the forest once it has seen :data:`CHAMPION_MIN_SESSIONS`
        sessions and ranks at least as well as the linear model."""
        ready = (
            self.uses_forest
            and self.closed >= CHAMPION_MIN_SESSIONS
            and self.auc_unavailable is None
        )
        forest_auc = float(self.forest_auc_metric.get())
        linear_auc = float(self.linear_auc_metric.get())
        self.serving = "forest" if ready and forest_auc >= linear_auc else "linear"

    def drop_threshold(self) -> float | None:
        """The adaptive threshold of a fall from a session's peak (absolute
        probability): the rolling ``drop_quantile`` of the falls the serving
        learner showed in the deliberation-stage snapshots it learned, ``None``
        until 100 were seen. Changes nothing."""
        current = self.drops.get()
        return float(current) if self.drops_seen >= 100 and current is not None else None

    def observe_drop(self, drop: float) -> None:
        """Record one fall from a session's peak (absolute probability)."""
        self.drops.update(drop)
        self.drops_seen += 1

    def _add_loss(self, loss: float) -> None:
        if len(self._losses) == self._losses.maxlen:
            self._loss_sum -= self._losses[0]
        self._losses.append(loss)
        self._loss_sum += loss

    @property
    def auc(self) -> float | None:
        """Rolling ROC-AUC of predictions made before learning (0.5 = chance);
        refreshed when a session is learned, not on every read. ``None``
        until enough sessions of both outcomes closed (see
        :attr:`auc_unavailable`)."""
        return None if self.auc_unavailable else self._auc

    @property
    def auc_unavailable(self) -> str | None:
        """Why :attr:`auc` is ``None`` (too few closed sessions with or
        without the goal, :data:`detectors.sample_size.MIN_PER_OUTCOME` of
        each), or ``None`` when it is available."""
        return too_few_outcomes(self.converted, self.closed - self.converted)

    @property
    def log_loss(self) -> float:
        """Rolling mean log-loss of the same predictions (nats; 0.693 = coin)."""
        return self._loss_sum / len(self._losses) if self._losses else math.log(2)

    @property
    def base_rate(self) -> float:
        """Share of closed sessions that converted (Laplace-smoothed)."""
        return (self.converted + 1) / (self.closed + 2)

    @property
    def learner_auc(self) -> dict[str, float]:
        """Progressive ROC-AUC of each learner over the same snapshots
        (``linear``, ``forest``), whichever served."""
        return {
            "linear": float(self.linear_auc_metric.get()),
            "forest": float(self.forest_auc_metric.get()),
        }

    def contributions(self, x: dict[str, float]) -> list[Contribution]:
        """Per-feature pushes on the linear model's log-odds, most negative
        first: the reasons of a trust alert, whichever learner serves (the
        linear model learns the same snapshots, so it is the explainer)."""
        scaler = self.model.steps["StandardScaler"]
        lr = self.model.steps["LogisticRegression"]
        out = []
        for name in TRUST_FEATURES:
            mean = float(scaler.means.get(name, 0.0))
            var = float(scaler.vars.get(name, 0.0))
            std = math.sqrt(var) if var > 0 else 1.0
            weight = float(lr.weights.get(name, 0.0))
            out.append(Contribution(name, x[name], mean, weight * (x[name] - mean) / std))
        out.sort(key=lambda c: c.effect)
        return out


def _evenly(items: list[dict[str, float]], keep: int) -> list[dict[str, float]]:
    """At most ``keep`` items, evenly spaced, first and last included.

    >>> _evenly([{"i": float(i)} for i in range(8)], 3)
    [{'i': 0.0}, {'i': 4.0}, {'i': 7.0}]
    """
    n = len(items)
    if n <= keep:
        return items
    if keep == 1:
        return [items[-1]]
    return [items[round(i * (n - 1) / (keep - 1))] for i in range(keep)]
