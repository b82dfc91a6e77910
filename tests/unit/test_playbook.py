"""The playbook: the action fits the cause and the stage (and the page type
where it matters), and a bad playbook or page-pattern list is refused with a
message that names the problem."""

from __future__ import annotations

import re
from typing import Any

import pytest

from detectors.alerts import ALERT_KINDS
from detectors.config import (
    ANSWER_PAGES,
    CAUSES,
    DEFAULT_PAGE_PATTERNS,
    DEFAULT_PLAYBOOK,
    DetectorConfig,
    validate_page_patterns,
    validate_playbook,
)
from detectors.detector import Detector
from detectors.explain import hesitation_cause, session_alert
from detectors.models import DetectorModels
from detectors.signals import SIGNAL_REGISTRY
from tests.builders import Driver, event

CFG = DetectorConfig()


def friction_action(page: str, etype: str, **props: Any) -> str:
    """The action of the friction alert four ``etype`` events raise on ``page``."""
    d = Driver()
    d.send("page_view", 0, page)
    for t in (1000, 5000, 9000, 13000):
        d.send(etype, t, **props)
    (alert,) = d.alerts("trust_loss")
    return str(alert.suggested_action)


def test_a_broken_button_on_a_product_page_goes_to_the_page_owners() -> None:
    action = friction_action("/products/7", "click", x=5, y=5, target="button#add", dead=True)
    assert action == DEFAULT_PLAYBOOK["trust_loss/broken_element/*"]
    assert "FAQ" not in action


def test_a_broken_checkout_element_is_fixed_and_the_buyer_helped_meanwhile() -> None:
    action = friction_action("/checkout", "click", x=5, y=5, target="button#pay", dead=True)
    assert action == DEFAULT_PLAYBOOK["trust_loss/broken_element/decide"]


def test_form_trouble_gets_form_help() -> None:
    action = friction_action("/checkout", "form_error", field="card")
    assert action == DEFAULT_PLAYBOOK["trust_loss/form_trouble/*"]


def test_slow_pages_go_to_the_page_owners() -> None:
    d = Driver()
    for i, page in enumerate(["/products/1", "/products/2", "/products/3", "/products/4"]):
        d.send("page_view", 1000 * i, page, load_ms=4500)
    (alert,) = d.alerts("trust_loss")
    assert alert.reasons[0].text == "4 slow page loads this session (typical: 0)"
    assert alert.suggested_action == DEFAULT_PLAYBOOK["trust_loss/slow_page/*"]


@pytest.mark.parametrize("page", ["/shipping", "/returns", "/faq"])
def test_hesitation_on_an_answer_page_is_answered_there(page: str) -> None:
    d = Driver()
    d.send("page_view", 0, page)
    assert d.state is not None and d.state.page_type in ANSWER_PAGES
    alert = session_alert(
        CFG, DetectorModels(CFG), "hesitation", d.state, event("scroll", 1000), "hst_quantile",
        hesitation_cause(d.state), (0.9, 0.8, 1.5), [],
    )  # fmt: skip
    assert alert.suggested_action == DEFAULT_PLAYBOOK["hesitation/unanswered_question/*"]
    assert "comparison guide" not in alert.suggested_action


def test_hesitation_while_comparing_gets_a_comparison_guide() -> None:
    d = Driver()
    d.send("page_view", 0, "/compare")
    assert d.state is not None
    alert = session_alert(
        CFG, DetectorModels(CFG), "hesitation", d.state, event("scroll", 1000), "hst_quantile",
        hesitation_cause(d.state), (0.9, 0.8, 1.5), [],
    )  # fmt: skip
    assert alert.suggested_action == "offer a comparison guide"


def test_every_signal_cause_and_every_default_key_is_known() -> None:
    assert {spec.cause for spec in SIGNAL_REGISTRY} <= set(CAUSES)
    assert validate_playbook(DEFAULT_PLAYBOOK) == DEFAULT_PLAYBOOK
    assert validate_page_patterns(DEFAULT_PAGE_PATTERNS) == DEFAULT_PAGE_PATTERNS
    for kind in ALERT_KINDS:
        assert f"{kind}/*" in DEFAULT_PLAYBOOK


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nudge/*": "x"}, "unknown alert kind 'nudge'"),
        ({"trust_loss/decide": "x"}, "write kind/cause/stage (e.g. 'trust_loss/*/decide')"),
        ({"trust_loss/typo/*": "x"}, "unknown cause 'typo'"),
        ({"trust_loss/*/checkout": "x"}, "unknown stage 'checkout'"),
        ({"trust_loss/*/*": "x"}, "write kind/cause/stage or kind/*"),
        ({"trust_loss/a/b/c": "x"}, "write kind/cause/stage or kind/*"),
        ({"hesitation/*": " "}, "must be a non-empty action text"),
    ],
)
def test_a_bad_playbook_key_is_named(change: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_playbook({**DEFAULT_PLAYBOOK, **change})


@pytest.mark.parametrize("kind", ALERT_KINDS)
def test_every_kind_needs_its_fallback(kind: str) -> None:
    book = {k: v for k, v in DEFAULT_PLAYBOOK.items() if k != f"{kind}/*"}
    with pytest.raises(ValueError, match=f"no fallback '{kind}/\\*'"):
        validate_playbook(book)


def test_the_detector_refuses_a_bad_playbook_or_page_pattern() -> None:
    with pytest.raises(ValueError, match="no fallback 'friction_hotspot/"):
        Detector(DetectorConfig(playbook={"hesitation/*": "a", "trust_loss/*": "b"}))
    with pytest.raises(ValueError, match=r"page_patterns\[1\]: 'till' is not a page type"):
        Detector(DetectorConfig(page_patterns=(("/cart", "cart"), ("/kasse", "till"))))


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ([["/kasse(", "checkout"]], r"page_patterns\[0\]: '/kasse\(' is not a regex"),
        ([["/a", "cart"], ["/kasse", "till"]], r"page_patterns\[1\]: 'till' is not a page type"),
        ([["/kasse"]], r"page_patterns\[0\]: \['/kasse'\] is not a \[regex, page_type\] pair"),
        (["/kasse"], r"page_patterns\[0\]: '/kasse' is not a \[regex, page_type\] pair"),
    ],
)
def test_bad_page_patterns_are_named(patterns: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_page_patterns(patterns)  # type: ignore[arg-type]


def test_page_patterns_from_json_become_pairs() -> None:
    assert validate_page_patterns([["/kasse", "checkout"]]) == (("/kasse", "checkout"),)
