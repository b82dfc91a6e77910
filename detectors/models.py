"""The shared online models of a detector, and their snapshot format.

One :class:`DetectorModels` is shared by every session a detector sees. It
holds two kinds of state:

* the **learned** models (:data:`LEARNED`): the trust model, the leave
  hazard, the hesitation anomaly model and the per-signal baselines (mean
  count per closed session). They change only in :meth:`DetectorModels.learn`,
  from the :class:`~detectors.training.Example` of a closed session; scoring
  reads them and changes nothing. Offline they learn at each close; in a
  deployment the trainer learns them from the training topic and publishes
  versions (:meth:`DetectorModels.dumps_learned`), which the workers adopt
  between batches (:meth:`DetectorModels.adopt`);
* the **local** state of one detector: the hotspot monitor (page leaves, in
  event time, raise incidents at once) and the alert budget's token buckets.

Both are bounded in memory and pickle with a version header.
"""

from __future__ import annotations

import pickle
from importlib.metadata import version

from river import stats

from detectors.challenger import Arena, make_arena
from detectors.config import DetectorConfig
from detectors.features import vector_to_features
from detectors.hesitation import HesitationModel, LeaveHazard, moment_features, moment_stage
from detectors.hotspots import HotspotMonitor
from detectors.policy import AlertBudget
from detectors.signals import SIGNALS
from detectors.training import Example
from detectors.trust import TrustModel
from detectors.uplift import UpliftTracker, slices_of

MODEL_FORMAT = 4
RIVER_VERSION = version("river")
MODEL_NAME = "trust-arf+lr.v3+refit.v1+hazard-lr.v2+hst.v2+adwin.v1"
#: The attributes of :class:`DetectorModels` that :meth:`~DetectorModels.learn`
#: changes and a published version carries (``arena``: the trust challenger
#: and its comparison, which only the trainer needs; a serving version
#: carries ``None``).
LEARNED = ("trust", "hazard", "hesitation", "signal_means", "arena", "uplift")
#: The attributes that stay with one detector (a worker's partition): its
#: checkpoint (:meth:`DetectorModels.dumps_local`).
LOCAL = ("hotspots", "budget")


def _check_header(header: object) -> None:
    if not isinstance(header, dict):
        raise ValueError("not a model snapshot")
    if header.get("format") != MODEL_FORMAT or header.get("name") != MODEL_NAME:
        raise ValueError(f"incompatible model snapshot {header!r}")
    if header.get("river") != RIVER_VERSION:
        raise ValueError(
            f"snapshot made with River {header.get('river')}, running {RIVER_VERSION}"
        )


