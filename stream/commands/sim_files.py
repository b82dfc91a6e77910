"""The simulator's files: events JSON Lines and the ground truth beside them.

``disengage simulate -o events.jsonl`` writes the events and
``events.truth.jsonl`` (:func:`truth_path`), where ``disengage evaluate``
finds it (:mod:`stream.commands.evaluate_inputs` reads it). The record format is the core's
(:mod:`detectors.simulation.ground_truth`); this module only moves bytes. Lines are
compact JSON (no spaces), so the same seed gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO, Any

from detectors.simulation.simulator import Simulator

#: Events buffered before a write.
WRITE_BATCH = 4096

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def truth_path(events_path: str) -> str:
    """``events.jsonl`` -> ``events.truth.jsonl``.

    >>> truth_path("runs/events.jsonl"), truth_path("events")
    ('runs/events.truth.jsonl', 'events.truth.jsonl')
    """
    stem = events_path[:-6] if events_path.endswith(".jsonl") else events_path
    return stem + ".truth.jsonl"


def write_events(events: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Write a simulation's events to ``out``, one compact JSON object a
    line; return how many."""
    n = 0
    buf: list[str] = []
    for event in events:
        buf.append(_dumps(event))
        n += 1
        if len(buf) >= WRITE_BATCH:
            out.write("\n".join(buf) + "\n")
            buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")
    return n


def write_truth(simulator: Simulator, out: IO[str]) -> None:
    """Write the ground truth of a finished simulation: the span, the
    incidents, then one record per session."""
    for record in simulator.ground_truth().records():
        out.write(_dumps(record) + "\n")
