"""The worker's cache of session states, in front of the session store.

Two parts:

* the **least-recently-used** states of owned partitions, at most
  ``capacity`` of them, which saves the store's read and the decoding;
* the **dirty** states: changed by a batch and not yet written to the store
  (write-behind, ``DISENGAGE_STATE_FLUSH_S``; see
  :class:`~stream.worker.delivery.SessionDelivery`). Each remembers when it
  first became dirty, in wall and in event time, and the input offset of the
  event that made it so: a state is written once it has been dirty for the
  flush interval, or its partition's event time has moved that far past it
  (in a backlog event time runs ahead, and a replay after a crash must stay
  within what each state's de-duplication ring remembers), so one write
  covers every event of the session in that time, and the input's offsets
  are committed only below the first event of a dirty state
  (:meth:`first_offsets`), except one whose only unwritten change is a
  delivered outbox's clear (:meth:`mark_due`: written at the next chance,
  and nothing is lost if a crash comes first). A dirty state stays here, found by :meth:`get`,
  until it is written, even when the LRU part lets it go, so a read never
  sees the store's older copy.

With write-through (no flush interval) nothing is ever dirty and losing the
cache loses nothing. The states of a partition the worker gives up are
dropped, after their dirty ones were written, since the next owner may change
them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from detectors.session import SessionState

#: The input offset of a dirty state no commit waits for: one whose only
#: unwritten change is an outbox cleared after its delivery (the stored copy
#: still holds it, and a recovery delivers it again, skipping the alerts the
#: topic already has, so committing past it loses nothing).
UNBOUNDED: Final = 2**63


@dataclass(slots=True)
class Dirty:
    """A state not yet written: since when (monotonic seconds, and its
    partition's event-time watermark then, epoch ms) and from which input
    offset of that partition on it differs from the store's."""

    state: SessionState
    since: float
    watermark: int
    offset: int


class StateCache:
    """Least-recently-used states of owned partitions, at most ``capacity``
    of them (0 disables that part), plus every dirty state.

    >>> cache = StateCache(capacity=2)
    >>> for sid in ("a", "b", "c"):
    ...     cache.put(0, SessionState(sid))
    >>> len(cache), cache.get("a"), cache.get("c").sid
    (2, None, 'c')
    >>> d = SessionState("d")
    >>> cache.mark(1, d, since=10.0, watermark=5_000, offset=7)
    >>> cache.put(1, SessionState("e")); cache.put(1, SessionState("f"))
    >>> cache.get("d").sid, cache.first_offsets()  # out of the LRU part, still dirty
    ('d', {1: 7})
    >>> [s.sid for _, s in cache.due(before=9.0, event_before={1: 4_000})]
    []
    >>> [s.sid for _, s in cache.due(before=9.0, event_before={1: 5_000})]  # event time
    ['d']
    >>> [s.sid for _, s in cache.due(before=10.0, event_before={})]  # wall time
    ['d']
    >>> cache.written([(1, d)]); cache.get("d") is None, cache.first_offsets()
    (True, {})
    >>> e = SessionState("e2")
    >>> cache.mark(1, e, since=11.0, watermark=6_000, offset=8)
    >>> cache.mark_due(1, d)  # its outbox was delivered and cleared, say
    >>> cache.dirty_count, cache.first_offsets()  # no commit waits for d
    (2, {1: 8})
    >>> [s.sid for _, s in cache.due(before=0.0, event_before={1: 0})]  # d at once
    ['d']
    >>> cache.mark(1, d, since=12.0, watermark=7_000, offset=9)
    >>> cache.written([(1, e)]); cache.first_offsets()  # a change by record 9 does
    {1: 9}
    >>> cache.written([(1, d)])
    >>> cache.forget({0, 1}); len(cache)
    0
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[str, tuple[int, SessionState]] = OrderedDict()
        #: per partition, in the order the states first became dirty there
        self._dirty: dict[int, OrderedDict[str, Dirty]] = {}
        #: the partitions a dirty session is dirty in, the latest last (a
        #: session's events in two partitions: the topic got more partitions,
        #: or a producer does not key by session id)
        self._where: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, sid: object) -> bool:
        return sid in self._states or sid in self._where

    @property
    def dirty_count(self) -> int:
        """Sessions whose state changed and is not yet written to the store."""
        return len(self._where)

    def get(self, sid: str) -> SessionState | None:
        """The cached state of ``sid``, now the most recently used, or ``None``."""
        hit = self._states.get(sid)
        if hit is not None:
            self._states.move_to_end(sid)
            return hit[1]
        where = self._where.get(sid)
        return None if where is None else self._dirty[where[-1]][sid].state

    def put(self, partition: int, state: SessionState) -> None:
        """Remember ``state`` (of ``partition``) as read from the store,
        evicting the least recently used; a dirty one stays dirty until
        :meth:`written`."""
        if self.capacity <= 0:
            return
        self._states[state.sid] = (partition, state)
        self._states.move_to_end(state.sid)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def mark(
        self, partition: int, state: SessionState, since: float, watermark: int, offset: int
    ) -> None:
        """Remember ``state`` as changed at ``since`` (monotonic seconds,
        the partition's event-time ``watermark`` then) by the input record
        at ``offset`` (:data:`UNBOUNDED`: by no record a commit must wait
        for), and not written yet; a state already dirty in the partition
        keeps its first times and the lowest offset."""
        where = self._where.setdefault(state.sid, [])
        for p in where:  # every copy is this state now (a reopened session is a new object)
            self._dirty[p][state.sid].state = state
        if partition not in where:
            dirty = self._dirty.setdefault(partition, OrderedDict())
            dirty[state.sid] = Dirty(state, since, watermark, offset)
            where.append(partition)
        else:
            entry = self._dirty[partition][state.sid]
            entry.offset = min(entry.offset, offset)
            if where[-1] != partition:
                where.remove(partition)
                where.append(partition)
        self.put(partition, state)

    def mark_due(self, partition: int, state: SessionState) -> None:
        """Remember ``state`` as changed in a way no commit waits for (offset
        :data:`UNBOUNDED`: an outbox cleared after its delivery) and due at
        once: the next :meth:`due` returns it. A state already dirty in the
        partition keeps its times and offset."""
        new = partition not in self._where.get(state.sid, ())
        self.mark(partition, state, -math.inf, -UNBOUNDED, UNBOUNDED)
        if new:  # first in line: due() reads each partition from its oldest on
            self._dirty[partition].move_to_end(state.sid, last=False)

    def due(
        self, before: float, event_before: Mapping[int, int], keep: int | None = None
    ) -> list[tuple[int, SessionState]]:
        """The dirty states that became dirty at ``before`` (monotonic
        seconds) or earlier, or when their partition's watermark was at or
        before its ``event_before`` (epoch ms: in a backlog event time runs
        ahead of the wall clock), and the oldest others of each partition
        beyond its share of the ``keep`` newest; each with the partition it
        was last changed in, once. They stay dirty until :meth:`written`.
        Each partition is read from its oldest state on, up to the first
        that is not due (both times only grow along it)."""
        out: dict[str, tuple[int, SessionState]] = {}
        share = None if keep is None else keep // max(1, len(self._dirty))
        for partition, dirty in self._dirty.items():
            over = 0 if share is None else len(dirty) - share
            event_limit = event_before.get(partition)
            for i, (sid, entry) in enumerate(dirty.items()):
                if (
                    i >= over
                    and entry.since > before
                    and (event_limit is None or entry.watermark > event_limit)
                ):
                    break
                out[sid] = (self._where[sid][-1], entry.state)
        return list(out.values())

    def dirty(self, partitions: Iterable[int] | None = None) -> list[tuple[int, SessionState]]:
        """The dirty states (of ``partitions``, default all), each with the
        partition it was last changed in, once; they stay dirty until
        :meth:`written`."""
        wanted = self._dirty.keys() if partitions is None else set(partitions)
        out: dict[str, tuple[int, SessionState]] = {}
        for p, dirty in self._dirty.items():
            if p in wanted:
                for sid, entry in dirty.items():
                    out[sid] = (self._where[sid][-1], entry.state)
        return list(out.values())

    def first_offsets(self) -> dict[int, int]:
        """Per partition with dirty states, the input offset of the earliest
        event not yet written to the store: the offsets committed stay below
        it (a partition whose dirty states all have :data:`UNBOUNDED` offsets
        is not listed)."""
        firsts = {
            p: min(entry.offset for entry in dirty.values())
            for p, dirty in self._dirty.items()
            if dirty
        }
        return {p: first for p, first in firsts.items() if first < UNBOUNDED}

    def written(self, items: Iterable[tuple[int, SessionState]]) -> None:
        """These states were written to the store: no longer dirty, unless
        the session's state changed to another object meanwhile."""
        for _, state in items:
            where = self._where.get(state.sid)
            if where is None or self._dirty[where[-1]][state.sid].state is not state:
                continue
            for p in self._where.pop(state.sid):
                del self._dirty[p][state.sid]

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the states of ``partitions`` (given up: another worker owns
        them now), dirty ones included: write those first."""
        gone = set(partitions)
        for sid in [sid for sid, (p, _) in self._states.items() if p in gone]:
            del self._states[sid]
        for p in gone:
            for sid in self._dirty.pop(p, {}):
                where = self._where[sid]
                where.remove(p)
                if not where:
                    del self._where[sid]