class DetectorModels:
    """The shared online models, bounded in memory and picklable.

    ``signal_means[i]`` is the mean count of signal ``SIGNALS[i]`` per closed
    session (the "typical" of alert reasons); ``budget`` is the alert budget's
    token bucket.

    >>> m = DetectorModels(DetectorConfig())
    >>> DetectorModels.loads(m.dumps()).trust.closed
    0
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.hesitation = HesitationModel(config)
        self.hazard = LeaveHazard(config.hesitation_horizon_ms, config.hesitation_hazard_quantile)
        self.trust: TrustModel = TrustModel(config.trust_drop_quantile, seed=config.seed)
        #: the trust challenger (:mod:`detectors.challenger`); ``trust`` is the champion
        self.arena: Arena | None = make_arena(config)
        self.hotspots = HotspotMonitor(config)
        self.signal_means = [stats.Mean() for _ in SIGNALS]
        self.budget = AlertBudget.start(config.alert_budget_capacities)
        #: outcomes of alerted sessions by holdout group (the uplift of
        #: interventions), learned from the examples like the models
        self.uplift = UpliftTracker()
        #: the published version adopted (``None``: learned here)
        self.tag: str | None = None

    @property
    def suppressed_by_budget(self) -> int:
        """Session alerts the budget held back since the models were made."""
        return self.budget.suppressed

    @property
    def version(self) -> str:
        """Names the exact model state that made a decision: the published
        version adopted last (see :meth:`adopt`), else the model family plus
        the number of sessions learned."""
        return self.tag or f"{MODEL_NAME}@{self.trust.closed}"

    @property
    def examples(self) -> int:
        """Closed sessions learned (:meth:`learn` calls)."""
        return self.trust.closed

    def learn(self, example: Example) -> None:
        """Learn one closed session: its trust snapshots, its hesitation
        moments (the anomaly model and the leave hazard) and its signal
        counts. The only place the learned models change. With a trust
        challenger (:attr:`arena`), both trust learners learn the session and
        the challenger may be promoted to ``trust`` here."""
        converted = example.converted
        snapshots = [vector_to_features(v) for _, v in example.snapshots]
        if self.arena is None:
            self.trust.learn_session(snapshots, converted)
        else:  # the champion after this session: the same, or the challenger promoted
            self.trust = self.arena.learn(self.trust, snapshots, converted)
        for _, vector in example.moments:
            self.hesitation.learn_one(moment_stage(vector), moment_features(vector))
        self.hazard.learn_session(example.moments, converted, example.last_ts)
        for mean, count in zip(self.signal_means, example.signal_counts, strict=False):
            mean.update(count)
        if example.treatment is not None:
            self.uplift.closed(example.treatment, converted, slices_of(example.alert_marks))
        self.tag = None

    def dumps(self) -> bytes:
        """Pickle with a header recording the format and River version."""
        header = {"format": MODEL_FORMAT, "river": RIVER_VERSION, "name": MODEL_NAME}
        return pickle.dumps((header, self), protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(blob: bytes) -> DetectorModels:
        """Inverse of :meth:`dumps`; ``ValueError`` when format or River
        version differ (a River upgrade invalidates checkpoints)."""
        header, models = pickle.loads(blob)
        _check_header(header)
        if not isinstance(models, DetectorModels):
            raise ValueError("checkpoint does not hold DetectorModels")
        if not hasattr(models, "tag"):
            models.tag = None
        if not hasattr(models, "uplift"):  # saved before the uplift was learned
            models.uplift = UpliftTracker()
        return models

    def dumps_learned(self) -> bytes:
        """The learned models only (:data:`LEARNED`), as a published version
        carries them (prepared for scoring, :meth:`TrustModel.prepare`);
        :meth:`adopt` takes them in."""
        self.trust.prepare()
        header = {"format": MODEL_FORMAT, "river": RIVER_VERSION, "name": MODEL_NAME}
        learned = {name: getattr(self, name) for name in LEARNED}
        return pickle.dumps((header, learned), protocol=pickle.HIGHEST_PROTOCOL)

    def dumps_serving(self) -> bytes:
        """:meth:`dumps_learned` without what only learning needs (the trust
        model's River forest, :meth:`TrustModel.serving_copy`): what the
        workers load, several times smaller and faster to unpickle. Scores
        exactly as the learned models do; it cannot learn."""
        header = {"format": MODEL_FORMAT, "river": RIVER_VERSION, "name": MODEL_NAME}
        learned: dict[str, object] = {name: getattr(self, name) for name in LEARNED}
        learned["trust"] = self.trust.serving_copy()
        learned["arena"] = None  # the challenger only learns
        return pickle.dumps((header, learned), protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads_learned(blob: bytes) -> dict[str, object]:
        """Inverse of :meth:`dumps_learned` and :meth:`dumps_serving`
        (``ValueError`` as :meth:`loads`)."""
        header, learned = pickle.loads(blob)
        _check_header(header)
        if isinstance(learned, dict):  # a version published before the uplift was learned
            learned.setdefault("uplift", UpliftTracker())
        if not isinstance(learned, dict) or set(learned) != set(LEARNED):
            raise ValueError("snapshot does not hold the learned models")
        return learned

    def dumps_local(self) -> bytes:
        """The local state only (:data:`LOCAL`): a worker partition's checkpoint."""
        header = {"format": MODEL_FORMAT, "river": RIVER_VERSION, "name": MODEL_NAME}
        local = {name: getattr(self, name) for name in LOCAL}
        return pickle.dumps((header, local), protocol=pickle.HIGHEST_PROTOCOL)

    def restore_local(self, blob: bytes) -> None:
        """Take the local state of :meth:`dumps_local` (``ValueError`` as :meth:`loads`)."""
        header, local = pickle.loads(blob)
        _check_header(header)
        if not isinstance(local, dict) or set(local) != set(LOCAL):
            raise ValueError("checkpoint does not hold the local state")
        for name in LOCAL:
            setattr(self, name, local[name])

    def adopt(self, learned: dict[str, object], tag: str) -> None:
        """Serve the learned models of a published version (from
        :meth:`loads_learned`), named ``tag`` in alerts; the local hotspot
        monitor and alert budget are kept."""
        for name in LEARNED:
            setattr(self, name, learned[name])
        self.tag = tag


def dumps_monitor(monitor: HotspotMonitor) -> bytes:
    """A shared hotspot monitor's checkpoint (one page-visits partition's;
    ~1 KB per page key), with the format header of the model snapshots."""
    header = {"format": MODEL_FORMAT, "river": RIVER_VERSION, "name": MODEL_NAME}
    return pickle.dumps((header, monitor), protocol=pickle.HIGHEST_PROTOCOL)


def loads_monitor(blob: bytes) -> HotspotMonitor:
    """Inverse of :func:`dumps_monitor` (``ValueError`` as :meth:`DetectorModels.loads`).

    >>> config = DetectorConfig()
    >>> loads_monitor(dumps_monitor(HotspotMonitor(config))).keys
    {}
    """
    try:
        header, monitor = pickle.loads(blob)
    except Exception as exc:  # truncated or not a pickle at all
        raise ValueError(f"not a hotspot checkpoint: {exc}") from None
    _check_header(header)
    if not isinstance(monitor, HotspotMonitor):
        raise ValueError("checkpoint does not hold a hotspot monitor")
    return monitor
