"""Converters from public datasets to the event contract.

OTTO (``otto-de/recsys-dataset``): one line per shopper,
``{"session": n, "events": [{"aid": item, "ts": epoch ms, "type": "clicks" |
"carts" | "orders"}]}``. An OTTO "session" is a shopper's whole history over
weeks, so it is split into visits at gaps longer than the session timeout;
each visit becomes a session ``otto-<n>-<visit>``. Clicks become product page
views, carts become ``add_to_cart`` and orders become ``purchase`` (the goal).

DIGINETICA (CIKM Cup 2016): two ``;``-separated files with a header line.
Product views ``session_id;user_id;item_id;timeframe;eventdate`` and purchases
``sessionId;userId;timeframe;eventdate;ordernumber;itemId``, where
``timeframe`` is milliseconds since the session's first event and
``eventdate`` its day. A session starts at midnight UTC of its first view's
day (the day is all the data gives), each view becomes a product page view and
each order (all its items) one ``purchase``. ``NA`` user ids are left out; the
others are sent as ``user_id``, which the parser hashes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
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


DIGINETICA_VIEW_COLUMNS: tuple[str, ...] = (
    "session_id",
    "user_id",
    "item_id",
    "timeframe",
    "eventdate",
)
DIGINETICA_PURCHASE_COLUMNS: tuple[str, ...] = (
    "sessionId",
    "userId",
    "timeframe",
    "eventdate",
    "ordernumber",
    "itemId",
)


def _rows(lines: Iterable[str], columns: tuple[str, ...], what: str) -> Iterator[dict[str, str]]:
    reader = csv.DictReader((line for line in lines if line.strip()), delimiter=";")
    if reader.fieldnames is None or tuple(reader.fieldnames[: len(columns)]) != columns:
        raise ValueError(f"{what}: header {reader.fieldnames} is not {';'.join(columns)}")
    yield from reader


def _day_ms(day: str) -> int:
    midnight = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
    return int(midnight.timestamp() * 1000)


def diginetica_to_events(
    views: Iterable[str], purchases: Iterable[str] = ()
) -> Iterator[dict[str, Any]]:
    """Yield contract events for DIGINETICA views and purchases, session by
    session in time order (views before a purchase at the same moment).

    ``ValueError`` when a header or a value is not what the format says.

    >>> views = ["session_id;user_id;item_id;timeframe;eventdate",
    ...          "5;NA;81766;526309;2016-05-09", "5;NA;31331;0;2016-05-09"]
    >>> orders = ["sessionId;userId;timeframe;eventdate;ordernumber;itemId",
    ...           "5;NA;600000;2016-05-09;77;81766"]
    >>> for e in diginetica_to_events(views, orders):
    ...     print(e["type"], e["ts"] - 1462752000000, e.get("page"))
    page_view 0 /products/31331
    page_view 526309 /products/81766
    purchase 600000 None
    """
    sessions: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
    start: dict[str, int] = {}
    for n, row in enumerate(_rows(views, DIGINETICA_VIEW_COLUMNS, "views")):
        sid = row["session_id"]
        offset = int(row["timeframe"])
        start.setdefault(sid, _day_ms(row["eventdate"]))
        event: dict[str, Any] = {
            "session_id": f"dgn-{sid}",
            "type": "page_view",
            "event_id": f"dgn-{sid}-v{n}",
            "page": f"/products/{row['item_id']}",
            "page_type": "product",
            "props": {"item_id": row["item_id"]},
        }
        if row["user_id"] not in ("", "NA"):
            event["user_id"] = row["user_id"]
        sessions.setdefault(sid, []).append((offset, 0, event))
    orders: dict[tuple[str, str], tuple[int, int, str]] = {}
    for row in _rows(purchases, DIGINETICA_PURCHASE_COLUMNS, "purchases"):
        key = (row["sessionId"], row["ordernumber"])
        first = orders.get(key)
        items = 1 if first is None else first[1] + 1
        orders[key] = (int(row["timeframe"]), items, row["eventdate"])
    for (sid, order), (offset, items, day) in orders.items():
        start.setdefault(sid, _day_ms(day))
        event = {
            "session_id": f"dgn-{sid}",
            "type": "purchase",
            "event_id": f"dgn-{sid}-o{order}",
            "props": {"order": order, "items": items},
        }
        sessions.setdefault(sid, []).append((offset, 1, event))
    for sid, rows in sessions.items():
        for offset, _, event in sorted(rows, key=lambda r: (r[0], r[1])):
            yield {**event, "ts": start[sid] + offset}
