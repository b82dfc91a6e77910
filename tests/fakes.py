"""Fakes shared by the tests of the shell: small classes that honour an interface.

No mocks: each fake implements the protocol the code under test asks for (a
clock, a sink, a poster, ...), records what it was given, and can be scripted to
fail. Builders of core objects (events, a driven detector) live in
``tests/builders.py``.
"""

from __future__ import annotations


class FakeClock:
    """A wall or monotonic clock in seconds that moves only when told to.

    >>> clock = FakeClock(10.0)
    >>> clock(), clock.advance(2.5), clock()
    (10.0, None, 12.5)
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
