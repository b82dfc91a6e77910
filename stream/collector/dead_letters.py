"""What the collector writes to the dead-letter topic for a refused call.

The record has the worker's six ``dlq.*`` headers
(:func:`stream.records.dead_letter`) plus ``dlq.site``; its source is the
endpoint (``http:<endpoint>``, partition and offset -1). A JSON call is
scrubbed first (:data:`PII_KEYS` dropped, :data:`USER_KEYS` hashed, URLs cut
to their path); a call that is not JSON is kept as it came, within the event
size limit.
"""

from __future__ import annotations

from typing import Any

import orjson

from detectors.events import hash_user
from stream.collector.calls import path_of
from stream.records import Record

#: Keys dropped from a refused call before it goes to the dead-letter topic:
#: Segment traits and properties (names, e-mails), IPs and user agents,
#: Snowplow contexts and self-describing events (a form event's value is
#: inside ``ue_px``), network user ids.
PII_KEYS = frozenset(
    {
        "traits", "properties", "ip", "userAgent", "user_agent", "ua", "email", "search",
        "cx", "co", "ue_px", "ue_pr", "nuid", "tnuid", "mac", "fp",
    }
)  # fmt: skip
#: Keys whose values are hashed in a refused call (user and visitor ids).
USER_KEYS = frozenset({"userId", "user_id", "uid", "anonymousId", "duid", "domain_userid"})


def dead_letter(
    source: str, site: str, value: bytes, reason: str, detail: str, now: float
) -> Record:
    """A dead-letter record of ``value`` (already scrubbed) refused for ``reason``."""
    headers = [
        ("dlq.reason", reason.encode()),
        ("dlq.detail", detail[:200].encode("utf-8", "replace")),
        ("dlq.source.topic", source.encode()),
        ("dlq.source.partition", b"-1"),
        ("dlq.source.offset", b"-1"),
        ("dlq.time", f"{now:.3f}".encode()),
        ("dlq.site", site.encode()),
    ]
    return Record(None, value, headers)


def scrub(raw: bytes, salt: str, limit: int) -> bytes:
    """``raw`` without personal data when it is JSON, else its first ``limit`` bytes.

    >>> out = scrub(b'{"uid": "bob", "url": "https://x.example/a?e=bob@x", "ip": "1"}', "s", 99)
    >>> out == b'{"uid":"%s","url":"/a"}' % hash_user("bob", "s").encode()
    True
    """
    try:
        return orjson.dumps(_scrubbed(orjson.loads(raw), salt))
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        return raw[:limit]


def _scrubbed(value: Any, salt: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in PII_KEYS:
                continue
            if key in USER_KEYS and isinstance(item, str | int) and item != "":
                out[key] = hash_user(str(item), salt)
            else:
                out[key] = _scrubbed(item, salt)
        return out
    if isinstance(value, list):
        return [_scrubbed(item, salt) for item in value]
    if isinstance(value, str) and ("://" in value or (value[:1] == "/" and "?" in value)):
        return path_of(value)  # URLs keep their path: queries carry e-mails and tokens
    return value
