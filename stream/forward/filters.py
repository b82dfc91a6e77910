"""Which alerts to send: ``--kind``, ``--severity``, ``--min-severity``,
``--page-type``, and never a holdout control session's unless ``--include-control``.

All given filters must pass. The page type of an alert is ``data.page_type`` when
present, else the first part of the hotspot key (``checkout/2`` -> ``checkout``),
else inferred from ``data.page`` by the core's
:class:`detectors.events.PageClassifier`; ``unknown`` matches alerts without one.
Filtered alerts are committed and counted, not sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from detectors.alerts import ALERT_KINDS, SEVERITIES
from detectors.config import PAGE_TYPES, DetectorConfig
from detectors.events import PageClassifier

#: ``--page-type`` values: the core's page types, and ``unknown`` for alerts
#: whose page type cannot be told.
PAGE_TYPE_CHOICES: tuple[str, ...] = (*PAGE_TYPES, "unknown")
#: low < medium < high, in the core's order.
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}


def default_classifier(config: DetectorConfig | None = None) -> Callable[[str], str | None]:
    """The core's page-type inference (``config.page_patterns``)."""
    return PageClassifier((config or DetectorConfig()).page_patterns).classify


def page_type_of(alert: Mapping[str, Any], classify: Callable[[str], str | None]) -> str | None:
    """Page type of an alert: ``data.page_type``, else the first part of the
    hotspot key (``data.hotspot_key``, or the subject ``hotspot/<key>``), else
    ``classify(data.page)``; ``None`` when none of them tells.

    >>> page_type_of({"subject": "hotspot/cart/1", "data": {}}, lambda page: None)
    'cart'
    """
    data = alert.get("data") or {}
    explicit = data.get("page_type")
    if isinstance(explicit, str) and explicit:
        return explicit
    key = data.get("hotspot_key")
    subject = alert.get("subject")
    if not isinstance(key, str) and isinstance(subject, str) and subject.startswith("hotspot/"):
        key = subject[len("hotspot/") :]
    if isinstance(key, str) and key:
        return key.split("/", 1)[0]
    page = data.get("page")
    if isinstance(page, str) and page:
        return classify(page)
    return None


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to send; empty sets and ``None`` mean "any".

    >>> AlertFilter(min_severity="medium").rejects({"data": {"severity": "low"}}, None)
    'severity'
    """

    kinds: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    min_severity: str | None = None
    page_types: frozenset[str] = frozenset()
    #: send the alerts of control sessions too (``treatment: "control"``);
    #: off, since acting on them spoils the holdout that measures the uplift
    include_control: bool = False

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.kinds, ALERT_KINDS, "kind"),
            (self.severities, SEVERITIES, "severity"),
            (self.page_types, PAGE_TYPE_CHOICES, "page type"),
        ):
            unknown = sorted(set(value) - set(allowed))
            if unknown:
                raise ValueError(f"unknown {what} {', '.join(unknown)} (one of {allowed})")
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.min_severity} (one of {SEVERITIES})")

    def rejects(self, alert: Mapping[str, Any], page_type: str | None) -> str | None:
        """The first criterion ``alert`` fails (``control``, ``kind``,
        ``severity`` or ``page_type``), or ``None`` when it is to be sent.

        >>> AlertFilter().rejects({"data": {"treatment": "control"}}, None)
        'control'
        """
        data = alert.get("data") or {}
        if data.get("treatment") == "control" and not self.include_control:
            return "control"
        if self.kinds and data.get("kind") not in self.kinds:
            return "kind"
        severity = data.get("severity")
        if self.severities and severity not in self.severities:
            return "severity"
        if self.min_severity is not None and SEVERITY_RANK.get(
            str(severity), -1
        ) < SEVERITY_RANK.get(self.min_severity, 0):
            return "severity"
        if self.page_types and (page_type or "unknown") not in self.page_types:
            return "page_type"
        return None
