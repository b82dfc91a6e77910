"""Holdout assignment and the uplift interval (``detectors.uplift``), without I/O."""

from __future__ import annotations

import random

import pytest

from detectors.uplift import (
    CONTROL,
    TREATED,
    UpliftTracker,
    newcombe_interval,
    treatment_of,
)


def test_the_holdout_share_is_met_and_stable() -> None:
    ids = [f"session-{i}" for i in range(20_000)]
    control = [s for s in ids if treatment_of(s, "salt", 0.1) == CONTROL]
    # binomial(20000, 0.1): sd 42; 5 sd either way
    assert abs(len(control) - 2000) < 215
    assert all(treatment_of(s, "salt", 0.1) == CONTROL for s in control)
    other_salt = {s for s in ids if treatment_of(s, "other", 0.1) == CONTROL}
    assert len(other_salt & set(control)) < 400  # independent under another salt (~200)


@pytest.mark.parametrize("effect", [0.0, 0.08])
def test_the_interval_covers_a_known_effect_about_95_percent_of_the_time(effect: float) -> None:
    rng = random.Random(7)
    base, trials, covered = 0.2, 400, 0
    for _ in range(trials):
        n_t, n_c = 900, 100  # a 10% holdout
        x_t = sum(rng.random() < base + effect for _ in range(n_t))
        x_c = sum(rng.random() < base for _ in range(n_c))
        _, lo, hi = newcombe_interval(x_t, n_t, x_c, n_c)
        covered += lo <= effect <= hi
    # nominal 95%; Newcombe reports 93-96% for his method 10; 400 trials: sd ~1.1 points
    assert 0.91 <= covered / trials <= 0.99


def test_no_figure_below_the_minimum_sample() -> None:
    tracker = UpliftTracker(min_sessions=30)
    for i in range(29):
        tracker.closed(CONTROL, i % 3 == 0, {("all", "")})
        tracker.closed(TREATED, i % 2 == 0, {("all", ""), ("kind", "trust_loss")})
    assert tracker.uplift("all", "").difference is None
    tracker.closed(CONTROL, False, {("all", "")})
    tracker.closed(TREATED, True, {("all", "")})
    figure = tracker.uplift("all", "")
    assert figure.shown and figure.treated.sessions == figure.control.sessions == 30
    assert figure.lower is not None and figure.upper is not None
    assert figure.lower < figure.difference < figure.upper  # type: ignore[operator]
    assert not tracker.uplift("kind", "trust_loss").shown  # no control session of that kind


def test_edge_counts_stay_inside_minus_one_and_one() -> None:
    d, lo, hi = newcombe_interval(10, 10, 0, 10)
    assert d == 1.0 and 0.0 < lo < 1.0 and hi == 1.0
    with pytest.raises(ValueError):
        newcombe_interval(1, 0, 1, 1)
