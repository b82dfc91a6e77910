"""Which offsets may be committed, and committing them.

Offsets are committed per partition up to the last message fully handled:
accepted by the webhook (2xx), dead-lettered, filtered, a duplicate, or held
back *and* summarised in a digest the webhook accepted. Posts go one at a time,
in partition order, so a failing webhook holds everything: nothing is committed
until it answers. Commits happen at most every ``commit_interval_s`` seconds,
on partition revocation and on exit.

Rebalances: a revocation commits what was handled and forgets the partitions;
an assignment starts them afresh, because aiokafka resumes a (re)assigned
partition from its committed offset, so no commit ever passes a message that
was not seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from aiokafka.errors import KafkaError

log = logging.getLogger("disengage.forward")

K = TypeVar("K", bound=Hashable)


class OffsetTracker(Generic[K]):
    """Per partition, the offset up to which every message is handled: the
    lowest offset still in progress, else one past the newest started.
    Partitions where nothing was handled yet have nothing to commit.

    >>> t: OffsetTracker[str] = OffsetTracker()
    >>> for offset in (5, 6, 7):
    ...     t.start("p0", offset)
    >>> t.done("p0", 5); t.done("p0", 7)
    >>> t.committable()  # 6 is still in progress
    {'p0': 6}
    """

    def __init__(self) -> None:
        self._pending: dict[K, set[int]] = {}
        self._next: dict[K, int] = {}
        self._first: dict[K, int] = {}

    def start(self, part: K, offset: int) -> None:
        self._pending.setdefault(part, set()).add(offset)
        self._first.setdefault(part, offset)
        self._next[part] = max(self._next.get(part, 0), offset + 1)

    def done(self, part: K, offset: int) -> None:
        """Mark handled; ignored for a partition forgotten meanwhile."""
        if part in self._pending:
            self._pending[part].discard(offset)

    def committable(self) -> dict[K, int]:
        """Partition -> the offset to commit (the next one to read), for the
        partitions where it moved past the first message seen."""
        out = {}
        for part, pending in self._pending.items():
            offset = min(pending) if pending else self._next[part]
            if offset > self._first[part]:
                out[part] = offset
        return out

    def forget(self, part: K) -> None:
        self._pending.pop(part, None)
        self._next.pop(part, None)
        self._first.pop(part, None)


class CommittingConsumer(Protocol):
    """aiokafka's consumer as far as commits go."""

    def assignment(self) -> Any: ...

    async def commit(self, offsets: Any) -> None: ...


class Commits:
    """Handled offsets of ``consumer``'s partitions, committed at most every
    ``interval_s`` seconds of ``clock`` (monotonic). A failed commit is logged
    and tried again at the next one: the offsets stay committable."""

    def __init__(
        self, consumer: CommittingConsumer, interval_s: float, clock: Callable[[], float]
    ) -> None:
        self.consumer = consumer
        self.interval_s = interval_s
        self.clock = clock
        self.tracker: OffsetTracker[Any] = OffsetTracker()
        self.committed: dict[Any, int] = {}
        self.last = clock()
        self._lock = asyncio.Lock()

    def start(self, part: Any, offset: int) -> None:
        self.tracker.start(part, offset)

    def done(self, part: Any, offset: int) -> None:
        self.tracker.done(part, offset)

    def restart_interval(self) -> None:
        """The next commit after one interval from now (the loop starts)."""
        self.last = self.clock()

    async def commit(self, force: bool = False, parts: Iterable[Any] | None = None) -> None:
        """Commit handled offsets (of ``parts`` only, when given) that moved
        since the last commit; unless ``force``, at most once per interval."""
        now = self.clock()
        if not force and now - self.last < self.interval_s:
            return
        async with self._lock:
            assigned = self.consumer.assignment()
            wanted = set(parts) if parts is not None else None
            offsets = {
                part: offset
                for part, offset in self.tracker.committable().items()
                if part in assigned
                and (wanted is None or part in wanted)
                and offset > self.committed.get(part, -1)
            }
            self.last = now
            if not offsets:
                return
            try:
                await self.consumer.commit(offsets)
            except KafkaError as exc:
                log.warning("commit failed (%s); will retry", exc)
                return
            self.committed.update(offsets)

    def forget(self, parts: Iterable[Any]) -> None:
        """Nothing of ``parts`` is tracked or remembered as committed any more."""
        for part in parts:
            self.tracker.forget(part)
            self.committed.pop(part, None)
