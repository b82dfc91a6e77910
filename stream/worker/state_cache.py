"""The worker's bounded cache of session states, in front of the session store.

Write-through: every state put here is saved to the store in the same batch,
so a hit only saves the read and the decoding, and losing the cache loses
nothing. The least recently used state goes first once ``capacity`` is
reached; the states of a partition the worker gives up are dropped, since the
next owner may change them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from detectors.session import SessionState


class StateCache:
    """Least-recently-used states of owned partitions, at most ``capacity``
    of them (0 disables the cache).

    >>> cache = StateCache(capacity=2)
    >>> for sid in ("a", "b", "c"):
    ...     cache.put(0, SessionState(sid))
    >>> len(cache), cache.get("a"), cache.get("c").sid
    (2, None, 'c')
    >>> cache.forget({0}); len(cache)
    0
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[str, tuple[int, SessionState]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, sid: object) -> bool:
        return sid in self._states

    def get(self, sid: str) -> SessionState | None:
        """The cached state of ``sid``, now the most recently used, or ``None``."""
        hit = self._states.get(sid)
        if hit is None:
            return None
        self._states.move_to_end(sid)
        return hit[1]

    def put(self, partition: int, state: SessionState) -> None:
        """Remember ``state`` (of ``partition``), evicting the least recently used."""
        if self.capacity <= 0:
            return
        self._states[state.sid] = (partition, state)
        self._states.move_to_end(state.sid)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the states of ``partitions`` (given up: another worker owns them now)."""
        gone = set(partitions)
        for sid in [sid for sid, (p, _) in self._states.items() if p in gone]:
            del self._states[sid]
