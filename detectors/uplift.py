"""Holdout groups and the measured uplift of interventions.

A share of sessions (``holdout_share``, 10% by default) is put in a control
group by a salted hash of the session id: deterministic (every worker, the
replay and the page agree without talking), uniform, and not guessable from
the id without the salt. Control sessions get alerts like any other, marked
``treatment: "control"``, and nothing acts on them; the difference in
conversion between alerted treated and alerted control sessions is the
uplift of acting on the alerts.

The interval of a difference of two proportions is Newcombe's hybrid score
interval (his method 10), built from the two Wilson score intervals: it
stays inside [-1, 1], behaves at 0 or n successes, and keeps close to its
nominal coverage at the small samples a holdout produces, where the Wald
interval does not.

References
----------
Newcombe (1998), "Interval estimation for the difference between independent
proportions: comparison of eleven methods", Statistics in Medicine 17.
Wilson (1927), "Probable inference, the law of succession, and statistical
inference", JASA 22.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from detectors.session import SessionState

#: Treatment labels carried by alerts.
TREATED = "treated"
CONTROL = "control"
#: Alerted sessions each group needs before an uplift is shown ("n/a"
#: below). Newcombe's interval keeps its coverage at small samples, but a
#: difference of a few dozen sessions is too wide to act on; 30 is the usual
#: floor of a two-proportion comparison.
UPLIFT_MIN_SESSIONS = 30
#: The normal quantile of a two-sided 95% interval.
Z95 = 1.959963984540054


def treatment_of(session_id: str, salt: str, holdout_share: float) -> str:
    """``"control"`` for a ``holdout_share`` (0-1) of sessions, else ``"treated"``.

    The session id's HMAC-SHA256 under ``salt``, read as a number in [0, 1),
    decides; the same session always gets the same answer.

    >>> treatment_of("s-1", "salt", 0.0), treatment_of("s-1", "salt", 1.0)
    ('treated', 'control')
    >>> treatment_of("s-1", "salt", 0.5) == treatment_of("s-1", "salt", 0.5)
    True
    """
    digest = hmac.new(salt.encode(), session_id.encode(), hashlib.sha256).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return CONTROL if position < holdout_share else TREATED


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion (0-1); (0, 1) when ``n`` is 0.

    0 of 10: 0 to 0.2775 (Newcombe 1998, single-proportion table).

    >>> [round(v, 4) for v in wilson_interval(0, 10)]
    [0.0, 0.2775]
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(
    x1: int, n1: int, x2: int, n2: int, z: float = Z95
) -> tuple[float, float, float]:
    """(difference, lower, upper) of ``x1/n1 - x2/n2`` with Newcombe's hybrid
    score interval (method 10 of Newcombe 1998; his example 56/70 - 48/80 has
    the interval 0.0524 to 0.3339).

    >>> [round(v, 4) for v in newcombe_interval(56, 70, 48, 80)]
    [0.2, 0.0524, 0.3339]
    """
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both groups need at least one session")
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lower), min(1.0, upper)


@dataclass
class Arm:
    """Alerted sessions of one group, and how many of them converted."""

    sessions: int = 0
    converted: int = 0

    @property
    def rate(self) -> float | None:
        return self.converted / self.sessions if self.sessions else None


@dataclass(frozen=True)
class Uplift:
    """The measured uplift of one slice (all alerts, a kind, or an action)."""

    treated: Arm
    control: Arm
    difference: float | None
    lower: float | None
    upper: float | None

    @property
    def shown(self) -> bool:
        """Whether both groups reached the minimum sample size."""
        return self.difference is not None


@dataclass
class UpliftTracker:
    """Outcomes of alerted sessions per treatment, overall and by slice.

    The unit is an alerted visit (a closed session; a session id seen again
    after its timeout is a new visit, in the same group), counted in "all"
    and in the kind and action of its *first* alert: later alerts may follow
    help shown to treated visits only, so slicing by them would compare
    unlike groups. Its outcome is added when it closes (:meth:`closed`).
    ``min_sessions``: the smallest group for which a difference is given
    (below it: ``None``, "n/a" in reports).
    """

    min_sessions: int = UPLIFT_MIN_SESSIONS
    arms: dict[tuple[str, str], dict[str, Arm]] = field(default_factory=dict)

    def closed(self, treatment: str, converted: bool, slices: set[tuple[str, str]]) -> None:
        """Add a closed session that was alerted in ``slices`` ((dimension,
        value) pairs, e.g. ("kind", "trust_loss"), ("all", "")) to its group."""
        for key in slices:
            arm = self.arms.setdefault(key, {TREATED: Arm(), CONTROL: Arm()})[treatment]
            arm.sessions += 1
            arm.converted += int(converted)

    def closed_state(self, state: SessionState, salt: str, holdout_share: float) -> None:
        """Add a closed session (its group from ``salt`` and ``holdout_share``,
        as the policy assigned it) if it was alerted; others are ignored."""
        if state.outcome is None or not state.alert_marks:
            return
        treatment = treatment_of(state.sid, salt, holdout_share)
        self.closed(treatment, state.outcome == "converted", slices_of(state.alert_marks))

    def uplift(self, dimension: str, value: str) -> Uplift:
        arms = self.arms.get((dimension, value), {TREATED: Arm(), CONTROL: Arm()})
        treated, control = arms[TREATED], arms[CONTROL]
        if min(treated.sessions, control.sessions) < self.min_sessions:
            return Uplift(treated, control, None, None, None)
        d, lo, hi = newcombe_interval(
            treated.converted, treated.sessions, control.converted, control.sessions
        )
        return Uplift(treated, control, d, lo, hi)

    def slices(self) -> list[tuple[str, str]]:
        return sorted(self.arms)

    def rows(self) -> list[dict[str, object]]:
        """Every slice's groups and uplift, JSON-ready (rounded to 4 places;
        ``None`` below :attr:`min_sessions`): what reports and the console show."""
        out: list[dict[str, object]] = []
        for dimension, value in self.slices():
            u = self.uplift(dimension, value)
            out.append(
                {
                    "dimension": dimension,
                    "value": value,
                    "treated": {"sessions": u.treated.sessions, "converted": u.treated.converted},
                    "control": {"sessions": u.control.sessions, "converted": u.control.converted},
                    "difference": _rounded(u.difference),
                    "lower": _rounded(u.lower),
                    "upper": _rounded(u.upper),
                    "min_sessions": self.min_sessions,
                }
            )
        return out


def slices_of(marks: Iterable[str]) -> set[tuple[str, str]]:
    """The uplift slices of a session's alert marks ("kind/action", see
    :func:`detectors.policy.alert_mark`): all alerts, each kind, each action.

    >>> sorted(slices_of(["trust_loss/offer chat"]))
    [('action', 'offer chat'), ('all', ''), ('kind', 'trust_loss')]
    """
    out = {("all", "")}
    for mark in marks:
        kind, _, action = mark.partition("/")
        out.add(("kind", kind))
        out.add(("action", action))
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
