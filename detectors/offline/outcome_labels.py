"""Outcome labels from elsewhere (``evaluate --labels``), for example a CRM
export: which sessions converted, whatever the event stream says."""

from __future__ import annotations

from collections.abc import Iterable

TRUTHY = frozenset({"1", "true", "yes", "y", "t"})
FALSY = frozenset({"0", "false", "no", "n", "f"})


def read_labels(lines: Iterable[str]) -> dict[str, bool]:
    """Parse a ``session_id,converted`` CSV (header optional; converted is
    1/0, true/false or yes/no). Raises ``ValueError`` naming the bad line.

    >>> read_labels(["session_id,converted", "a,1", "b,no"])
    {'a': True, 'b': False}
    """
    out: dict[str, bool] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            raise ValueError(f"labels line {number}: expected session_id,converted")
        sid, value = parts[0], parts[1].lower()
        if number == 1 and value not in TRUTHY | FALSY:
            continue  # header
        if value in TRUTHY:
            out[sid] = True
        elif value in FALSY:
            out[sid] = False
        else:
            raise ValueError(f"labels line {number}: converted must be 1/0 or true/false")
    return out
