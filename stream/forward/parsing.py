"""Reading one message of the alerts topic: the alert CloudEvent in it, or why there is none.

Input that is not JSON or not a disengage alert is not the forwarder's to fix: it
becomes an :class:`InvalidAlert` whose ``reason`` is the ``dlq.reason`` of the
dead letter (``not_json``, ``not_cloudevent``, ``not_an_alert``), and forwarding
goes on with the next message.
"""

from __future__ import annotations

import json
import re
from typing import Any

from detectors.alerts import ALERT_KINDS, SEVERITIES

#: ``dlq.reason`` of input that is not an alert.
INVALID_REASONS: tuple[str, ...] = ("not_json", "not_cloudevent", "not_an_alert")

# the id goes into an HTTP header (Idempotency-Key) and a Redis key: no CR/LF, bounded
_ALERT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class InvalidAlert(ValueError):
    """A message that is not an alert; ``reason`` is one of INVALID_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_alert(raw: bytes | None) -> dict[str, Any]:
    """The alert CloudEvent in ``raw``, checked as far as forwarding needs
    (attributes, id usable as a header, known kind and severity).

    >>> parse_alert(b'{"x": 1')
    Traceback (most recent call last):
    ...
    stream.forward.parsing.InvalidAlert: not_json: Expecting ',' delimiter: line 1 column 8 (char 7)
    """
    if raw is None:
        raise InvalidAlert("not_json", "empty message (tombstone)")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidAlert("not_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise InvalidAlert("not_cloudevent", f"a JSON {type(obj).__name__}, not an object")
    for attr in ("specversion", "id", "source", "type"):
        if not isinstance(obj.get(attr), str) or not obj[attr]:
            raise InvalidAlert("not_cloudevent", f"no string attribute {attr!r}")
    if obj["specversion"] != "1.0":
        raise InvalidAlert("not_cloudevent", f"specversion {obj['specversion']!r}, not 1.0")
    if not _ALERT_ID.match(obj["id"]):
        raise InvalidAlert("not_cloudevent", "id is not 1-128 characters of [A-Za-z0-9._:-]")
    data = obj.get("data")
    if not isinstance(data, dict):
        raise InvalidAlert("not_an_alert", "data is not an object")
    kind = data.get("kind")
    if kind not in ALERT_KINDS or obj["type"] != f"disengage.alert.{kind}":
        raise InvalidAlert("not_an_alert", f"type {obj['type']!r} / kind {kind!r}")
    if data.get("severity") not in SEVERITIES:
        raise InvalidAlert("not_an_alert", f"severity {data.get('severity')!r}")
    return obj


def alert_id_of(raw: bytes | None) -> str | None:
    """The ``id`` of a CloudEvent-ish message, when readable and sane (for the
    ``dlq.alert.id`` header of a message that is not a valid alert).

    >>> alert_id_of(b'{"id": "a-1"}'), alert_id_of(b'{"id": "a b"}'), alert_id_of(b"[]")
    ('a-1', None, None)
    """
    try:
        value = json.loads(raw or b"").get("id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) and _ALERT_ID.match(value) else None
