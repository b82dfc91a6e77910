"""Alert policy: which of the alerts the rules raised go out.

The rules (:mod:`detectors.rules`) say when a session looks in trouble; the
policy says whether anyone is told. A session gets no alert after it closed,
at most ``max_alerts_per_session``, and none of a kind within
``cooldown_ms`` of the last; and marketing ops' alert budget, a token bucket
shared by all sessions of a detector, caps the rate of the alerts that are
not :data:`ALWAYS_RULES`. The budget's state lives in the checkpointed
models (:class:`AlertBudget`), the rest in the session state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from detectors.alerts import Alert
from detectors.config import DetectorConfig
from detectors.session import SessionState

#: Rules whose alerts go out whatever the budget (they still spend a token):
#: friction piling up is a fact on the page, not a model's guess.
ALWAYS_RULES: frozenset[str] = frozenset({"friction_pileup"})

#: Index of each session alert kind in ``SessionState.episodes`` and
#: ``SessionState.last_alert``.
KIND_SLOT: dict[str, int] = {"hesitation": 0, "trust_loss": 1}


@dataclass(slots=True)
class AlertBudget:
    """Token bucket of the alert budget (``alert_budget_per_1000``: session
    alerts per 1000 sessions). It earns ``per_1000 / 1000`` tokens per new
    session up to a capacity of ``per_1000`` tokens, starts with a tenth of
    that, and an alert spends one token. ``suppressed`` counts the alerts it
    held back.

    >>> budget = AlertBudget.start(50.0)
    >>> budget.tokens
    5.0
    >>> budget.earn(50.0); budget.tokens
    5.05
    >>> [budget.spend(50.0, always=False) for _ in range(6)]
    [True, True, True, True, True, False]
    >>> budget.spend(50.0, always=True), budget.suppressed
    (True, 1)
    """

    tokens: float
    suppressed: int = 0

    @classmethod
    def start(cls, per_1000: float) -> AlertBudget:
        """A fresh bucket: a tenth of its capacity."""
        return cls(per_1000 / 10.0)

    def earn(self, per_1000: float) -> None:
        """Credit one new session (a no-op when the budget is disabled, 0)."""
        if per_1000 > 0:
            self.tokens = min(self.tokens + per_1000 / 1000.0, per_1000)

    def spend(self, per_1000: float, always: bool) -> bool:
        """Take a token for one alert. False (and one more suppressed alert)
        when none is left, unless ``always``; True when the budget is off."""
        if per_1000 <= 0:
            return True
        if self.tokens < 1.0 and not always:
            self.suppressed += 1
            return False
        self.tokens -= 1.0
        return True


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
    if not budget.spend(config.alert_budget_per_1000, always=alert.rule in ALWAYS_RULES):
        return None
    state.episodes[slot] += 1
    state.last_alert[slot] = ts
    state.n_alerts += 1
    return replace(alert, episode=state.episodes[slot])
