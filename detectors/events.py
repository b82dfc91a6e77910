"""The input contract: one JSON object per interaction event.

:func:`parse_event` is the single entry point for untrusted input. It returns
an :class:`Event` or raises :class:`InvalidEvent` with a short
machine-readable ``reason``; nothing else is ever raised for input. The same
contract is published as JSON Schema in ``detectors/event.schema.json``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from detectors.config import EVENT_TYPES, PAGE_TYPES, DetectorConfig

#: Reasons carried by :class:`InvalidEvent`, bounded so they can be metric labels.
INVALID_REASONS: tuple[str, ...] = (
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "bad_session_id",
    "bad_ts",
    "unknown_type",
    "bad_field_type",
    "bad_page_type",
)

MAX_SESSION_ID_CHARS = 128
MAX_EVENT_ID_CHARS = 256
MAX_PAGE_CHARS = 2048
# 1990-01-01 .. 2200-01-01 in epoch ms: anything outside is a unit mistake.
_MIN_TS_MS = 631_152_000_000
_MAX_TS_MS = 7_258_118_400_000


class InvalidEvent(ValueError):
    """Raised for any input that does not satisfy the event contract.

    ``reason`` is one of :data:`INVALID_REASONS`; ``detail`` is a short
    human-readable explanation that never echoes more than 80 input bytes.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in INVALID_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Event:
    """A validated interaction event.

    ``ts`` is event time in epoch milliseconds. ``user_hash`` is the salted
    HMAC of ``user_id`` (hex, 16 chars) or ``None``; the raw id is dropped at
    parse time and never stored.
    """

    session_id: str
    ts: int
    type: str
    event_id: str
    page: str | None
    page_type: str | None
    user_hash: str | None
    props: dict[str, Any]

    def prop_float(self, name: str) -> float | None:
        """``props[name]`` as a finite float, or ``None`` when absent or bad."""
        value = self.props.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        number = float(value)
        return number if math.isfinite(number) else None

    def prop_str(self, name: str) -> str | None:
        """``props[name]`` as a string (numbers are formatted), else ``None``."""
        value = self.props.get(name)
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return None


@lru_cache(maxsize=65536)
def hash_user(user_id: str, salt: str) -> str:
    """Salted, keyed hash of a user id: 16 hex chars (64 bits) of HMAC-SHA256.

    >>> hash_user("alice@example.com", "s1") == hash_user("alice@example.com", "s1")
    True
    >>> hash_user("alice@example.com", "s1") == hash_user("alice@example.com", "s2")
    False
    """
    digest = hmac.new(salt.encode(), user_id.encode(), hashlib.sha256).hexdigest()
    return digest[:16]


