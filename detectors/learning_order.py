"""The order in which closed sessions are learned: the order they closed in.

River's learners are order-dependent: the adaptive random forest's trees and
drift detectors, and even the online linear model's steps, end somewhere else
when the same examples come in another order. On the simulator's stream, ten
neighbouring examples swapped out of 3,488 moved the forest's prefix AUC at
25% from 0.743 to 0.714. So "the same examples" is not enough for a
deployment's trainer to reach the offline replay's models: the order must be
the same too, and the order in which workers produce examples depends on how
fast each drains its partitions (in a backlog, hours of event time apart).

:class:`CloseOrder` fixes the order to ``(closed_ts, id)``, the event time a
session closed and its example's id (a tie-break that does not depend on
arrival). Examples are *held* until a *watermark* (event time, ms) passes
them, then *released* sorted. Releases are ordered with one another (each
releases only what closed after the previous watermark), so the sequence
learned is the same whatever the release points, as long as no example
arrives after a watermark passed it (a *late* one, which the caller learns at
once). Both the offline runner (watermark: its stream clock less the allowed
lateness) and the trainer (watermark: the slowest input partition's closure
mark, :class:`~detectors.training.Mark`) learn through it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from detectors.training import Example

#: Examples a trainer holds at most by default (``DISENGAGE_TRAINER_HOLD_MAX``):
#: beyond it the oldest are learned without waiting for the watermark. A held
#: example is ~2-4 kB in memory (its snapshots and moments), so ~200 MB at most;
#: live, the trainer holds a sweep interval and the allowed lateness of
#: closes (~35 s: ~7,000 at 200 sessions/s).
HOLD_MAX = 50_000


class CloseOrder:
    """Examples held until a watermark passes their close, released in
    ``(closed_ts, id)`` order; each with the training-topic offset it came
    from (``-1`` offline).

    >>> from array import array
    >>> def ex(sid, closed):
    ...     return Example(sid, 0, closed, closed, "exit", (), (), ())
    >>> order = CloseOrder()
    >>> order.hold(ex("b", 20), 0); order.hold(ex("a", 30), 1); order.hold(ex("c", 10), 2)
    >>> [e.sid for e, _ in order.release(20)], len(order), order.offsets()
    (['c', 'b'], 1, [1])
    >>> [e.sid for e, _ in order.drain()]
    ['a']
    """

    def __init__(self, hold_max: int = HOLD_MAX) -> None:
        if hold_max < 1:
            raise ValueError("hold_max must be at least 1")
        self.hold_max = hold_max
        self._heap: list[tuple[int, str, int, Example]] = []
        self._ids: set[str] = set()
        #: the highest watermark released to (ms; ``None`` before the first release)
        self.watermark: int | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def __contains__(self, example_id: object) -> bool:
        return example_id in self._ids

    def is_late(self, example: Example) -> bool:
        """Whether ``example`` closed at or before a watermark already released
        (holding it would not put it back in order: learn it at once)."""
        return self.watermark is not None and example.closed_ts <= self.watermark

    def hold(self, example: Example, offset: int = -1) -> None:
        """Hold ``example`` (by its id: the caller drops duplicates first)."""
        heapq.heappush(self._heap, (example.closed_ts, example.id, offset, example))
        self._ids.add(example.id)

    def _pop(self) -> tuple[Example, int]:
        _, example_id, offset, example = heapq.heappop(self._heap)
        self._ids.discard(example_id)
        return example, offset

    def release(self, watermark: int) -> list[tuple[Example, int]]:
        """The examples closed at or before ``watermark``, in order (and the
        watermark moves there; it never moves back)."""
        if self.watermark is not None and watermark <= self.watermark:
            return []
        self.watermark = watermark
        out = []
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            out.append(self._pop())
        return out

    def overflow(self) -> list[tuple[Example, int]]:
        """The oldest examples beyond :attr:`hold_max`, in order; the
        watermark moves to the last one's close (those closed before it
        now arrive late)."""
        out = []
        while len(self._heap) > self.hold_max:
            out.append(self._pop())
        if out:
            last = out[-1][0].closed_ts
            self.watermark = last if self.watermark is None else max(self.watermark, last)
        return out

    def drain(self) -> Iterator[tuple[Example, int]]:
        """Every held example, in order (the end of the input)."""
        while self._heap:
            yield self._pop()

    def offsets(self) -> list[int]:
        """The training-topic offsets of the held examples, ascending."""
        return sorted(item[2] for item in self._heap)
