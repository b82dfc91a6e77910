"""Champion/challenger for the trust model, decided on recent outcomes.

The trust model that serves (the *champion*) and a *challenger* learn the
same closed sessions. Before each learns a session, both predict its
snapshots (prequential: neither has seen the session), and the
:class:`Arena` keeps those predictions for the last ``window_sessions``
sessions. Every ``check_sessions`` sessions, once the window is full and
holds :data:`~detectors.sample_size.MIN_PER_OUTCOME` sessions of each
outcome, it compares the exact ROC-AUC of the two over the window's
snapshots. The challenger is promoted only when its lead clears the bar:
at least ``margin``, and at least ``z`` standard errors of the difference
of the two AUCs. The two then swap roles and the window starts again, so a
promotion needs a full window of evidence and a lead within the noise never
flips the served model back and forth.

Where the bar comes from:

* the standard error of each AUC is Hanley and McNeil's (1982), counted in
  sessions (a session's snapshots are not independent, so this is the
  conservative count), and the two AUCs, scored on the same sessions, are
  taken to correlate by :data:`AUC_CORRELATION` = 0.6 (Hanley and McNeil,
  1983, report 0.3 to 0.8 for two scores of the same cases): the standard
  error of the difference is ``se * sqrt(2 - 2 * 0.6)``;
* ``z`` = 2 (one-sided, about 98%): on our simulator's windows (1000
  sessions, 175 converters, AUC 0.85) the bar is 0.034; on DIGINETICA's
  (46 converters, AUC near chance) 0.075 to 0.078, where a fixed 0.02
  swapped the model twice on noise;
* ``margin`` = 0.02, a floor for windows with many outcomes: a lead smaller
  than that is not worth a change of model.

The challenger built here, :class:`RefitTrustModel`, is the periodically
refit model: the same scaled logistic regression as the champion's linear
learner, but rebuilt every ``every`` sessions by several shuffled passes
over the snapshots of the last ``window`` sessions only, and updated online
in between. It forgets what the window no longer holds, so it wins where the
traffic drifts (a new campaign, a changed checkout), and it converges where
one online pass has not. It serves, when promoted, through the same
interface as :class:`~detectors.trust.TrustModel` (its linear learner, its
drop threshold, its explanations).

References
----------
Hanley and McNeil (1982), "The meaning and use of the area under a receiver
operating characteristic (ROC) curve", Radiology 143(1), 29-36.

Hanley and McNeil (1983), "A method of comparing the areas under receiver
operating characteristic curves derived from the same cases", Radiology
148(3), 839-843.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from detectors.config import DetectorConfig
from detectors.features import TRUST_FEATURES
from detectors.sample_size import auc_standard_error, roc_auc, too_few_outcomes
from detectors.trust import LINEAR_SNAPSHOTS, TrustModel, _evenly, make_trust_model

#: Sessions whose snapshots a refit learns (the most recent ones).
REFIT_WINDOW_SESSIONS = 1000
#: A refit every this many closed sessions (once the window is half full).
REFIT_EVERY_SESSIONS = 500
#: Shuffled passes over the window per refit. Two passes: a third changed
#: the prequential AUC by less than 0.002 on our simulator and on the
#: independent generator, and each pass costs ~0.25 s over a full window.
REFIT_EPOCHS = 2
#: Assumed correlation of the champion's and the challenger's AUC over the
#: same sessions (see the module docstring).
AUC_CORRELATION = 0.6
#: Standard errors of the AUC difference a promotion's lead must clear.
PROMOTION_Z = 2.0
#: Promotions kept in :attr:`Arena.promotions` (the newest).
PROMOTIONS_KEPT = 20


class RefitTrustModel(TrustModel):
    """The linear trust learner, refit periodically on a window of recent
    sessions (see the module docstring). No forest: it always serves its
    linear model. Deterministic for a given seed and session order.

    >>> from detectors.trust import TRUST_FEATURES
    >>> m = RefitTrustModel(every=50, window=100)
    >>> good = {k: 0.0 for k in TRUST_FEATURES} | {"carts": 1.0}
    >>> bad = {k: 0.0 for k in TRUST_FEATURES} | {"rage_click": 1.0}
    >>> for _ in range(100):
    ...     _ = m.learn_session([good], True), m.learn_session([bad], False)
    >>> m.refits, m.predict(good) > 0.8 > 0.2 > m.predict(bad), m.serving
    (4, True, 'linear')
    """

    kind: ClassVar[str] = "refit-linear"
    uses_forest: ClassVar[bool] = False

    def __init__(
        self,
        drop_quantile: float = 0.98,
        seed: int = 42,
        *,
        window: int = REFIT_WINDOW_SESSIONS,
        every: int = REFIT_EVERY_SESSIONS,
        epochs: int = REFIT_EPOCHS,
    ) -> None:
        super().__init__(drop_quantile, seed)
        self.forest = None  # type: ignore[assignment]  # linear only: never learns or serves
        self.every = every
        self.epochs = epochs
        #: (converted, the float32 snapshots the linear learner learned) per session
        self.window: deque[tuple[bool, list[array[float]]]] = deque(maxlen=window)
        self.rng = random.Random(seed)
        self.refits = 0

    def learn_session(self, snapshots: list[dict[str, float]], converted: bool) -> list[float]:
        scores = super().learn_session(snapshots, converted)
        if snapshots:
            vectors = [
                array("f", [x[name] for name in TRUST_FEATURES])
                for x in _evenly(snapshots, LINEAR_SNAPSHOTS)
            ]
            self.window.append((converted, vectors))
        if self.closed % self.every == 0 and 2 * len(self.window) >= (self.window.maxlen or 0):
            self.refit()
        return scores

    def refit(self) -> None:
        """Rebuild the linear learner from the window's snapshots alone."""
        items = [(vector, converted) for converted, vectors in self.window for vector in vectors]
        model = make_trust_model()
        for _ in range(self.epochs):
            self.rng.shuffle(items)
            for vector, converted in items:
                model.learn_one(dict(zip(TRUST_FEATURES, vector, strict=True)), converted)
        self.model = model
        self._compiled_at = -1  # the folded scoring terms are of the old model
        self.refits += 1

    @property
    def learner_auc(self) -> dict[str, float]:
        """Progressive ROC-AUC of its one learner (``linear``)."""
        return {"linear": float(self.linear_auc_metric.get())}

    def serving_copy(self) -> TrustModel:
        """Scores as this model does, without the window (only refits need it)."""
        clone = super().serving_copy()
        assert isinstance(clone, RefitTrustModel)
        clone.window = deque(maxlen=self.window.maxlen)
        return clone


