"""Request bodies: JSON documents, and our own contract's bodies.

Limits follow Segment's HTTP API: 32 KB per event, 500 KB per request
(https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/#max-request-size),
both configurable (``DISENGAGE_COLLECTOR_MAX_EVENT_BYTES`` and ``..._MAX_BODY_BYTES``).
aiohttp inflates gzip and deflate bodies and applies the body limit to the
inflated bytes, so a small gzip bomb is a 413 too.
"""

from __future__ import annotations

from typing import Any

import orjson

from stream.collector.calls import Call


class BodyError(Exception):
    """A request the collector refuses as a whole: ``status`` 400, 413 or 415."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def load_json(body: bytes) -> Any:
    """One JSON document (400 when it is not)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, "bad_body", f"body is not JSON: {str(exc)[:80]}") from None


def contract_calls(body: bytes, max_event_bytes: int) -> list[Call]:
    """Events of our contract: a JSON array of event objects, one object, or
    NDJSON (one object per line; a bad line is refused alone)."""
    text = body.strip()
    if not text:
        raise BodyError(400, "bad_body", "empty body")
    if text[:1] == b"[":
        items = load_json(text)
        return [_item(orjson.dumps(item), item, max_event_bytes) for item in items]
    try:
        return [_item(text, orjson.loads(text), max_event_bytes)]
    except orjson.JSONDecodeError:
        pass  # several lines
    out = []
    for line in text.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        try:
            out.append(_item(line, orjson.loads(line), max_event_bytes))
        except orjson.JSONDecodeError as exc:
            out.append(Call.refused(line[:max_event_bytes], "not_json", str(exc)[:80]))
    if not out:
        raise BodyError(400, "bad_body", "no event in the body")
    return out


def _item(raw: bytes, item: Any, max_event_bytes: int) -> Call:
    if len(raw) > max_event_bytes:
        return Call.refused(raw, "too_large", f"event of {len(raw)} bytes > {max_event_bytes}")
    if not isinstance(item, dict):
        return Call.refused(raw, "not_object", "an event is a JSON object")
    return Call(item, raw)
