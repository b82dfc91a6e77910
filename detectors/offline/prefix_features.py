"""What a session looked like at each prefix, without the detector: activity
metrics and plain counts.

The evaluation compares the trust score with two things computed on the same
prefixes (the first 25%, 50% and 75% of the events before the goal):

* the **activity metrics** a dashboard shows (events, page views, clicks and
  seconds so far), each read as "more activity, more likely to convert";
* the **plain prefix features** an offline model is trained on (see
  ``stream/offline_reference.py``): events by type, page views by page type,
  duration and distinct pages.

Both come from a :class:`SessionTrace`: one compact array entry per applied
event before the goal (type, page type, time offset, page), a few bytes an
event, so 10,000 sessions of 60 events stay cheap. :class:`TraceRecorder`
fills the traces while the detector runs; :func:`snapshots` reads them.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from detectors.config import PAGE_TYPES
from detectors.events import Event
from detectors.session import TYPE_INDEX, TYPE_ORDER

#: Prefix fractions: the first 25%, 50% and 75% of the events before the goal.
PREFIXES: tuple[float, ...] = (0.25, 0.5, 0.75)
#: Sessions with fewer events before the goal have no meaningful prefixes.
MIN_PREFIX_EVENTS = 3
#: The activity metrics, in report order.
ACTIVITY_METRICS: tuple[str, ...] = ("events", "page_views", "clicks", "seconds")
# the index stored per event is the session state's (detectors.session.TYPE_INDEX)
_TYPE_INDEX = TYPE_INDEX
_PAGE_VIEW = _TYPE_INDEX["page_view"]
_CLICK = _TYPE_INDEX["click"]
#: Page-type slot of a page view without a page type (after :data:`PAGE_TYPES`).
UNKNOWN_PAGE_TYPE = len(PAGE_TYPES)
_PAGE_TYPE_INDEX: dict[str | None, int] = {p: i for i, p in enumerate(PAGE_TYPES)}
#: Stored for events that are not page views: counted in no page-type slot.
_NOT_A_VIEW = -1


def prefix_lengths(n: int) -> tuple[int, ...]:
    """Events in each prefix of a session with ``n`` events before the goal
    (at least 1 each), one per :data:`PREFIXES`.

    >>> prefix_lengths(3), prefix_lengths(10)
    ((1, 2, 3), (3, 5, 8))
    """
    return tuple(max(1, math.ceil(p * n)) for p in PREFIXES)


@dataclass
class SessionTrace:
    """One session's events before its goal, one entry per applied event.

    ``types`` index :data:`TYPE_ORDER`; ``page_types`` index
    :data:`~detectors.config.PAGE_TYPES` for page views
    (:data:`UNKNOWN_PAGE_TYPE` without one) and are -1 for other events;
    ``offsets_ms`` are from the session's first event; ``pages`` are page ids
    interned by the :class:`TraceRecorder` (-1 for an event without a page).
    """

    types: array[int] = field(default_factory=lambda: array("B"))
    page_types: array[int] = field(default_factory=lambda: array("b"))
    offsets_ms: array[int] = field(default_factory=lambda: array("q"))
    pages: array[int] = field(default_factory=lambda: array("l"))
    start_ts: int = 0

    def __len__(self) -> int:
        return len(self.types)


class TraceRecorder:
    """Appends events to traces, interning page strings to small ints.

    >>> from detectors.config import DetectorConfig
    >>> from detectors.events import EventParser
    >>> parse, t0 = EventParser(DetectorConfig()).parse, 1_700_000_000_000
    >>> recorder, trace = TraceRecorder(), SessionTrace()
    >>> for dt, kind, page in [(0, "page_view", "/products/1"), (2, "page_view", "/products/1"),
    ...                        (5, "click", "/cart"), (9, "search", None)]:
    ...     raw = {"session_id": "s", "ts": t0 + 1000 * dt, "type": kind, "page": page}
    ...     recorder.record(trace, parse({k: v for k, v in raw.items() if v is not None}))
    >>> len(trace), list(trace.offsets_ms), list(trace.pages)
    (4, [0, 2000, 5000, 9000], [0, 0, 1, -1])
    >>> half, whole = snapshots(trace, (2, 4))
    >>> half.activity(), whole.activity(), whole.distinct_pages
    ((2.0, 2.0, 0.0, 2.0), (4.0, 2.0, 1.0, 9.0), 2)
    """

    def __init__(self) -> None:
        self._pages: dict[str, int] = {}

    def record(self, trace: SessionTrace, event: Event) -> None:
        """Append ``event`` (an applied event before the goal) to ``trace``."""
        if not trace.types:
            trace.start_ts = event.ts
        type_index = _TYPE_INDEX[event.type]
        trace.types.append(type_index)
        if type_index == _PAGE_VIEW:
            trace.page_types.append(_PAGE_TYPE_INDEX.get(event.page_type, UNKNOWN_PAGE_TYPE))
        else:
            trace.page_types.append(_NOT_A_VIEW)
        trace.offsets_ms.append(event.ts - trace.start_ts)
        page = event.page
        if page is None:
            trace.pages.append(-1)
        else:
            key = self._pages.get(page)
            if key is None:
                key = self._pages[page] = len(self._pages)
            trace.pages.append(key)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A session after its first ``events`` events.

    ``by_type`` counts events per :data:`TYPE_ORDER` index,
    ``views_by_page_type`` page views per page-type slot; ``seconds`` is the
    latest offset from the first event; ``distinct_pages`` counts the pages
    of any event.
    """

    events: int
    by_type: Counter[int]
    views_by_page_type: Counter[int]
    seconds: float
    distinct_pages: int

    def activity(self) -> tuple[float, float, float, float]:
        """The :data:`ACTIVITY_METRICS`: events, page views, clicks, seconds."""
        by_type = self.by_type
        return (float(self.events), float(by_type[_PAGE_VIEW]), float(by_type[_CLICK]),
                self.seconds)  # fmt: skip

    def row(self, goal_event: str) -> list[float]:
        """The plain feature vector, in :func:`feature_names` order."""
        counts = [float(self.by_type[_TYPE_INDEX[t]]) for t in _visitor_types(goal_event)]
        views = [float(self.views_by_page_type[i]) for i in range(UNKNOWN_PAGE_TYPE + 1)]
        return [*counts, *views, self.seconds, float(self.distinct_pages)]