#: The challengers :class:`~detectors.config.DetectorConfig.trust_challenger` names.
CHALLENGERS: dict[str, type[TrustModel]] = {
    "refit-linear": RefitTrustModel,
}


@dataclass(frozen=True, slots=True)
class Promotion:
    """One swap: after ``closed`` sessions, ``promoted`` (a learner
    :attr:`~detectors.trust.TrustModel.kind`) replaced ``demoted``, with
    these AUCs over the window."""

    closed: int
    promoted: str
    demoted: str
    promoted_auc: float
    demoted_auc: float


class Arena:
    """Runs a challenger next to the champion and promotes it on evidence.

    ``window_sessions``: the sessions compared (the most recent);
    ``margin``: the smallest AUC lead (absolute, in [0, 1]) a promotion needs;
    ``z``: standard errors of the AUC difference the lead must also clear;
    ``check_sessions``: closed sessions between comparisons.
    """

    def __init__(
        self,
        challenger: TrustModel,
        window_sessions: int = 1000,
        margin: float = 0.02,
        check_sessions: int = 50,
        z: float = PROMOTION_Z,
    ) -> None:
        self.challenger = challenger
        self.margin = margin
        self.z = z
        self.check_sessions = check_sessions
        #: per session: outcome, champion's and challenger's scores of its snapshots
        self.window: deque[tuple[bool, array[float], array[float]]] = deque(
            maxlen=window_sessions
        )
        self.sessions = 0
        self.promotions: deque[Promotion] = deque(maxlen=PROMOTIONS_KEPT)
        self.promoted_total = 0
        #: the last comparison: (champion AUC, challenger AUC), ``None`` before one
        self.last: tuple[float, float] | None = None
        #: the lead the last comparison required (:meth:`bar`)
        self.last_bar: float | None = None

    def learn(
        self, champion: TrustModel, snapshots: list[dict[str, float]], converted: bool
    ) -> TrustModel:
        """Both learn one closed session (each predicts it first); returns
        the champion from now on: ``champion``, or the challenger promoted
        (the demoted champion then learns on as the challenger)."""
        ours = champion.learn_session(snapshots, converted)
        theirs = self.challenger.learn_session(snapshots, converted)
        if ours:
            self.window.append((converted, array("f", ours), array("f", theirs)))
        self.sessions += 1
        if self.sessions % self.check_sessions or len(self.window) < (self.window.maxlen or 0):
            return champion
        aucs = self.window_auc()
        if aucs is None:
            return champion
        self.last = aucs
        ours_auc, theirs_auc = aucs
        self.last_bar = bar = self.bar(ours_auc)
        if theirs_auc - ours_auc < bar:
            return champion
        promoted = self.challenger
        self.promotions.append(
            Promotion(champion.closed, promoted.kind, champion.kind, theirs_auc, ours_auc)
        )
        self.promoted_total += 1
        self.challenger = champion
        self.window.clear()  # the next promotion needs a full window of its own
        self.last = self.last_bar = None
        return promoted

    def bar(self, champion_auc: float) -> float:
        """The lead a promotion needs over the current window: ``margin``,
        or ``z`` standard errors of the AUC difference if more."""
        converted = sum(1 for c, _, _ in self.window if c)
        if not 0 < converted < len(self.window):
            return math.inf  # one outcome only: no evidence either way
        se = auc_standard_error(champion_auc, converted, len(self.window) - converted)
        return max(self.margin, self.z * se * math.sqrt(2.0 - 2.0 * AUC_CORRELATION))

    def window_auc(self) -> tuple[float, float] | None:
        """(champion, challenger) ROC-AUC over the window's snapshots, or
        ``None`` with too few sessions of either outcome."""
        converted = sum(1 for c, _, _ in self.window if c)
        if too_few_outcomes(converted, len(self.window) - converted):
            return None
        labels: list[bool] = []
        ours: list[float] = []
        theirs: list[float] = []
        for c, a, b in self.window:
            labels.extend([c] * len(a))
            ours.extend(a)
            theirs.extend(b)
        a_auc, b_auc = roc_auc(ours, labels), roc_auc(theirs, labels)
        if a_auc is None or b_auc is None:
            return None
        return a_auc, b_auc


def configure_arena(arena: Arena | None, config: DetectorConfig) -> Arena | None:
    """An arena restored from a published version, under the settings now
    in force: ``none`` drops it, a missing one is made, and the margin and
    window come from ``config`` (a smaller window keeps its newest sessions).

    >>> configure_arena(None, DetectorConfig(trust_challenger="none")) is None
    True
    >>> configure_arena(None, DetectorConfig(challenger_margin=0.05)).margin
    0.05
    """
    if config.trust_challenger == "none":
        return None
    if arena is None:
        return make_arena(config)
    arena.margin = config.challenger_margin
    if arena.window.maxlen != config.challenger_window_sessions:
        arena.window = deque(arena.window, maxlen=config.challenger_window_sessions)
    return arena


def make_arena(config: DetectorConfig) -> Arena | None:
    """The arena :attr:`DetectorConfig.trust_challenger` asks for (``None``: "none")."""
    if config.trust_challenger == "none":
        return None
    kind = CHALLENGERS[config.trust_challenger]
    return Arena(
        kind(config.trust_drop_quantile, seed=config.seed),
        window_sessions=config.challenger_window_sessions,
        margin=config.challenger_margin,
    )
