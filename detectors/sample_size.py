"""When is a ranking figure worth printing? Enough sessions of both outcomes.

An ROC-AUC (and a log-loss next to it) from a handful of sessions is noise
printed as a number: four sessions once read "rolling AUC 0.94". Every AUC
the project reports (the evaluation's prefix AUC, the trust model's rolling
AUC, the report's trust-model log-loss) is therefore ``None`` with a reason
until each outcome has :data:`MIN_PER_OUTCOME` sessions.

Where 10 comes from: the standard error of an AUC of 0.8 from n1 = n2 = 10
is 0.10 (Hanley and McNeil's formula), so its 95% interval, 0.6 to 1.0,
just stays clear of chance (0.5). With 5 of each it is 0.15 and the interval
reaches down to 0.51: the figure could hardly tell a useful score from a coin.

References
----------
Hanley and McNeil (1982), "The meaning and use of the area under a receiver
operating characteristic (ROC) curve", Radiology 143(1), 29-36.
"""

from __future__ import annotations

import math

#: Sessions of each outcome (converted, not converted) an AUC needs.
MIN_PER_OUTCOME = 10


def too_few_outcomes(converted: int, other: int, goal: str = "purchase") -> str | None:
    """The reason an AUC over ``converted`` and ``other`` sessions is not
    worth reporting, or ``None`` when both reach :data:`MIN_PER_OUTCOME`.

    ``goal`` names the goal event in the text.

    >>> too_few_outcomes(0, 0)
    'no sessions'
    >>> too_few_outcomes(2, 40)
    'only 2 sessions with a purchase; need 10'
    >>> too_few_outcomes(0, 40, goal="signup")
    'no session with a signup; need 10'
    >>> too_few_outcomes(25, 1)
    'only 1 session without a purchase; need 10'
    >>> too_few_outcomes(10, 10) is None
    True
    """
    if converted + other == 0:
        return "no sessions"
    for count, side in ((converted, "with"), (other, "without")):
        if count == 0:
            return f"no session {side} a {goal}; need {MIN_PER_OUTCOME}"
        if count < MIN_PER_OUTCOME:
            noun = "session" if count == 1 else "sessions"
            return f"only {count} {noun} {side} a {goal}; need {MIN_PER_OUTCOME}"
    return None


def roc_auc(scores: list[float], labels: list[bool]) -> float | None:
    """Exact ROC-AUC (Mann-Whitney U with mid-ranks for ties).

    Returns ``None`` when one class is absent.

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    >>> roc_auc([0.5, 0.5], [False, True])
    0.5
    """
    pos = sum(labels)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mid = (i + j) / 2.0 + 1.0
        rank_sum += mid * sum(1 for k in range(i, j + 1) if labels[order[k]])
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) standard error of an ROC-AUC from
    ``positives`` and ``negatives`` cases (>= 1 each).

    >>> round(auc_standard_error(0.8, 10, 10), 3)
    0.102
    >>> round(auc_standard_error(0.85, 175, 825), 3)
    0.019
    """
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    a2 = auc * auc
    variance = (
        auc * (1.0 - auc) + (positives - 1) * (q1 - a2) + (negatives - 1) * (q2 - a2)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))
