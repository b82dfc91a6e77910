"""Alert policy: which of the alerts the rules raised go out.

The rules (:mod:`detectors.rules`) say when a session looks in trouble; the
policy says whether anyone is told. A session gets no alert after it closed,
at most ``max_alerts_per_session``, and none of a kind within
``cooldown_ms`` of the last; and marketing ops' alert budget, token buckets
shared by all sessions of a detector, one per alert family, caps the rate
of all session alerts. The budget's state lives in the checkpointed models
(:class:`AlertBudget`), the rest in the session state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from detectors.alerts import Alert
from detectors.config import DetectorConfig
from detectors.session import SessionState

#: The alert families that share the budget, by rule: friction piling up
#: (a fact on the page), the trust model's rules, and hesitation.
FAMILIES: tuple[str, ...] = ("friction", "trust", "hesitation")
FAMILY_OF_RULE: dict[str, str] = {
    "friction_pileup": "friction",
    "trust_drop": "trust",
    "trust_floor": "trust",
    "hst_quantile": "hesitation",
    "leave_hazard": "hesitation",
}

#: Index of each session alert kind in ``SessionState.episodes`` and
#: ``SessionState.last_alert``.
KIND_SLOT: dict[str, int] = {"hesitation": 0, "trust_loss": 1}


@dataclass(slots=True)
class AlertBudget:
    """Token buckets of the alert budget (``alert_budget_per_1000``: session
    alerts per 1000 sessions, every family included), one per family of
    :data:`FAMILIES` with an equal share, so one family cannot starve another.

    Each bucket earns ``share * per_1000 / 1000`` tokens per new session up to
    a capacity of ``share * per_1000``, and starts with a tenth of that. An
    alert spends a token of its family's bucket; when that is empty it may
    borrow from the fullest other bucket, but only while that one stays above
    half its capacity: traffic that needs no alerts of a kind lends its
    share, traffic that does keeps half of it. Over any long stretch the
    families together spend at most ``per_1000`` per 1000 sessions (plus the
    capacity held at the start). ``suppressed`` counts the alerts held back.

    >>> budget = AlertBudget.start(30.0)
    >>> budget.tokens
    [1.0, 1.0, 1.0]
    >>> budget.earn(30.0); budget.tokens
    [1.01, 1.01, 1.01]
    >>> [budget.spend(30.0, "friction") for _ in range(3)], budget.suppressed
    ([True, False, False], 2)
    >>> budget.tokens = [0.0, 9.0, 1.0]  # trust's bucket is nearly full: it lends
    >>> budget.spend(30.0, "friction"), budget.tokens
    (True, [0.0, 8.0, 1.0])
    """

    tokens: list[float]
    suppressed: int = 0

    @classmethod
    def start(cls, per_1000: float) -> AlertBudget:
        """Fresh buckets: a tenth of their capacity each."""
        return cls([per_1000 / len(FAMILIES) / 10.0] * len(FAMILIES))

    def earn(self, per_1000: float) -> None:
        """Credit one new session (a no-op when the budget is disabled, 0)."""
        if per_1000 > 0:
            capacity = per_1000 / len(FAMILIES)
            step = capacity / 1000.0
            self.tokens = [min(round(t + step, 9), capacity) for t in self.tokens]

    def spend(self, per_1000: float, family: str) -> bool:
        """Take a token for one alert of ``family``: False (and one more
        suppressed alert) when neither its bucket nor a lender has one; True
        when the budget is off."""
        if per_1000 <= 0:
            return True
        tokens = self.tokens
        own = FAMILIES.index(family)
        if tokens[own] >= 1.0:
            tokens[own] -= 1.0
            return True
        half = per_1000 / len(FAMILIES) / 2.0
        lender = max(range(len(tokens)), key=tokens.__getitem__)
        if lender != own and tokens[lender] - 1.0 >= half:
            tokens[lender] -= 1.0
            return True
        self.suppressed += 1
        return False


def admit(
    config: DetectorConfig, state: SessionState, budget: AlertBudget, alert: Alert, ts: int
) -> Alert | None:
    """The alert as it goes out, with its episode number (the count of this
    kind's alerts for the session, which makes its id), or ``None`` when the
    policy suppresses it. ``ts`` is the event time (epoch ms) of the decision.
    """
    if state.outcome is not None or state.n_alerts >= config.max_alerts_per_session:
        return None
    slot = KIND_SLOT[alert.kind]
    last = state.last_alert[slot]
    if last and ts - last < config.cooldown_ms:
        return None
    if not budget.spend(config.alert_budget_per_1000, FAMILY_OF_RULE[alert.rule]):
        return None
    state.episodes[slot] += 1
    state.last_alert[slot] = ts
    state.n_alerts += 1
    return replace(alert, episode=state.episodes[slot])
