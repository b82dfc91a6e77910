"""Redis implementation of :class:`detectors.store.SessionStore`.

Keys (the ``{...}`` parts are Redis Cluster hash tags):

* ``dg:s:{<session_id>}``: the session state (:mod:`stream.state_codec`: orjson and
  zstd; states of older releases are zlib JSON and still read), TTL = the
  session timeout plus a margin;
* ``dg:seen:{<ns>/p<partition>}``: sorted set of open sessions by last-seen
  event time, swept for expiry;
* ``dg:check:{<ns>/p<partition>}``: sorted set of quiet sessions by the
  event time their next hesitation check is due (``check_at``, see
  :func:`detectors.detector.next_check`), read by the check sweep;
* ``dg:outbox:{<ns>/p<partition>}``: set of sessions with undelivered alerts;
* ``dg:blob:{<ns>/<name>}``: model checkpoints.

``<ns>`` is the namespace, the input topic's name: partition-scoped keys of
two pipelines sharing one Redis never collide.

Each batch is one pipelined round trip per direction (on a Redis Cluster: one
per node, in parallel; MGET cannot span slots, so a batch's load is one GET
per key in a non-transactional cluster pipeline). A batch's states are
written by one server-side script (:data:`SET_STATES`: a ``SET ... PX`` per
state), not one command each: redis-py spends ~30 µs of Python on every
command of a pipeline, and the worker saves a state per event of live
traffic (125 states: 44 µs a state as commands, 14 µs by the script,
measured on 2026-11-30). A cluster keeps one ``SET`` per state (a script's
keys must share a slot). Every state write is atomic; the per-partition sets
only index it, and both the sweep and the outbox recovery re-check the state
they point to.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from detectors.session import SessionState
from detectors.store import CheckAt, MemorySessionStore, SessionStore
from stream import state_codec

log = logging.getLogger("disengage.store")

OpObserver = Callable[[str, float], None]
#: A single-node client or a cluster client (:func:`redis_from_url`).
RedisClient = aioredis.Redis | RedisCluster


#: The script that writes a batch's states: KEYS are the state keys, ARGV[1]
#: the TTL (ms), then one blob per key.
SET_STATES = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'PX', ttl)
end
return #KEYS
"""
SET_STATES_SHA = hashlib.sha1(SET_STATES.encode()).hexdigest()


def state_key(sid: str) -> str:
    return f"dg:s:{{{sid}}}"


def seen_key(partition: int, ns: str = "") -> str:
    return f"dg:seen:{{{ns}/p{partition}}}"


def check_key(partition: int, ns: str = "") -> str:
    return f"dg:check:{{{ns}/p{partition}}}"


def outbox_key(partition: int, ns: str = "") -> str:
    return f"dg:outbox:{{{ns}/p{partition}}}"


def blob_key(name: str, ns: str = "") -> str:
    return f"dg:blob:{{{ns}/{name}}}"