def best_activity(
    activity: dict[str, dict[str, float | None]],
) -> dict[str, dict[str, Any] | None]:
    """The best activity metric per prefix: ``{"metric", "auc"}``, or
    ``None`` when no metric has an AUC (the first metric wins a tie).

    >>> best_activity({"events": {"0.5": 0.6}, "clicks": {"0.5": 0.7}, "seconds": {"0.5": None}})
    {'0.5': {'metric': 'clicks', 'auc': 0.7}}
    """
    best: dict[str, dict[str, Any] | None] = {}
    for metric, per_prefix in activity.items():
        for key, auc in per_prefix.items():
            current = best.setdefault(key, None)
            if auc is not None and (current is None or auc > current["auc"]):
                best[key] = {"metric": metric, "auc": auc}
    return best


def feature_names(goal_event: str) -> list[str]:
    """Names of the columns of :meth:`Snapshot.row`.

    >>> names = feature_names("purchase")
    >>> "events_purchase" in names, names[-2:], len(names)
    (False, ['seconds', 'distinct_pages'], 35)
    """
    counts = [f"events_{t}" for t in _visitor_types(goal_event)]
    views = [f"views_{p}" for p in (*PAGE_TYPES, "unknown")]
    return [*counts, *views, "seconds", "distinct_pages"]


def _visitor_types(goal_event: str) -> list[str]:
    """The event types counted as features: the visitor's own (not the
    page's ``intervention`` acknowledgements), without the goal."""
    return [t for t in TYPE_ORDER if t not in (goal_event, "intervention")]


def snapshots(trace: SessionTrace, lengths: tuple[int, ...]) -> list[Snapshot]:
    """The session after each of ``lengths`` events (each at most ``len(trace)``).

    Counting runs in C (``Counter`` over array slices): the evaluation takes
    three snapshots of every session.
    """
    out = []
    for k in lengths:
        pages = set(trace.pages[:k])
        pages.discard(-1)
        out.append(
            Snapshot(
                events=k,
                by_type=Counter(trace.types[:k]),
                views_by_page_type=Counter(trace.page_types[:k]),
                seconds=max(trace.offsets_ms[:k]) / 1000.0,
                distinct_pages=len(pages),
            )
        )
    return out
