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
* ``dg:epoch:{<ns>/p<partition>}``: the partition's ownership epoch
  (:meth:`RedisSessionStore.claim`; see :class:`detectors.store.Fenced`);
* ``dg:blob:{<ns>/<name>}``: model checkpoints.

``<ns>`` is the namespace, the input topic's name: partition-scoped keys of
two pipelines sharing one Redis never collide.

Each batch is one pipelined round trip per direction (on a Redis Cluster: one
per node, in parallel; MGET cannot span slots, so a batch's load is one GET
per key in a non-transactional cluster pipeline). A batch's states are
written by one server-side script per partition (:data:`SAVE_STATES`: the
partition's ownership epoch checked, then a ``SET ... PX`` per state and its
index entries), not one command each: redis-py spends ~30 µs of Python on
every command of a pipeline, and the worker saves a state per event of live
traffic (125 states: 44 µs a state as commands, 14 µs by a script that only
set the states, measured on 2026-11-30). A cluster keeps one ``SET`` per
state and a command per index (a script's keys must share a slot), and reads
the epochs one round trip before it writes. Every state write is atomic; the
per-partition sets only index it, and both the sweep and the outbox recovery
re-check the state they point to.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from detectors.session import SessionState
from detectors.store import CheckAt, Fenced, MemorySessionStore, SessionStore
from stream import state_codec

log = logging.getLogger("disengage.store")

OpObserver = Callable[[str, float], None]
#: A single-node client or a cluster client (:func:`redis_from_url`).
RedisClient = aioredis.Redis | RedisCluster


#: The script that writes one partition's states of a batch, and their index
#: entries, all or nothing: KEYS are the partition's epoch, seen, check and
#: outbox keys, then the state keys; ARGV[1] is the TTL (ms), ARGV[2] the
#: writer's epoch ('' writes unfenced), then five values per state: its
#: session id, its blob, its last-seen event time ('' when closed: it leaves
#: the expiry index), its next check ('' for none: it leaves the check index;
#: '-' when no checks are scheduled) and '1' when its outbox is not empty.
#: An epoch that is not the partition's latest claim writes nothing and
#: answers the error FENCED.
SAVE_STATES = """
if ARGV[2] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return redis.error_reply('FENCED')
end
local ttl = ARGV[1]
for i = 5, #KEYS do
  local a = 3 + (i - 5) * 5
  local sid = ARGV[a]
  redis.call('SET', KEYS[i], ARGV[a + 1], 'PX', ttl)
  local seen = ARGV[a + 2]
  if seen == '' then
    redis.call('ZREM', KEYS[2], sid)
  else
    redis.call('ZADD', KEYS[2], seen, sid)
  end
  local due = ARGV[a + 3]
  if due == '' then
    redis.call('ZREM', KEYS[3], sid)
  elseif due ~= '-' then
    redis.call('ZADD', KEYS[3], due, sid)
  end
  if ARGV[a + 4] == '1' then
    redis.call('SADD', KEYS[4], sid)
  else
    redis.call('SREM', KEYS[4], sid)
  end
end
return #KEYS - 4
"""
SAVE_STATES_SHA = hashlib.sha1(SAVE_STATES.encode()).hexdigest()


def state_key(sid: str) -> str:
    return f"dg:s:{{{sid}}}"


def seen_key(partition: int, ns: str = "") -> str:
    return f"dg:seen:{{{ns}/p{partition}}}"


def check_key(partition: int, ns: str = "") -> str:
    return f"dg:check:{{{ns}/p{partition}}}"


def epoch_key(partition: int, ns: str = "") -> str:
    """The partition's ownership epoch (:meth:`RedisSessionStore.claim`)."""
    return f"dg:epoch:{{{ns}/p{partition}}}"


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
        self._script_loaded = False  # SAVE_STATES, on a single node

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

    async def save_many(
        self,
        groups: Mapping[int, Sequence[SessionState]],
        epochs: Mapping[int, int] | None = None,
    ) -> None:
        groups = {p: states for p, states in groups.items() if states}
        if not groups:
            return
        started = time.perf_counter()
        epochs = epochs or {}
        fenced: set[int] = set()
        if self.cluster and epochs:
            # a cluster cannot check and write in one script (the states are
            # in slots of their own): the epochs are read one round trip
            # before the write, a window of a round trip instead of none
            fenced = await self._stale_epochs(groups, epochs)
            groups = {p: states for p, states in groups.items() if p not in fenced}
        blobs = {
            partition: [state_codec.encode(state) for state in states]
            for partition, states in groups.items()
        }
        if groups:
            if not self.cluster and not self._script_loaded:
                await self.client.script_load(SAVE_STATES)
                self._script_loaded = True
            try:
                fenced |= await self._execute_save(groups, blobs, epochs)
            except NoScriptError:  # the server restarted or flushed its scripts
                await self.client.script_load(SAVE_STATES)
                # every write in it is idempotent
                fenced |= await self._execute_save(groups, blobs, epochs)
        self._timed("save", started)
        if fenced:
            raise Fenced(fenced)

    async def claim(self, partition: int) -> int:
        started = time.perf_counter()
        epoch = await self.client.incr(epoch_key(partition, self.ns))
        self._timed("claim", started)
        return int(epoch)

    async def _stale_epochs(
        self, groups: Mapping[int, Sequence[SessionState]], epochs: Mapping[int, int]
    ) -> set[int]:
        """The partitions of ``groups`` whose epoch is no longer their latest claim."""
        wanted = [p for p in groups if p in epochs]
        if not wanted:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for p in wanted:
            pipe.get(epoch_key(p, self.ns))
        current = await pipe.execute()
        return {
            p
            for p, value in zip(wanted, current, strict=True)
            if value is None or int(value) != epochs[p]
        }

    async def _execute_save(
        self,
        groups: Mapping[int, Sequence[SessionState]],
        blobs: Mapping[int, list[bytes]],
        epochs: Mapping[int, int],
    ) -> set[int]:
        """Write ``groups`` in one pipeline; returns the partitions refused
        as fenced (the script's FENCED error), raises any other error."""
        pipe = self.client.pipeline(transaction=False)
        owners: list[int] = []  # the partition of each queued command
        for partition, states in groups.items():
            queued = self._queue_save(
                pipe, partition, states, blobs[partition], epochs.get(partition)
            )
            owners += [partition] * queued
        results = await pipe.execute(raise_on_error=False)
        fenced: set[int] = set()
        for partition, result in zip(owners, results, strict=True):
            if isinstance(result, NoScriptError):
                raise result
            if isinstance(result, ResponseError) and "FENCED" in str(result):
                fenced.add(partition)
            elif isinstance(result, Exception):
                raise result
        return fenced

    def _queue_save(
        self,
        pipe: Any,
        partition: int,
        states: Sequence[SessionState],
        blobs: list[bytes],
        epoch: int | None,
    ) -> int:
        """Queue the writes of one partition's states and index entries;
        returns the number of commands queued."""
        keys = [state_key(state.sid) for state in states]
        if not self.cluster:  # one script: the epoch checked, then everything written
            args: list[Any] = [self.ttl_ms, "" if epoch is None else epoch]
            for state, blob in zip(states, blobs, strict=True):
                due = "-" if self.check_at is None else self.check_at(state)
                args += [
                    state.sid,
                    blob,
                    state.last_ts if state.outcome is None else "",
                    "" if due is None else due,
                    1 if state.outbox else 0,
                ]
            index = (
                epoch_key(partition, self.ns),
                seen_key(partition, self.ns),
                check_key(partition, self.ns),
                outbox_key(partition, self.ns),
            )
            pipe.evalsha(SAVE_STATES_SHA, len(index) + len(keys), *index, *keys, *args)
            return 1
        queued = 0
        for key, blob in zip(keys, blobs, strict=True):
            pipe.set(key, blob, px=self.ttl_ms)
            queued += 1
        seen: dict[str, int] = {}
        closed: list[str] = []
        checks: dict[str, int] = {}
        unchecked: list[str] = []
        with_outbox: list[str] = []
        without_outbox: list[str] = []
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
        for command, key, members in (
            (pipe.zadd, seen_key(partition, self.ns), seen),
            (pipe.zrem, seen_key(partition, self.ns), closed),
            (pipe.zadd, check_key(partition, self.ns), checks),
            (pipe.zrem, check_key(partition, self.ns), unchecked),
            (pipe.sadd, outbox_key(partition, self.ns), with_outbox),
            (pipe.srem, outbox_key(partition, self.ns), without_outbox),
        ):
            if not members:
                continue
            if isinstance(members, dict):
                command(key, members)
            else:
                command(key, *members)
            queued += 1
        return queued

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
