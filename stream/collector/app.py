"""The collector's HTTP endpoints: requests in, events to Kafka, then the answer.

Every endpoint works the same way:
1. The site is identified (write key, Segment's Basic auth or webhook
   signature, Snowplow's ``aid``) and the browser's ``Origin`` checked.
2. The body is read within the limits (:mod:`.bodies`) and mapped to our
   events by the endpoint's adapter.
3. The site's rate limit is applied (429 with ``Retry-After``).
4. Sessions the vendor does not name are resolved (:mod:`.sessions`).
5. Every event is validated by the core's parser (the worker's own), its
   user id hashed; the valid ones go to the input topic keyed by session id,
   the refused ones to the dead-letter topic with a reason.
6. The answer comes only after Kafka acknowledged both (``acks=all``): 202
   with the counts of accepted, rejected and ignored calls; 503 when Kafka did
   not acknowledge in time, so a client retry never loses an event (event
   ids make the retry a duplicate, which the worker drops).

Paths, under ``DISENGAGE_COLLECTOR_PATH_PREFIX`` (``/dg``):

* ``POST /e``: our contract (a JSON array, one object or NDJSON;
  ``text/plain`` for ``sendBeacon``, and gzip, accepted);
* ``POST /v1/batch``, ``/v1/track``, ``/v1/page``, ``/v1/screen``,
  ``/v1/identify``, ``/v1/group``, ``/v1/alias``: Segment's HTTP API and
  RudderStack;
* ``POST /v1/webhook/{site}``: Segment's webhook destination (``X-Signature``);
* ``POST /com.snowplowanalytics.snowplow/tp2`` and ``GET /i``: Snowplow trackers;
* ``GET /s`` and ``GET /p``: a session's interventions, back to its page
  (:mod:`.channel`); the answer to ``POST /e`` carries the token that opens
  them when all its events are of one session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from detectors.events import EventParser, InvalidEvent, event_to_dict, parse_ts
from stream.collector import segment, snowplow
from stream.collector.bodies import BodyError, contract_calls, load_json
from stream.collector.calls import Call, path_of
from stream.collector.channel import (
    HEARTBEAT_S,
    POLL_WAIT_S,
    ChannelTokens,
    SessionChannels,
    TokenError,
    sse_message,
)
from stream.collector.dead_letters import dead_letter, scrub
from stream.collector.metrics import CollectorMetrics
from stream.collector.sessions import VisitorSessions
from stream.collector.sites import RateLimiter, Sites
from stream.records import Record
from stream.settings import Settings

log = logging.getLogger("disengage.collector")

#: Produce ``records`` to a topic; returns once the brokers acknowledged them all.
Produce = Callable[[str, Sequence[Record]], Awaitable[None]]

#: Errors listed in a response (the counts cover every call).
MAX_LISTED_ERRORS = 20
#: Calls in one request at most (Segment's batch limit); more is answered 413.
MAX_CALLS = 2500
#: A transparent 1x1 GIF: the answer to Snowplow's ``GET /i`` (an image request).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
def tracker_file(settings: Settings) -> Path:
    """Where the tracker bundle is (``DISENGAGE_COLLECTOR_TRACKER_FILE``, else this checkout's)."""
    if settings.collector_tracker_file:
        return Path(settings.collector_tracker_file)
    return Path(__file__).resolve().parents[2] / "tracker" / "dist" / "disengage.min.js"


#: Fewest characters of a session id whose channel may be opened.
MIN_CHANNEL_SID = 16


def unguessable(sid: str) -> bool:
    """Whether a session id is random enough to open its channel: at least
    :data:`MIN_CHANNEL_SID` characters and not a number (the tracker's are
    128-bit random hex; Segment's ``sessionId`` is often epoch ms, which
    anyone could enumerate, so those sessions get no channel).

    >>> unguessable("9f86d081884c7d659a2feaa0c55ad015"), unguessable("1767261660600")
    (True, False)
    """
    return len(sid) >= MIN_CHANNEL_SID and not sid.replace(".", "").replace("-", "").isdigit()


class Refusal(Exception):
    """A request refused as a whole, answered ``status`` with ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Collector:
    """The endpoints' logic, over a ``produce`` function and a session resolver."""

    def __init__(
        self,
        settings: Settings,
        produce: Produce,
        sessions: VisitorSessions,
        metrics: CollectorMetrics,
        clock: Callable[[], float] = time.time,
        channels: SessionChannels | None = None,
        tokens: ChannelTokens | None = None,
    ) -> None:
        """``channels`` and ``tokens``: the page channel (``None``: no
        channel; ``/s`` and ``/p`` answer 404 and no token is issued)."""
        if not settings.collector_sites:
            raise ValueError(
                "no site configured: set DISENGAGE_COLLECTOR_SITES, e.g. "
                '\'{"shop": {"write_key": "<a long random key>", '
                '"origins": ["https://shop.example"]}}\''
            )
        self.settings = settings
        self.produce = produce
        self.sessions = sessions
        self.metrics = metrics
        self.clock = clock
        self.parser = EventParser(settings.detector)
        self.sites = Sites(settings.collector_sites)
        self.limiter = RateLimiter(settings.collector_sites)
        self.channels = channels
        self.tokens = tokens
        #: set at shutdown: open event streams end
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------ the web app
    def web_app(self) -> web.Application:
        """The public endpoints (CORS included)."""
        prefix = self.settings.collector_path_prefix
        # the compressed body may not exceed the limit either
        app = web.Application(
            client_max_size=self.settings.collector_max_body_bytes,
            middlewares=[self._cors],
        )
        app.router.add_post(f"{prefix}/e", self._contract)
        for kind in ("batch", *sorted(segment.SINGLE_CALLS)):
            app.router.add_post(f"{prefix}/v1/{kind}", self._segment)
        app.router.add_post(prefix + "/v1/webhook/{site}", self._segment_webhook)
        app.router.add_post(f"{prefix}/com.snowplowanalytics.snowplow/tp2", self._snowplow_post)
        app.router.add_get(f"{prefix}/i", self._snowplow_get)
        app.router.add_get(f"{prefix}/t.js", self._tracker)
        app.router.add_get(f"{prefix}/s", self._stream)
        app.router.add_get(f"{prefix}/p", self._poll)
        return app

    # ------------------------------------------------------ the page channel
    def _channel(self, request: web.Request) -> tuple[str, float]:
        """The session id a channel request's token opens, and when the
        token expires (epoch s); :class:`TokenError` otherwise."""
        if self.tokens is None or self.channels is None:
            raise TokenError(404, "no intervention channel on this collector")
        token = request.query.get("token", "")
        try:
            site, sid = self.tokens.verify(token)
        except TokenError as exc:
            reason = "expired" if "expired" in exc.message else "bad_token"
            self.metrics.channel_refused.labels(reason).inc()
            raise
        config = self.sites.sites.get(site)
        if config is None or not config.interventions:
            self.metrics.channel_refused.labels("site").inc()
            raise TokenError(403, "no intervention channel for this site")
        if not self.sites.origin_allowed(site, request.headers.get("Origin")):
            self.metrics.channel_refused.labels("origin").inc()
            raise TokenError(403, "origin not allowed for this site")
        return sid, self.tokens.expires_at(token)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events of the token's session, from ``Last-Event-ID``
        (or ``?last=``) on, until the token expires or the collector stops."""
        try:
            sid, expires = self._channel(request)
        except TokenError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        assert self.channels is not None
        last = request.headers.get("Last-Event-ID") or request.query.get("last") or None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-transform",
                "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
                **self._cors_headers(request),
            }
        )
        gauge = self.metrics.channels_open.labels("sse")
        sent = self.metrics.interventions_sent.labels("sse")
        gauge.inc()
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            quiet_since = time.monotonic()
            while not self.stopping.is_set():
                remaining = expires - self.clock()
                if remaining <= 0:
                    break  # the tracker reconnects with its fresh token
                found = await self.channels.wait(sid, last, min(1.0, remaining))
                if found:
                    await response.write(b"".join(sse_message(i) for i in found))
                    sent.inc(len(found))
                    last = found[-1].id
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= HEARTBEAT_S:
                    await response.write(b": ping\n\n")
                    quiet_since = time.monotonic()
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the page went away, or the server stops
        finally:
            gauge.dec()
        return response

    async def _poll(self, request: web.Request) -> web.StreamResponse:
        """The long-poll fallback: the interventions after ``?last=``, waiting
        up to :data:`POLL_WAIT_S` for one; ``{"interventions": [...], "last": id}``."""
        try:
            sid, expires = self._channel(request)
        except TokenError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        assert self.channels is not None
        last = request.query.get("last") or None
        gauge = self.metrics.channels_open.labels("poll")
        gauge.inc()
        try:
            wait = max(0.0, min(POLL_WAIT_S, expires - self.clock()))
            deadline = time.monotonic() + wait
            found = self.channels.after(sid, last)
            while not found and not self.stopping.is_set() and time.monotonic() < deadline:
                found = await self.channels.wait(
                    sid, last, min(1.0, deadline - time.monotonic())
                )
        finally:
            gauge.dec()
        self.metrics.interventions_sent.labels("poll").inc(len(found))
        body = b'{"interventions":[' + b",".join(i.body for i in found) + b'],"last":'
        body += orjson.dumps(found[-1].id if found else last) + b"}"
        return web.Response(
            body=body,
            content_type="application/json",
            headers={"Cache-Control": "no-store", **self._cors_headers(request)},
        )

    def _cors_headers(self, request: web.Request) -> dict[str, str]:
        """CORS headers for an allowed ``Origin`` (a streamed response sends
        its headers before the middleware could add them)."""
        origin = request.headers.get("Origin")
        if origin is None or not any(
            self.sites.origin_allowed(site, origin) for site in self.sites.sites
        ):
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    async def _tracker(self, request: web.Request) -> web.StreamResponse:
        """The browser tracker (one file, cached for an hour)."""
        path = tracker_file(self.settings)
        if not path.is_file():
            build = "cd tracker && npm ci && npm run build"
            return web.json_response(
                {"error": f"the tracker is not built ({path}): {build}"}, status=404
            )
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "application/javascript; charset=utf-8",
                "Cache-Control": "public, max-age=3600",
            },
        )

    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and any(
            self.sites.origin_allowed(site, origin) for site in self.sites.sites
        )
        if request.method == "OPTIONS":  # a preflight (a fetch with JSON or a custom header)
            if not allowed:
                return web.Response(status=403, text="origin not allowed")
            response: web.StreamResponse = web.Response(status=204)
            requested = request.headers.get("Access-Control-Request-Headers", "")
            response.headers["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = requested or "Content-Type"
            response.headers["Access-Control-Max-Age"] = "86400"
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # 404, 405, 413 of aiohttp itself
                response = exc
        if allowed and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
            response.headers["Vary"] = "Origin"
        return response

    # -------------------------------------------------------------- endpoints
    async def _contract(self, request: web.Request) -> web.StreamResponse:
        async def calls(body: bytes) -> list[Call]:
            return contract_calls(body, self.settings.collector_max_event_bytes)

        key = request.query.get("k") or request.headers.get("X-Disengage-Key", "")
        site = self.sites.by_key(key) if key else None
        if site is None and "Authorization" in request.headers:
            site = self.sites.by_basic(request.headers["Authorization"])
        return await self._handle("contract", request, site, calls)

    async def _segment(self, request: web.Request) -> web.StreamResponse:
        kind = request.path.rsplit("/", 1)[1]
        site = self.sites.by_basic(request.headers.get("Authorization", ""))

        async def calls(body: bytes) -> list[Call]:
            document = load_json(body)
            now_ms = int(self.clock() * 1000)
            if kind == "batch":
                try:
                    return segment.batch_calls(document, now_ms)
                except ValueError as exc:
                    raise BodyError(400, "bad_body", str(exc)) from None
            return [segment.message_call(document, kind, now_ms)]

        return await self._handle("segment", request, site, calls, body_key=site is None)

    async def _segment_webhook(self, request: web.Request) -> web.StreamResponse:
        site: str | None = request.match_info["site"]
        if site not in self.sites.sites:
            site = None

        async def calls(body: bytes) -> list[Call]:
            # one message, or a list of them (the Actions destination's batches)
            document = load_json(body)
            messages = document if isinstance(document, list) else [document]
            now_ms = int(self.clock() * 1000)
            return [segment.message_call(message, None, now_ms) for message in messages]

        return await self._handle("segment_webhook", request, site, calls, signed=True)

    async def _snowplow_post(self, request: web.Request) -> web.StreamResponse:
        async def calls(body: bytes) -> list[Call]:
            try:
                return snowplow.tp2_calls(load_json(body), int(self.clock() * 1000))
            except ValueError as exc:
                raise BodyError(400, "bad_body", str(exc)) from None

        return await self._handle("snowplow", request, None, calls, by_app_id=True)

    async def _snowplow_get(self, request: web.Request) -> web.StreamResponse:
        fields = dict(request.query)

        async def calls(body: bytes) -> list[Call]:
            return [snowplow.event_call(fields, int(self.clock() * 1000))]

        return await self._handle("snowplow", request, None, calls, by_app_id=True, pixel=True)

    # ---------------------------------------------------------------- common
    async def _handle(
        self,
        endpoint: str,
        request: web.Request,
        site: str | None,
        mapper: Callable[[bytes], Awaitable[list[Call]]],
        *,
        body_key: bool = False,
        signed: bool = False,
        by_app_id: bool = False,
        pixel: bool = False,
    ) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            if signed and site is None:
                raise Refusal(404, "no such site")
            if site is None and not (body_key or by_app_id):
                raise Refusal(401, "unknown or missing write key")  # before any work
            body = await self._read(request)
            if signed and site is not None:
                signature = request.headers.get("X-Signature", "")
                if not self.sites.signed(site, body, signature):
                    raise Refusal(401, "bad or missing X-Signature")
            if body_key and site is None and body:
                site = self._body_write_key(body)
                if site is None:
                    raise Refusal(401, "unknown or missing write key")
            try:
                calls = await mapper(body)
            except (BodyError, Refusal):
                raise
            except Exception as exc:  # nesting too deep, wrong types: the body is bad
                reason = f"unreadable body ({type(exc).__name__})"
                raise BodyError(400, "bad_body", reason) from None
            if by_app_id:
                site = self._app_site(calls)
            if site is None:
                raise Refusal(401, "unknown or missing write key")
            if len(calls) > MAX_CALLS:
                raise BodyError(413, "too_large", f"{len(calls)} calls > {MAX_CALLS} per request")
            if not self.sites.origin_allowed(site, request.headers.get("Origin")):
                raise Refusal(403, "origin not allowed for this site")
            answer = await self.ingest(endpoint, site, calls)
            if endpoint == "contract":
                self._add_channel_token(answer, site, calls)
            # Snowplow's collector answers 200 (a pixel to GET /i), and some
            # trackers accept nothing else
            status = 200 if endpoint == "snowplow" else 202
            if pixel:
                return web.Response(
                    status=200,
                    body=PIXEL,
                    content_type="image/gif",
                    headers={"Cache-Control": "no-cache, no-store, must-revalidate"},
                )
            return web.json_response(answer, status=status)
        except BodyError as exc:
            status = exc.status
            return web.json_response({"error": exc.message}, status=status)
        except Refusal as exc:
            status = exc.status
            return web.json_response({"error": exc.message}, status=status, headers=exc.headers)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)

    def _add_channel_token(self, answer: dict[str, Any], site: str, calls: list[Call]) -> None:
        """Give the tracker the token of its session's channel: when the
        site has interventions on and every event of the request is of one
        session (a page sends its own session's events)."""
        config = self.sites.sites[site]
        if self.tokens is None or not config.interventions or not answer["accepted"]:
            return
        # any other value (a refused event's list, say) is no session id
        sids = {
            sid
            for c in calls
            if c.event is not None and isinstance(sid := c.event.get("session_id"), str)
        }
        if len(sids) != 1:
            return
        sid = sids.pop()
        if unguessable(sid):
            answer["channel"] = {
                "token": self.tokens.issue(site, sid),
                "expires_in": int(self.tokens.ttl_s),
            }

    async def _read(self, request: web.Request) -> bytes:
        """The body (aiohttp inflates gzip and deflate, and refuses a body over
        ``client_max_size`` once inflated); 413 over the limit, 400 when the
        body cannot be read (a broken gzip stream)."""
        if request.method != "POST":
            return b""
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            limit = self.settings.collector_max_body_bytes
            raise BodyError(413, "too_large", f"body over {limit} bytes") from None
        except Exception as exc:
            raise BodyError(400, "bad_body", f"unreadable body ({type(exc).__name__})") from None

    def _body_write_key(self, body: bytes) -> str | None:
        """Segment's alternative to Basic auth: ``writeKey`` in the body."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        key = document.get("writeKey") if isinstance(document, dict) else None
        return self.sites.by_key(key) if isinstance(key, str) and key else None

    def _app_site(self, calls: list[Call]) -> str | None:
        """The site a Snowplow request names in ``aid`` (one per request)."""
        ids = set()
        for call in calls:
            try:
                fields = orjson.loads(call.raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(fields, dict) and isinstance(fields.get("aid"), str):
                ids.add(fields["aid"])
        if len(ids) > 1:
            raise Refusal(400, "a request mixes several app ids (aid)")
        site: str | None = next(iter(ids), None)
        config = self.sites.sites.get(site) if site is not None else None
        return site if config is not None and config.snowplow else None

    async def ingest(self, endpoint: str, site: str, calls: list[Call]) -> dict[str, Any]:
        """Validate, produce and count a request's calls (see the module doc)."""
        wait = self.limiter.take(site, len(calls), self.clock())
        if wait > 0:
            raise Refusal(429, "rate limit of the site", {"Retry-After": str(max(1, round(wait)))})
        try:
            calls = await self._resolve_sessions(site, calls)
        except Exception as exc:  # Redis unreachable: the client retries
            log.warning("visitor sessions unavailable: %s", type(exc).__name__)
            raise Refusal(503, "sessions not available, retry", {"Retry-After": "1"}) from None
        limit = self.settings.collector_max_event_bytes
        events: list[Record] = []
        dead: list[Record] = []
        errors: list[dict[str, Any]] = []
        ignored = 0
        now = self.clock()
        for index, call in enumerate(calls):
            if call.ignored:
                ignored += 1
                continue
            reason, detail = call.reason, call.detail
            if reason is None and len(call.raw) > limit:
                reason, detail = "too_large", f"call of {len(call.raw)} bytes > {limit}"
            if call.event is not None and reason is None:
                try:
                    event = self.parser.parse(call.event)
                except InvalidEvent as exc:
                    reason, detail = exc.reason, exc.detail
                else:
                    value = event_to_dict(event)
                    if "page" in value:  # a path: queries and fragments carry personal data
                        value["page"] = path_of(value["page"])
                    if event.user_hash is not None:
                        value["user_id"] = event.user_hash  # never the raw id
                    events.append(Record(event.session_id.encode(), orjson.dumps(value)))
                    continue
            assert reason is not None
            self.metrics.rejected.labels(reason).inc()
            dead.append(
                dead_letter(
                    f"http:{endpoint}",
                    site,
                    scrub(call.raw, self.settings.detector.user_salt, limit),
                    reason,
                    detail,
                    now,
                )
            )
            if len(errors) < MAX_LISTED_ERRORS:
                errors.append({"index": index, "reason": reason, "detail": detail})
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    self.produce(self.settings.topic_interactions, events),
                    self.produce(self.settings.topic_dlq, dead),
                ),
                timeout=self.settings.produce_timeout_s,
            )
        except Exception as exc:
            self.metrics.produce_failures.inc()
            log.warning("Kafka did not acknowledge a request's events: %s", type(exc).__name__)
            raise Refusal(503, "events not stored, retry", {"Retry-After": "1"}) from None
        counted = self.metrics.events
        counted.labels(endpoint, site, "accepted").inc(len(events))
        counted.labels(endpoint, site, "rejected").inc(len(dead))
        counted.labels(endpoint, site, "ignored").inc(ignored)
        return {
            "accepted": len(events),
            "rejected": len(dead),
            "ignored": ignored,
            "errors": errors,
        }

    async def _resolve_sessions(self, site: str, calls: list[Call]) -> list[Call]:
        """Give calls without a session id their visitor's session."""
        waiting: list[tuple[int, str, int]] = []
        out = list(calls)
        for index, call in enumerate(calls):
            if call.event is None or call.visitor is None or call.reason is not None:
                continue
            try:
                ts = parse_ts(call.event.get("ts"))
            except InvalidEvent as exc:
                out[index] = Call.refused(call.raw, exc.reason, exc.detail)
                continue
            waiting.append((index, call.visitor, ts))
        if waiting:
            sids = await self.sessions.resolve([(site, v, ts) for _, v, ts in waiting])
            for (index, _, _), sid in zip(waiting, sids, strict=True):
                event = out[index].event
                assert event is not None
                event["session_id"] = sid
        return out
