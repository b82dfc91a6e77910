"""The offline reference (scikit-learn, out of fold) on hand-built sessions."""

from __future__ import annotations

import sys

import pytest

from detectors.config import DetectorConfig
from detectors.events import Event
from detectors.offline.evaluation import Evaluation, evaluate
from detectors.sample_size import MIN_PER_OUTCOME
from stream.offline_reference import NOT_INSTALLED, SKIPPED, add_offline_reference, offline_auc
from tests.builders import event


def sessions(buyers: int, others: int) -> list[Event]:
    """Buyers view 6 products then buy; the others view the home page 3
    times. One session an hour, in event-time order."""
    out = []
    for i in range(buyers + others):
        sid, start = f"s{i}", i * 3_600_000
        if i < buyers:
            out += [
                event("page_view", start + 1000 * k, sid=sid, page=f"/products/{k}")
                for k in range(6)
            ]
            out.append(event("purchase", start + 10_000, sid=sid))
        else:
            out += [event("page_view", start + 1000 * k, sid=sid, page="/") for k in range(3)]
    return out


@pytest.fixture(scope="module")
def separable() -> Evaluation:
    return evaluate(sessions(30, 30), DetectorConfig())


@pytest.fixture(scope="module")
def reference(separable: Evaluation) -> tuple[dict[str, float | None] | None, str | None]:
    return offline_auc(separable)


def test_plain_counts_that_separate_the_outcomes_give_an_auc_of_one(
    reference: tuple[dict[str, float | None] | None, str | None],
) -> None:
    assert reference == ({"0.25": 1.0, "0.5": 1.0, "0.75": 1.0}, None)


def test_too_few_sessions_of_an_outcome_give_none_with_the_reason() -> None:
    auc, reason = offline_auc(evaluate(sessions(3, 30), DetectorConfig()))
    assert auc is None
    assert reason == f"only 3 sessions with a purchase; need {MIN_PER_OUTCOME}"


def test_without_scikit_learn_it_says_to_install_the_bench_extra(
    separable: Evaluation, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn", None)
    assert offline_auc(separable) == (None, NOT_INSTALLED)


def test_add_offline_reference_puts_the_figure_or_its_reason_in_the_summary(
    separable: Evaluation, reference: tuple[dict[str, float | None] | None, str | None]
) -> None:
    summary = separable.summary()
    add_offline_reference(summary, separable)
    assert summary["offline_auc"] == reference[0]  # the same data, the same figure
    assert "offline_auc" not in summary["not_available"]
    skipped = separable.summary()
    add_offline_reference(skipped, separable, skip=True)
    assert skipped["offline_auc"] is None
    assert skipped["not_available"]["offline_auc"] == SKIPPED
