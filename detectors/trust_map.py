"""Where a session's trust was won or lost, and its score at its middle.

The console's "where trust is won or lost" and "can the score be believed"
panels are built from closed sessions. A deployment's console sees a closed
session only as the :class:`~detectors.training.Example` a worker sends to
the trainer, so what those panels need is gathered in the session state as
the session runs (:func:`mark_step`) and travels in the example
(:func:`prefix_of`). The embedded demo reads the same marks from the state,
so both consoles compute the same figures the same way.

* **Trust marks.** For every key a session hits (its journey stage and page
  type at each step, and each friction signal that fired; read as
  ``"stage:decide"``, ``"page_type:product"``, ``"signal:dead_click"``):
  its occurrences (page views, or signal firings), the sum of the trust
  score's changes at the scored steps on that page or where the signal
  fired, and how many such steps there were. At most
  :data:`TRUST_MARKS_CAP` keys (the 6 stages, 17 page types and 9 signals of
  the default configuration are 32).
* **Prefix.** The trust score after the 1st, 2nd, 4th, 8th... event (the
  last two kept, as ``[events, ms since the start, score]``). At close, the
  one at or before the middle of the session's events before its goal is the
  session's prefix: between a quarter and a half of the way in, never after
  the goal. The console's prefix AUC compares that score with the events and
  seconds so far at the same point, so both sides see the same prefix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from detectors.config import PAGE_TYPES, STAGE_INDEX
from detectors.session import SessionState
from detectors.signals import SIGNALS

#: Keys kept per session (see the module doc); one beyond it is not marked.
TRUST_MARKS_CAP = 32
#: Fewest events before the goal for a session to have a prefix (as in the
#: offline evaluation: shorter ones have no meaningful middle).
MIN_PREFIX_EVENTS = 4
#: Trust scores and changes are kept in the state as integers of this unit
#: (1e-4 of a probability).
DELTA_SCALE = 10_000
#: Position of each stage, page type and signal: a state's mark keys are
#: "s", "p" or "g" and the position ("p13" is the checkout), which keeps the
#: state small. New page types and signals are appended, so keys keep.
PAGE_INDEX: dict[str, int] = {p: i for i, p in enumerate(PAGE_TYPES)}
SIGNAL_INDEX: dict[str, int] = {s: i for i, s in enumerate(SIGNALS)}
_STAGES = tuple(STAGE_INDEX)
_NAMES = {"s": (_STAGES, "stage"), "p": (PAGE_TYPES, "page_type"), "g": (SIGNALS, "signal")}

#: One trust mark as it travels: (key, occurrences, sum of changes, scored steps).
Mark = tuple[str, int, float, int]
#: A session's prefix: (trust score 0-1 or -1 before the first, events, seconds).
Prefix = tuple[float, int, float]


def mark_step(
    state: SessionState,
    page_view: bool,
    signals: Iterable[str],
    before: float,
    scored: bool,
) -> None:
    """Mark one applied event of ``state``: ``page_view`` counts a visit of
    the current stage and page type, each name in ``signals`` a firing;
    ``scored`` (the trust score was computed at this event, ``before`` being
    its value before) adds the change to every key of the step. Then, at a
    power-of-two event count, the score is kept as a prefix checkpoint."""
    marks = state.trust_marks
    keys = [f"g{SIGNAL_INDEX[name]}" for name in signals]
    for key in keys:
        _mark(marks, key)[0] += 1
    page = [f"s{STAGE_INDEX[state.stage]}"]
    if state.page_type in PAGE_INDEX:
        page.append(f"p{PAGE_INDEX[state.page_type]}")
    for key in page:  # a page's keys are hit by every step, counted by its views
        _mark(marks, key)[0] += page_view
    keys += page
    if scored and before >= 0 and state.trust >= 0:
        delta = round((state.trust - before) * DELTA_SCALE)
        for key in keys:
            mark = marks.get(key)
            if mark is not None:
                mark[1] += delta
                mark[2] += 1
    n = state.n_events
    if n & (n - 1) == 0:  # 1, 2, 4, 8, ...
        checkpoints = state.prefix_marks
        checkpoints.append([n, state.last_ts - state.start_ts, round(state.trust * DELTA_SCALE)])
        del checkpoints[:-2]


def mark_signals(state: SessionState, signals: Iterable[str]) -> None:
    """Count firings of ``signals`` without a step (the signals that fire
    when the session closes, such as an abandoned form)."""
    for name in signals:
        _mark(state.trust_marks, f"g{SIGNAL_INDEX[name]}")[0] += 1


def _mark(marks: dict[str, list[int]], key: str) -> list[int]:
    mark = marks.get(key)
    if mark is None:
        mark = [0, 0, 0]
        if len(marks) < TRUST_MARKS_CAP:
            marks[key] = mark
    return mark


def key_name(key: str) -> str | None:
    """The readable form of a state's mark key ("s3" is "stage:decide");
    ``None`` for a key this version does not know."""
    known = _NAMES.get(key[:1])
    if known is None or not key[1:].isdigit() or int(key[1:]) >= len(known[0]):
        return None
    names, dimension = known
    return f"{dimension}:{names[int(key[1:])]}"


def marks_of(state: SessionState) -> tuple[Mark, ...]:
    """The session's trust marks, by readable key, sorted (a key this
    version does not know is left out)."""
    named = ((key_name(key), m) for key, m in state.trust_marks.items())
    return tuple(
        sorted((name, int(m[0]), m[1] / DELTA_SCALE, int(m[2])) for name, m in named if name)
    )


def prefix_of(state: SessionState, converted: bool) -> Prefix | None:
    """The session's prefix (see the module doc) once it closed: ``None``
    with fewer than :data:`MIN_PREFIX_EVENTS` events before its goal (the
    goal event, counted in ``n_events``, is not part of it)."""
    before_goal = state.n_events - 1 if converted else state.n_events
    if before_goal < MIN_PREFIX_EVENTS:
        return None
    middle = math.ceil(before_goal / 2)
    for events, ms, score in reversed(state.prefix_marks):
        if events <= middle:
            return (score / DELTA_SCALE, int(events), ms / 1000.0)
    return None
