"""Session storage behind one interface, chosen by URL.

:class:`SessionStore` is what the streaming worker uses. ``memory://`` is
:class:`MemorySessionStore` here (replay, tests, the demo); ``redis://`` and
``rediss://`` are ``stream.redis_store.RedisSessionStore``. One contract test
suite runs against both.

Besides session states the store keeps, per Kafka partition, the last-seen
event time of every open session (for the expiry sweep), the time each quiet
session is next due for a hesitation check (for the check sweep; given by
the ``check_at`` function the store is built with, normally
:func:`detectors.detector.next_check`) and the set of sessions whose delivery
outbox is not empty, plus named binary blobs for model checkpoints. Expiry of
stored states is wall-clock TTL, so the memory store is given a clock: the
shell passes a real one, tests a fake they move by hand.

**Ownership epochs (fencing).** A worker that takes a partition over
claims it (:meth:`~SessionStore.claim`): a new epoch, greater than every
earlier claim's. Its saves carry that epoch, and a save for a partition claimed by
someone else since is refused whole, states and indexes
(:class:`Fenced`), while the other partitions of the same save are written.
So a worker the consumer group dropped (missed heartbeats) and that comes
back cannot overwrite what the new owner wrote: without it, a worker that
holds changed states in memory for seconds (write-behind) would write them
over the new owner's when it resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from detectors.session import SessionState

#: When a state is next due for a check (epoch ms of event time), or ``None``.
CheckAt = Callable[[SessionState], int | None]


class Fenced(Exception):
    """A save refused for partitions claimed by another owner since the
    saver's claim: none of their states or index entries were written; every
    other partition of the save was."""

    def __init__(self, partitions: Iterable[int]) -> None:
        self.partitions = frozenset(partitions)
        names = ", ".join(str(p) for p in sorted(self.partitions))
        super().__init__(f"partition(s) {names} claimed by another owner: not written")


def _earliest(index: Mapping[str, int], upto: int, limit: int) -> list[str]:
    """The ids of ``index`` scored at or before ``upto``, lowest score first
    (ties by id, as a Redis sorted set orders them), at most ``limit``."""
    ready = sorted((ts, sid) for sid, ts in index.items() if ts <= upto)
    return [sid for _, sid in ready[:limit]]


class SessionStore(Protocol):
    """Async storage of session states. All methods are safe to retry."""

    #: when a saved state is next due for a check (``None``: none are scheduled)
    check_at: CheckAt | None

    async def load(self, sids: Sequence[str]) -> dict[str, SessionState]:
        """States of the given sessions that exist (missing ids are absent)."""
        ...

    async def save(self, partition: int, states: Sequence[SessionState]) -> None:
        """Write states with a TTL; track open ones by last-seen time, the
        ones a check is due for by that time, and sessions with a non-empty
        outbox, all per ``partition``."""
        ...

    async def save_many(
        self,
        groups: Mapping[int, Sequence[SessionState]],
        epochs: Mapping[int, int] | None = None,
    ) -> None:
        """:meth:`save` for several partitions at once (one round trip). A
        partition with an entry in ``epochs`` is written only if that is its
        latest :meth:`claim`; :class:`Fenced` names the others, once every
        other partition is written."""
        ...

    async def claim(self, partition: int) -> int:
        """Take ``partition`` over: its new ownership epoch (greater than
        every earlier one), to pass to :meth:`save_many`."""
        ...

    async def due(self, partition: int, before_ts: int, limit: int) -> list[str]:
        """Open sessions of ``partition`` last seen at or before ``before_ts``
        (event-time ms), oldest first, at most ``limit`` of them."""
        ...

    async def checks_due(self, partition: int, now_ts: int, limit: int) -> list[str]:
        """Sessions of ``partition`` whose check is due at or before
        ``now_ts`` (event-time ms, see ``check_at``), earliest first, at most
        ``limit`` of them. A session leaves this index when a save finds no
        check due for it."""
        ...

    async def pending(self, partition: int) -> list[str]:
        """Sessions of ``partition`` whose outbox is not empty."""
        ...

    async def open_sessions(self, partition: int) -> int:
        """Number of open sessions tracked for ``partition``."""
        ...

    async def save_blob(self, name: str, blob: bytes) -> None:
        """Store a named blob (model checkpoints), no TTL."""
        ...

    async def load_blob(self, name: str) -> bytes | None:
        """The named blob, or ``None``."""
        ...

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemorySessionStore:
    """In-process :class:`SessionStore`; states are kept serialised, exactly
    as Redis would hold them, so both stores behave the same.

    >>> import asyncio
    >>> store = MemorySessionStore(ttl_s=60, clock=lambda: 0.0)
    >>> s = SessionState("a", last_ts=5)
    >>> asyncio.run(store.save(0, [s]))
    >>> asyncio.run(store.load(["a", "b"]))["a"] == s, asyncio.run(store.due(0, 5, 10))
    (True, ['a'])
    """

    def __init__(
        self,
        ttl_s: float,
        clock: Callable[[], float],
        check_at: CheckAt | None = None,
    ) -> None:
        """``ttl_s``: lifetime of a saved state in seconds of ``clock`` (any
        monotonic seconds: TTLs compare differences only); ``check_at``: when
        a saved state is next due for a check (``None``: no checks are
        scheduled, and :meth:`checks_due` finds none)."""
        self.ttl_s = ttl_s
        self.clock = clock
        self.check_at = check_at
        self._states: dict[str, tuple[float, bytes]] = {}
        self._last_seen: dict[int, dict[str, int]] = {}
        self._checks: dict[int, dict[str, int]] = {}
        self._pending: dict[int, set[str]] = {}
        self._blobs: dict[str, bytes] = {}
        self._epochs: dict[int, int] = {}

    async def load(self, sids: Sequence[str]) -> dict[str, SessionState]:
        now = self.clock()
        out: dict[str, SessionState] = {}
        for sid in sids:
            item = self._states.get(sid)
            if item is None:
                continue
            if item[0] <= now:
                del self._states[sid]
                continue
            out[sid] = SessionState.from_bytes(item[1])
        return out

    async def save_many(
        self,
        groups: Mapping[int, Sequence[SessionState]],
        epochs: Mapping[int, int] | None = None,
    ) -> None:
        fenced = []
        for partition, states in groups.items():
            if not states:
                continue  # nothing to write, nothing refused
            if epochs and partition in epochs and epochs[partition] != self._epochs.get(partition):
                fenced.append(partition)
                continue
            await self.save(partition, states)
        if fenced:
            raise Fenced(fenced)

    async def claim(self, partition: int) -> int:
        self._epochs[partition] = self._epochs.get(partition, 0) + 1
        return self._epochs[partition]

    async def save(self, partition: int, states: Sequence[SessionState]) -> None:
        deadline = self.clock() + self.ttl_s
        seen = self._last_seen.setdefault(partition, {})
        checks = self._checks.setdefault(partition, {})
        pending = self._pending.setdefault(partition, set())
        for state in states:
            self._states[state.sid] = (deadline, state.to_bytes())
            if state.outcome is None:
                seen[state.sid] = state.last_ts
            else:
                seen.pop(state.sid, None)
            due = self.check_at(state) if self.check_at is not None else None
            if due is None:
                checks.pop(state.sid, None)
            else:
                checks[state.sid] = due
            if state.outbox:
                pending.add(state.sid)
            else:
                pending.discard(state.sid)

    async def due(self, partition: int, before_ts: int, limit: int) -> list[str]:
        return _earliest(self._last_seen.get(partition, {}), before_ts, limit)

    async def checks_due(self, partition: int, now_ts: int, limit: int) -> list[str]:
        return _earliest(self._checks.get(partition, {}), now_ts, limit)

    async def pending(self, partition: int) -> list[str]:
        return sorted(self._pending.get(partition, set()))

    async def open_sessions(self, partition: int) -> int:
        return len(self._last_seen.get(partition, {}))

    async def save_blob(self, name: str, blob: bytes) -> None:
        self._blobs[name] = bytes(blob)

    async def load_blob(self, name: str) -> bytes | None:
        return self._blobs.get(name)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
