"""The shared online models of a detector, and their checkpoint format.

One :class:`DetectorModels` is shared by every session a detector sees:
the hesitation model, the trust model, the hotspot monitor, the per-signal
baselines (mean count per closed session) and the alert budget. It is
bounded in memory and pickles with a version header; the worker checkpoints
it per partition.
"""

from __future__ import annotations

import pickle
from importlib.metadata import version

from river import stats

from detectors.config import DetectorConfig
from detectors.hesitation import HesitationModel, LeaveHazard
from detectors.hotspots import HotspotMonitor
from detectors.policy import AlertBudget
from detectors.signals import SIGNALS
from detectors.trust import TrustModel

MODEL_FORMAT = 2
RIVER_VERSION = version("river")
MODEL_NAME = "trust-arf+lr.v2+hazard-lr.v1+hst.v1+adwin.v1"


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
        self.trust = TrustModel(config.trust_drop_quantile, seed=config.seed)
        self.hotspots = HotspotMonitor(config)
        self.signal_means = [stats.Mean() for _ in SIGNALS]
        self.budget = AlertBudget.start(config.alert_budget_capacities)

    @property
    def suppressed_by_budget(self) -> int:
        """Session alerts the budget held back since the models were made."""
        return self.budget.suppressed

    @property
    def version(self) -> str:
        """Model family plus the number of sessions learned: names the exact
        model state that made a decision."""
        return f"{MODEL_NAME}@{self.trust.closed}"

    def dumps(self) -> bytes:
        """Pickle with a header recording the format and River version."""
        header = {"format": MODEL_FORMAT, "river": RIVER_VERSION, "name": MODEL_NAME}
        return pickle.dumps((header, self), protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(blob: bytes) -> DetectorModels:
        """Inverse of :meth:`dumps`; ``ValueError`` when format or River
        version differ (a River upgrade invalidates checkpoints)."""
        header, models = pickle.loads(blob)
        if header.get("format") != MODEL_FORMAT or header.get("name") != MODEL_NAME:
            raise ValueError(f"incompatible model checkpoint {header!r}")
        if header.get("river") != RIVER_VERSION:
            raise ValueError(
                f"checkpoint made with River {header.get('river')}, running {RIVER_VERSION}"
            )
        if not isinstance(models, DetectorModels):
            raise ValueError("checkpoint does not hold DetectorModels")
        return models