class RedisSessionStore:
    """Session states in Redis or a Redis Cluster, pipelined. ``observe(op,
    seconds)`` receives the latency of every round trip (for metrics);
    ``check_at`` schedules the hesitation checks (see :class:`SessionStore`)."""

    def __init__(
        self,
        client: RedisClient,
        ttl_s: float,
        observe: OpObserver | None = None,
        namespace: str = "",
        check_at: CheckAt | None = None,
    ) -> None:
        self.client = client
        self.ttl_ms = int(ttl_s * 1000)
        self.observe = observe
        self.ns = namespace
        self.check_at = check_at
        self.cluster = isinstance(client, RedisCluster)
        self._script_loaded = False  # SET_STATES, on a single node

    def _timed(self, op: str, started: float) -> None:
        if self.observe is not None:
            self.observe(op, time.perf_counter() - started)

    async def load(self, sids: Sequence[str]) -> dict[str, SessionState]:
        if not sids:
            return {}
        started = time.perf_counter()
        if self.cluster:  # each session is its own slot: GETs, grouped by node
            pipe = self.client.pipeline(transaction=False)
            for sid in sids:
                pipe.get(state_key(sid))
            blobs = await pipe.execute()
        else:
            blobs = await self.client.mget([state_key(sid) for sid in sids])
        self._timed("load", started)
        out: dict[str, SessionState] = {}
        for sid, blob in zip(sids, blobs, strict=True):
            if blob is None:
                continue
            try:
                out[sid] = state_codec.decode(_as_bytes(blob))
            except ValueError as exc:
                # a blob no codec of this release reads (a newer release's, or
                # damaged): the session starts over instead of failing the
                # batch, which would be retried forever
                log.warning(
                    "session state %s is unreadable, the session starts over: %s",
                    state_key(sid),
                    exc,
                )
        return out

    async def save(self, partition: int, states: Sequence[SessionState]) -> None:
        await self.save_many({partition: states})

    async def save_many(self, groups: Mapping[int, Sequence[SessionState]]) -> None:
        if not any(groups.values()):
            return
        started = time.perf_counter()
        blobs = {
            partition: [state_codec.encode(state) for state in states]
            for partition, states in groups.items()
        }
        if not self.cluster and not self._script_loaded:
            await self.client.script_load(SET_STATES)
            self._script_loaded = True
        try:
            await self._execute_save(groups, blobs)
        except NoScriptError:  # the server restarted or flushed its scripts
            await self.client.script_load(SET_STATES)
            await self._execute_save(groups, blobs)  # every write in it is idempotent
        self._timed("save", started)

    async def _execute_save(
        self, groups: Mapping[int, Sequence[SessionState]], blobs: Mapping[int, list[bytes]]
    ) -> None:
        pipe = self.client.pipeline(transaction=False)
        for partition, states in groups.items():
            self._queue_save(pipe, partition, states, blobs[partition])
        await pipe.execute()

    def _queue_save(
        self, pipe: Any, partition: int, states: Sequence[SessionState], blobs: list[bytes]
    ) -> None:
        seen: dict[str, int] = {}
        closed: list[str] = []
        checks: dict[str, int] = {}
        unchecked: list[str] = []
        with_outbox: list[str] = []
        without_outbox: list[str] = []
        keys = [state_key(state.sid) for state in states]
        if self.cluster:
            for key, blob in zip(keys, blobs, strict=True):
                pipe.set(key, blob, px=self.ttl_ms)
        elif keys:
            pipe.evalsha(SET_STATES_SHA, len(keys), *keys, self.ttl_ms, *blobs)
        for state in states:
            if state.outcome is None:
                seen[state.sid] = state.last_ts
            else:
                closed.append(state.sid)
            (with_outbox if state.outbox else without_outbox).append(state.sid)
            if self.check_at is not None:
                due = self.check_at(state)
                if due is None:
                    unchecked.append(state.sid)
                else:
                    checks[state.sid] = due
        if seen:
            pipe.zadd(seen_key(partition, self.ns), seen)
        if closed:
            pipe.zrem(seen_key(partition, self.ns), *closed)
        if checks:
            pipe.zadd(check_key(partition, self.ns), checks)
        if unchecked:
            pipe.zrem(check_key(partition, self.ns), *unchecked)
        if with_outbox:
            pipe.sadd(outbox_key(partition, self.ns), *with_outbox)
        if without_outbox:
            pipe.srem(outbox_key(partition, self.ns), *without_outbox)

    async def due(self, partition: int, before_ts: int, limit: int) -> list[str]:
        started = time.perf_counter()
        sids = await self.client.zrangebyscore(
            seen_key(partition, self.ns), "-inf", before_ts, start=0, num=limit
        )
        self._timed("due", started)
        return [_as_str(s) for s in sids]

    async def checks_due(self, partition: int, now_ts: int, limit: int) -> list[str]:
        if self.check_at is None:
            return []
        started = time.perf_counter()
        sids = await self.client.zrangebyscore(
            check_key(partition, self.ns), "-inf", now_ts, start=0, num=limit
        )
        self._timed("checks_due", started)
        return [_as_str(s) for s in sids]

    async def pending(self, partition: int) -> list[str]:
        started = time.perf_counter()
        sids = await self.client.smembers(outbox_key(partition, self.ns))
        self._timed("pending", started)
        return sorted(_as_str(s) for s in sids)

    async def open_sessions(self, partition: int) -> int:
        started = time.perf_counter()
        count = await self.client.zcard(seen_key(partition, self.ns))
        self._timed("open_sessions", started)
        return int(count)

    async def save_blob(self, name: str, blob: bytes) -> None:
        started = time.perf_counter()
        await self.client.set(blob_key(name, self.ns), blob)
        self._timed("save_blob", started)

    async def load_blob(self, name: str) -> bytes | None:
        started = time.perf_counter()
        blob = await self.client.get(blob_key(name, self.ns))
        self._timed("load_blob", started)
        return None if blob is None else _as_bytes(blob)

    async def ping(self) -> None:
        started = time.perf_counter()
        await self.client.ping()
        self._timed("ping", started)

    async def close(self) -> None:
        await self.client.aclose()


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise TypeError(f"unexpected Redis reply {type(value).__name__}")


def _as_str(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode()
    return str(value)


def redis_from_url(
    url: str, password: str = "", tls: bool = False, cluster: bool = False, **options: Any
) -> RedisClient:
    """A redis.asyncio client for a ``redis://``/``rediss://`` URL; ``tls``
    upgrades ``redis://`` to TLS, ``password`` is used when the URL has none.
    ``cluster`` (``DISENGAGE_REDIS_CLUSTER``): a :class:`RedisCluster` that
    learns the other nodes from the one in the URL (whose database must be 0).

    >>> type(redis_from_url("redis://127.0.0.1:7000/0", cluster=True)).__name__
    'RedisCluster'
    """
    if password:
        options["password"] = password
    if tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://") :]
    if cluster:
        return RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)


def open_store(
    url: str,
    ttl_s: float,
    password: str = "",
    tls: bool = False,
    observe: OpObserver | None = None,
    namespace: str = "",
    cluster: bool = False,
    *,
    clock: Callable[[], float],
) -> SessionStore:
    """A store for ``memory://``, ``redis://`` or ``rediss://`` URLs (``cluster``:
    the Redis URL is a node of a Redis Cluster). ``clock`` (seconds) times the
    TTLs of ``memory://``; Redis keeps its own. The batch processor sets
    the store's schedule of hesitation checks (``check_at``)."""
    if url.startswith("memory://"):
        return MemorySessionStore(ttl_s, clock)
    if url.startswith(("redis://", "rediss://")):
        client = redis_from_url(url, password, tls, cluster)
        return RedisSessionStore(client, ttl_s, observe, namespace)
    raise ValueError(f"unsupported store URL {url.split('://', 1)[0]}:// (memory, redis, rediss)")
