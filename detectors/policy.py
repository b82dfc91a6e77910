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

from collections.abc import Sequence
from dataclasses import dataclass, replace

from detectors.alerts import Alert
from detectors.config import DetectorConfig
from detectors.session import SessionState
from detectors.uplift import treatment_of

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
    :data:`FAMILIES`, so one family cannot starve another.

    ``capacities`` are the families' shares of the budget in alerts per 1000
    sessions (:attr:`detectors.config.DetectorConfig.alert_budget_capacities`,
    equal thirds by default). Each bucket earns ``capacity / 1000`` tokens
    per new session up to ``capacity``, and starts with a tenth of that. An
    alert spends a token of its family's bucket; when that is empty it may
    borrow from the bucket furthest above half its capacity, but only while
    that one stays above half: traffic that needs no alerts of a kind lends
    its share, traffic that does keeps half of it. Over any long stretch the
    families together spend at most the budget (plus the tokens held at the
    start). ``suppressed`` counts the alerts held back.

    >>> thirds = (10.0, 10.0, 10.0)  # friction, trust, hesitation
    >>> budget = AlertBudget.start(thirds)
    >>> budget.tokens
    [1.0, 1.0, 1.0]
    >>> budget.earn(thirds); budget.tokens
    [1.01, 1.01, 1.01]
    >>> [budget.spend(thirds, "friction") for _ in range(3)], budget.suppressed
    ([True, False, False], 2)
    >>> budget.tokens = [0.0, 9.0, 1.0]  # trust's bucket is nearly full: it lends
    >>> budget.spend(thirds, "friction"), budget.tokens
    (True, [0.0, 8.0, 1.0])
    """

    tokens: list[float]
    suppressed: int = 0

    @classmethod
    def start(cls, capacities: Sequence[float]) -> AlertBudget:
        """Fresh buckets: a tenth of their capacity each."""
        return cls([c / 10.0 for c in capacities])

    def earn(self, capacities: Sequence[float]) -> None:
        """Credit one new session (a no-op when the budget is disabled, 0)."""
        if sum(capacities) > 0:
            pairs = zip(self.tokens, capacities, strict=True)
            self.tokens = [min(round(t + c / 1000.0, 9), c) for t, c in pairs]

    def spend(self, capacities: Sequence[float], family: str) -> bool:
        """Take a token for one alert of ``family``: False (and one more
        suppressed alert) when neither its bucket nor a lender has one; True
        when the budget is off."""
        if sum(capacities) <= 0:
            return True
        tokens = self.tokens
        own = FAMILIES.index(family)
        if tokens[own] >= 1.0:
            tokens[own] -= 1.0
            return True
        lender = max(range(len(tokens)), key=lambda i: tokens[i] - capacities[i] / 2.0)
        if lender != own and tokens[lender] - 1.0 >= capacities[lender] / 2.0:
            tokens[lender] -= 1.0
            return True
        self.suppressed += 1
        return False


def admit(
    config: DetectorConfig, state: SessionState, budget: AlertBudget, alert: Alert, ts: int
) -> Alert | None:
    """The alert as it goes out, with its episode number (the count of this
    kind's alerts for the session, which makes its id) and the session's
    holdout group (``extra["treatment"]``: "treated" or "control"), or
    ``None`` when the policy suppresses it: the session is closed, at its
    cap, within the kind's cooldown, within ``intervention_quiet_ms`` of an
    intervention of this kind the page acknowledged, or the budget is spent.
    ``ts`` is the event time (epoch ms) of the decision.
    """
    if state.outcome is not None or state.n_alerts >= config.max_alerts_per_session:
        return None
    slot = KIND_SLOT[alert.kind]
    last = state.last_alert[slot]
    if last and ts - last < config.cooldown_ms:
        return None
    acked = state.acked[slot]
    if acked and ts - acked < config.intervention_quiet_ms:
        return None
    if not budget.spend(config.alert_budget_capacities, FAMILY_OF_RULE[alert.rule]):
        return None
    state.episodes[slot] += 1
    state.last_alert[slot] = ts
    state.n_alerts += 1
    if not state.alert_marks:
        # a session's uplift slice is its first alert's: later ones may follow
        # help shown (treated only), so they would compare unlike groups
        state.alert_marks.append(alert_mark(alert.kind, alert.suggested_action))
    treatment = treatment_of(state.sid, config.holdout_salt, config.holdout_share)
    extra = {**alert.extra, "treatment": treatment}
    return replace(alert, episode=state.episodes[slot], extra=extra)


def alert_mark(kind: str, action: str) -> str:
    """The uplift slice of an alert, as kept in ``SessionState.alert_marks``."""
    return f"{kind}/{action}"


def acknowledge(state: SessionState, kind: str | None, ts: int) -> bool:
    """Note that the page showed the intervention of a ``kind`` alert at
    ``ts`` (epoch ms); False when ``kind`` is not a session alert kind."""
    slot = KIND_SLOT.get(kind or "")
    if slot is None:
        return False
    state.acked[slot] = max(state.acked[slot], ts)
    return True
