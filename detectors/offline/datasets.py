"""Converters from public datasets to the event contract.

OTTO (``otto-de/recsys-dataset``): one line per shopper,
``{"session": n, "events": [{"aid": item, "ts": epoch ms, "type": "clicks" |
"carts" | "orders"}]}``. An OTTO "session" is a shopper's whole history over
weeks, so it is split into visits at gaps longer than the session timeout;
each visit becomes a session ``otto-<n>-<visit>``. Clicks become product page
views, carts become ``add_to_cart`` and orders become ``purchase`` (the goal).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

OTTO_TYPES: dict[str, str] = {"clicks": "page_view", "carts": "add_to_cart", "orders": "purchase"}


def otto_to_events(
    lines: Iterable[str], visit_gap_ms: int = 30 * 60 * 1000
) -> Iterator[dict[str, Any]]:
    """Yield contract events for OTTO lines, in each shopper's time order.

    >>> line = '{"session": 7, "events": [{"aid": 1, "ts": 1659304800000, "type": "clicks"},'
    >>> line += ' {"aid": 1, "ts": 1659304900000, "type": "orders"}]}'
    >>> [(e["session_id"], e["type"]) for e in otto_to_events([line])]
    [('otto-7-0', 'page_view'), ('otto-7-0', 'purchase')]
    """
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        shopper = record["session"]
        visit = 0
        last_ts: int | None = None
        for n, raw in enumerate(sorted(record["events"], key=lambda e: e["ts"])):
            ts = int(raw["ts"])
            if last_ts is not None and ts - last_ts > visit_gap_ms:
                visit += 1
            last_ts = ts
            etype = OTTO_TYPES.get(raw["type"])
            if etype is None:
                continue
            yield {
                "session_id": f"otto-{shopper}-{visit}",
                "ts": ts,
                "type": etype,
                "event_id": f"otto-{shopper}-{n}",
                "page": f"/products/{raw['aid']}",
                "page_type": "product",
                "props": {"aid": raw["aid"]},
            }