def derive_event_id(obj: dict[str, Any]) -> str:
    """Stable id from an event's content, for producers that send none.

    The digest covers the canonical JSON of the object without ``event_id``,
    so the same event sent twice gets the same id.
    """
    body = {k: v for k, v in obj.items() if k != "event_id"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "d-" + hashlib.blake2b(canonical.encode(), digest_size=12).hexdigest()


class PageClassifier:
    """Infers ``page_type`` from a page path with ordered regex patterns.

    >>> c = PageClassifier(DetectorConfig().page_patterns)
    >>> c.classify("https://shop.example/checkout/step-2?x=1")
    'checkout'
    >>> c.classify("/products/blue-shoe")
    'product'
    >>> c.classify("/") , c.classify("/unheard-of") is None
    ('home', True)
    """

    def __init__(self, patterns: tuple[tuple[str, str], ...]) -> None:
        for _, page_type in patterns:
            if page_type not in PAGE_TYPES:
                raise ValueError(f"page pattern maps to unknown page_type {page_type!r}")
        self._patterns = tuple((re.compile(rx, re.IGNORECASE), pt) for rx, pt in patterns)
        self._cache: dict[str, str | None] = {}

    def classify(self, page: str) -> str | None:
        """The first matching page type of ``page``'s path, or ``None``."""
        cached = self._cache.get(page, "")
        if cached != "":
            return cached
        path = urlsplit(page).path if "://" in page or "?" in page or "#" in page else page
        result: str | None = None
        for rx, page_type in self._patterns:
            if rx.search(path):
                result = page_type
                break
        if len(self._cache) < 50_000:
            self._cache[page] = result
        return result


def parse_ts(value: Any) -> int:
    """Event time as epoch ms from an RFC 3339 string or integer epoch ms.

    >>> parse_ts(1700000000000)
    1700000000000
    >>> parse_ts("2023-11-14T22:13:20Z")
    1700000000000
    >>> parse_ts("2023-11-14T23:13:20.5+01:00")
    1700000000500
    """
    if isinstance(value, bool):
        raise InvalidEvent("bad_ts", "boolean is not a timestamp")
    if isinstance(value, int):
        ts = value
    elif isinstance(value, float) and value.is_integer():
        ts = int(value)
    elif isinstance(value, str):
        ts = _parse_rfc3339(value)
    else:
        raise InvalidEvent("bad_ts", f"expected RFC 3339 string or epoch ms, got {_tname(value)}")
    if not _MIN_TS_MS <= ts <= _MAX_TS_MS:
        raise InvalidEvent("bad_ts", f"epoch ms {ts} outside 1990..2200 (seconds sent?)")
    return ts


@lru_cache(maxsize=4096)
def _parse_rfc3339(text: str) -> int:
    if len(text) > 40 or "T" not in text.upper():
        raise InvalidEvent("bad_ts", "not an RFC 3339 date-time")
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidEvent("bad_ts", "not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise InvalidEvent("bad_ts", "RFC 3339 time needs an offset or Z")
    return round(moment.timestamp() * 1000)


def _check_text(name: str, value: str) -> None:
    """Strings must be valid Unicode: JSON can smuggle lone surrogates
    (``"\\ud800"``) that no UTF-8 consumer downstream could encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("bad_field_type", f"{name} contains a lone surrogate") from None


def _tname(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class EventParser:
    """Parses raw bytes, text or decoded objects into :class:`Event`.

    >>> p = EventParser(DetectorConfig())
    >>> e = p.parse(b'{"session_id":"s1","ts":1700000000000,"type":"page_view","page":"/cart"}')
    >>> e.page_type, e.event_id.startswith("d-")
    ('cart', True)
    >>> p.parse(b'{"session_id":"s1","ts":1700000000000,"type":"teleport"}')
    Traceback (most recent call last):
    ...
    detectors.events.InvalidEvent: unknown_type: 'teleport' is not an event type
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.classifier = PageClassifier(config.page_patterns)

    def parse(self, raw: bytes | bytearray | memoryview | str | dict[str, Any]) -> Event:
        """Validate one event. Raises only :class:`InvalidEvent`."""
        try:
            return self._parse(raw)
        except InvalidEvent:
            raise
        except RecursionError:
            raise InvalidEvent("not_json", "nesting too deep") from None
        except Exception as exc:  # defensive: the contract is one error type
            raise InvalidEvent("bad_field_type", type(exc).__name__) from None

    def _parse(self, raw: bytes | bytearray | memoryview | str | dict[str, Any]) -> Event:
        if isinstance(raw, dict):
            obj: Any = raw
        else:
            data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
            if len(data) > self.config.max_message_bytes:
                raise InvalidEvent(
                    "too_large", f"{len(data)} bytes > cap {self.config.max_message_bytes}"
                )
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidEvent("not_utf8", "payload is not UTF-8") from None
            try:
                obj = json.loads(text)
            except ValueError as exc:
                raise InvalidEvent("not_json", str(exc)[:80]) from None
        if not isinstance(obj, dict):
            raise InvalidEvent("not_object", f"top level is {_tname(obj)}, not an object")
        return self._from_object(obj)

    def _from_object(self, obj: dict[str, Any]) -> Event:
        for name in ("session_id", "ts", "type"):
            if name not in obj:
                raise InvalidEvent("missing_field", f"{name} is required")
        session_id = obj["session_id"]
        if not isinstance(session_id, str):
            raise InvalidEvent(
                "bad_session_id", f"session_id must be a string, not {_tname(session_id)}"
            )
        _check_text("session_id", session_id)
        if not session_id or len(session_id) > MAX_SESSION_ID_CHARS:
            raise InvalidEvent(
                "bad_session_id", f"session_id must have 1..{MAX_SESSION_ID_CHARS} chars"
            )
        ts = parse_ts(obj["ts"])
        etype = obj["type"]
        if not isinstance(etype, str):
            raise InvalidEvent("bad_field_type", f"type must be a string, not {_tname(etype)}")
        if etype not in EVENT_TYPES:
            raise InvalidEvent("unknown_type", f"{etype[:40]!r} is not an event type")
        event_id = obj.get("event_id")
        if event_id is None:
            event_id = derive_event_id(obj)
        elif isinstance(event_id, int) and not isinstance(event_id, bool):
            event_id = str(event_id)
        elif not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_CHARS:
            raise InvalidEvent("bad_field_type", "event_id must be a non-empty string")
        _check_text("event_id", event_id)
        page = obj.get("page")
        if isinstance(page, str):
            _check_text("page", page)
        if page is not None and (not isinstance(page, str) or len(page) > MAX_PAGE_CHARS):
            raise InvalidEvent(
                "bad_field_type", f"page must be a string of at most {MAX_PAGE_CHARS} chars"
            )
        page_type = obj.get("page_type")
        if page_type is not None:
            if not isinstance(page_type, str):
                raise InvalidEvent("bad_field_type", "page_type must be a string")
            if page_type not in PAGE_TYPES:
                raise InvalidEvent("bad_page_type", f"{page_type[:40]!r} is not a page type")
        elif page:
            page_type = self.classifier.classify(page)
        user_id = obj.get("user_id")
        user_hash: str | None = None
        if user_id is not None:
            if isinstance(user_id, int) and not isinstance(user_id, bool):
                user_id = str(user_id)
            if not isinstance(user_id, str):
                raise InvalidEvent("bad_field_type", "user_id must be a string")
            _check_text("user_id", user_id)
            user_hash = hash_user(user_id, self.config.user_salt)
        props = obj.get("props")
        if props is None:
            props = {}
        elif not isinstance(props, dict):
            raise InvalidEvent("bad_field_type", f"props must be an object, not {_tname(props)}")
        return Event(
            session_id=session_id,
            ts=ts,
            type=etype,
            event_id=event_id,
            page=page,
            page_type=page_type,
            user_hash=user_hash,
            props=props,
        )


def event_to_dict(event: Event) -> dict[str, Any]:
    """The wire form of a parsed event. The raw ``user_id`` is gone at parse
    time, so it cannot be written back out."""
    out: dict[str, Any] = {
        "session_id": event.session_id,
        "ts": event.ts,
        "type": event.type,
        "event_id": event.event_id,
    }
    if event.page is not None:
        out["page"] = event.page
    if event.page_type is not None:
        out["page_type"] = event.page_type
    if event.props:
        out["props"] = event.props
    return out
