"""Snowplow tracker-protocol events (``POST .../tp2``, ``GET /i``) as our events.

* ``e=pv`` page view: ``page_view``, ``page`` = the path of ``url``;
* ``e=pp`` page ping: ``scroll`` with ``props.scroll_pct`` when the page
  scrolled since the last ping (``(pp_may + viewport height) / document
  height``), else ``custom`` ``page_ping`` (dwell);
* ``e=ue`` ``link_click``: ``click``, ``props.target`` from the element's id
  and classes (never the link's URL);
* ``e=ue`` ``submit_form`` / ``focus_form`` / ``change_form``:
  ``form_submit`` / ``form_focus`` / ``form_input``, ``props.field`` = the
  element or form id (never its value);
* ``e=ue`` ``application_error``: ``error``, ``props.error`` = the error's
  name or class (not its message);
* any other ``e=ue``: ``custom``, ``props.event`` = the schema's name;
* ``e=se`` structured event: ``custom``, ``props.event`` = category/action;
* ``e=tr`` transaction: ``purchase``, ``props.value`` = ``tr_tt``;
* any other ``e``: nothing (accepted, counted as ignored).

The session is ``sid`` (the domain session id; else the domain user id
``duid`` and inactivity), ``eid`` the event id, ``dtm`` (else ``ttm``,
``stm``, the collector's clock) the event time, ``uid`` the user (hashed
before it leaves the collector) and ``aid`` the site. Nothing else leaves.

Reference: https://docs.snowplow.io/docs/sources/trackers/snowplow-tracker-protocol/
and the schemas of iglu-central (``com.snowplowanalytics.snowplow``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from stream.collector.calls import Call, path_of

#: The ``payload_data`` schema of a tp2 body (any 1-0-x).
PAYLOAD_SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-"
#: Self-describing event schemas (by name, any version) and our event types.
UE_TYPES: dict[str, str] = {
    "link_click": "click",
    "submit_form": "form_submit",
    "focus_form": "form_focus",
    "change_form": "form_input",
    "application_error": "error",
}


def tp2_calls(body: Any, now_ms: int) -> list[Call]:
    """The events of a tp2 body (``{"schema": ".../payload_data/...", "data": [...]}``)."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ValueError('a tp2 body is an object with a "data" array')
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.startswith(PAYLOAD_SCHEMA):
        raise ValueError(f"not a Snowplow payload_data body (schema {str(schema)[:80]!r})")
    return [event_call(item, now_ms) for item in body["data"]]


def event_call(fields: Any, now_ms: int) -> Call:
    """One tracker-protocol event (its name-value pairs, all strings)."""
    raw = orjson.dumps(fields) if isinstance(fields, dict) else repr(fields)[:1000].encode()
    if not isinstance(fields, dict):
        return Call.refused(raw, "not_object", "a Snowplow event is a JSON object")
    kind = fields.get("e")
    if kind == "pv":
        event: dict[str, Any] = {"type": "page_view", "page": path_of(_text(fields, "url"))}
    elif kind == "pp":
        event = _ping(fields)
    elif kind == "ue":
        try:
            event = _self_describing(fields)
        except ValueError as exc:
            return Call.refused(raw, "bad_field_type", str(exc))
    elif kind == "se":
        action = "/".join(v for v in (_text(fields, "se_ca"), _text(fields, "se_ac")) if v)
        event = {"type": "custom", "props": {"event": (action or "structured")[:100]}}
    elif kind == "tr":
        event = {"type": "purchase"}
        total = _number(fields.get("tr_tt"))
        if total is not None:
            event["props"] = {"value": total}
    else:
        return Call.skipped(raw)
    ts = next((fields[n] for n in ("dtm", "ttm", "stm") if fields.get(n)), None)
    event["ts"] = _epoch_ms(ts) if ts is not None else now_ms
    if fields.get("eid"):
        event["event_id"] = fields["eid"]
    if fields.get("uid"):
        event["user_id"] = fields["uid"]
    if fields.get("sid"):
        event["session_id"] = str(fields["sid"])
        return Call(event, raw)
    if fields.get("duid"):
        return Call(event, raw, visitor=str(fields["duid"]))
    return Call(event, raw, "no_session", "no sid (domain session id) or duid")


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    return value if isinstance(value, str) else ""


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _epoch_ms(value: Any) -> Any:
    """Snowplow sends epoch ms as a string; anything else goes to the parser as is."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _size(value: str) -> tuple[float, float] | None:
    """``"1024x768"`` -> (1024.0, 768.0)."""
    width, _, height = value.partition("x")
    try:
        return float(width), float(height)
    except ValueError:
        return None


def _ping(fields: dict[str, Any]) -> dict[str, Any]:
    low, high = _number(fields.get("pp_miy")), _number(fields.get("pp_may"))
    viewport, document = _size(_text(fields, "vp")), _size(_text(fields, "ds"))
    moved = low is not None and high is not None and high > low
    if moved and viewport and document and document[1] > 0 and high is not None:
        pct = min(100.0, max(0.0, (high + viewport[1]) / document[1] * 100))
        return {"type": "scroll", "props": {"scroll_pct": round(pct, 1)}}
    return {"type": "custom", "props": {"event": "page_ping"}}


def _self_describing(fields: dict[str, Any]) -> dict[str, Any]:
    """The event of ``ue_pr`` (JSON) or ``ue_px`` (base64url JSON)."""
    if fields.get("ue_pr"):
        text = fields["ue_pr"]
    elif fields.get("ue_px"):
        encoded = str(fields["ue_px"])
        try:
            text = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise ValueError("ue_px is not base64") from None
    else:
        raise ValueError("a self-describing event needs ue_pr or ue_px")
    try:
        envelope = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("the self-describing event is not JSON") from None
    inner = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("schema"), str):
        raise ValueError("the self-describing event has no data.schema")
    data: dict[str, Any] = inner["data"] if isinstance(inner.get("data"), dict) else {}
    name = inner["schema"].split("/")[1] if inner["schema"].count("/") >= 2 else inner["schema"]
    etype = UE_TYPES.get(name, "custom")
    props: dict[str, Any] = {}
    if etype == "click":
        props["target"] = _selector(data)
    elif etype in ("form_focus", "form_input"):
        props["field"] = str(data.get("elementId") or data.get("name") or "")[:100]
    elif etype == "form_submit":
        props["field"] = str(data.get("formId") or "")[:100]
    elif etype == "error":
        props["error"] = str(data.get("errorName") or data.get("className") or name)[:100]
    else:
        props["event"] = name[:100]
    return {"type": etype, "props": props}


def _selector(data: dict[str, Any]) -> str:
    """A CSS-like selector of a clicked link: ``a#id.class1.class2``."""
    out = "a"
    if isinstance(data.get("elementId"), str) and data["elementId"]:
        out += "#" + data["elementId"]
    classes = data.get("elementClasses")
    if isinstance(classes, list):
        out += "".join("." + c for c in classes if isinstance(c, str) and c)
    return out[:200]
