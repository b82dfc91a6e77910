"""Segment-spec calls (Segment's HTTP API, RudderStack, Segment's webhooks) as our events.

* ``page`` (and ``screen``): ``page_view``; ``page`` from ``properties.path``,
  else ``context.page.path``, else the path of ``properties.url`` or
  ``context.page.url``;
* ``track`` "Products Searched": ``search`` (the query is not kept);
* ``track`` "Product Added" / "Product Removed": ``add_to_cart`` /
  ``remove_from_cart``, ``props.value`` = price × quantity;
* ``track`` "Checkout Step Viewed" / "Checkout Step Completed":
  ``checkout_step``, ``props.step`` = ``properties.step``;
* ``track`` "Order Completed": ``purchase``, ``props.value`` = ``total``
  (else ``revenue``);
* any other ``track``: ``custom``, ``props.event`` = the event name;
* ``identify``, ``group``, ``alias``: nothing (accepted, counted as ignored).

The session is ``context.sessionId`` (RudderStack sends one); without it the
visitor's ``anonymousId`` (else ``userId``) and inactivity decide
(:mod:`stream.collector.sessions`). ``messageId`` is the event id
(a retried call is a duplicate), ``timestamp`` (else ``originalTimestamp``,
``sentAt``, the collector's clock) the event time, and ``userId`` the user,
hashed before it leaves the collector. Nothing else of the call is kept:
traits, properties other than those above, IPs and user agents never leave.

Reference: https://segment.com/docs/connections/spec/ and its e-commerce spec
(v2), https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/.
"""

from __future__ import annotations

from typing import Any

import orjson

from stream.collector.calls import Call, path_of

#: Segment e-commerce spec event names and our event types.
TRACK_TYPES: dict[str, str] = {
    "Products Searched": "search",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Checkout Step Viewed": "checkout_step",
    "Checkout Step Completed": "checkout_step",
    "Order Completed": "purchase",
}
#: Calls that describe the visitor, not an interaction.
IGNORED_CALLS = frozenset({"identify", "group", "alias"})
#: The message types of the single-call endpoints (``/v1/<type>``).
SINGLE_CALLS = frozenset({"track", "page", "screen", "identify", "group", "alias"})


def batch_calls(body: Any, now_ms: int) -> list[Call]:
    """The calls of a ``/v1/batch`` body (``{"batch": [...], "context": {...}}``);
    the batch's ``context`` fills in what a message's own context lacks."""
    if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
        raise ValueError('a batch is an object with a "batch" array')
    shared = body.get("context")
    out = []
    for message in body["batch"]:
        if isinstance(message, dict) and isinstance(shared, dict):
            own = message.get("context")
            message = {**message, "context": {**shared, **(own if isinstance(own, dict) else {})}}
        out.append(message_call(message, None, now_ms))
    return out


def message_call(message: Any, call_type: str | None, now_ms: int) -> Call:
    """One Segment message as a :class:`Call`; ``call_type``: the endpoint's
    (``/v1/track`` etc.), else the message's own ``type``."""
    raw = orjson.dumps(message) if _dumpable(message) else repr(message).encode()
    if not isinstance(message, dict):
        return Call.refused(raw, "not_object", "a Segment message is a JSON object")
    kind = call_type or message.get("type")
    if not isinstance(kind, str):
        return Call.refused(raw, "missing_field", "a Segment call needs a type")
    if kind in IGNORED_CALLS:
        return Call.skipped(raw)
    context, properties = _obj(message.get("context")), _obj(message.get("properties"))
    if kind in ("page", "screen"):
        event: dict[str, Any] = {"type": "page_view", "page": _page(properties, context)}
    elif kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name:
            return Call.refused(raw, "missing_field", "a track call needs an event name")
        event = {"type": TRACK_TYPES.get(name, "custom")}
        props = _props(event["type"], name, properties)
        if props:
            event["props"] = props
    else:
        return Call.refused(raw, "unmapped", f"no event for a Segment call of type {kind!r}")
    event["ts"] = _first(message, ("timestamp", "originalTimestamp", "sentAt")) or now_ms
    if message.get("messageId") is not None:
        event["event_id"] = message["messageId"]
    if message.get("userId") is not None:
        event["user_id"] = message["userId"]
    session = context.get("sessionId")
    if session is not None and not isinstance(session, bool):
        event["session_id"] = str(session)
        return Call(event, raw)
    visitor = message.get("anonymousId") or message.get("userId")
    if visitor is None:
        return Call(event, raw, "no_session", "no context.sessionId, anonymousId or userId")
    return Call(event, raw, visitor=str(visitor))


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _first(message: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if message.get(name) is not None:
            return message[name]
    return None


def _page(properties: dict[str, Any], context: dict[str, Any]) -> str:
    page = _obj(context.get("page"))
    for value in (properties.get("path"), page.get("path")):
        if isinstance(value, str) and value:
            return path_of(value)
    for value in (properties.get("url"), page.get("url")):
        if isinstance(value, str) and value:
            return path_of(value)
    name = properties.get("name")
    return f"/{name}" if isinstance(name, str) and name else "/"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _props(etype: str, name: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The few properties our signals read; nothing else is kept."""
    props: dict[str, Any] = {}
    if etype == "custom":
        props["event"] = name[:100]
    elif etype == "checkout_step":
        step = properties.get("step")
        if isinstance(step, int | str) and not isinstance(step, bool):
            props["step"] = step
    elif etype in ("add_to_cart", "remove_from_cart"):
        price = _number(properties.get("price"))
        quantity = _number(properties.get("quantity"))
        if price is not None:
            props["value"] = price * (quantity if quantity is not None else 1.0)
    elif etype == "purchase":
        total = _number(properties.get("total"))
        if total is None:
            total = _number(properties.get("revenue"))
        if total is not None:
            props["value"] = total
    return props
