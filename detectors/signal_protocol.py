"""What a friction signal is: its registry row, its hits, and its one method.

A signal is a small class that reads the session state and one moment of the
session (an applied event, the page a page view leaves, or the close), and
returns the hits it produced. Every signal has the same shape, the
:class:`Signal` protocol, so the detector calls them all the same way and a
generic check suite (``tests/unit/test_signal_checks.py``) can run every
registered signal through the same tests. The registry itself, one
:class:`SignalSpec` row per signal name, is ``detectors.signals.SIGNAL_REGISTRY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:  # annotations only: journey and session import the registry
    from detectors.config import DetectorConfig
    from detectors.events import Event
    from detectors.journey import PageLeave
    from detectors.session import SessionState

#: An applied event (after the journey and forward progress were updated).
EVENT = "event"
#: A page view leaves the previous page (before the journey moves on).
LEAVE = "leave"
#: The session closes (goal reached, exit or timeout).
CLOSE = "close"
#: The moments at which a signal can observe a session. For a page view the
#: detector runs the leave first, then the event.
MOMENTS: tuple[str, ...] = (LEAVE, EVENT, CLOSE)


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One row of the signal registry: everything the rest of the core knows
    about a signal name.

    Attributes
    ----------
    name
        The signal's name, as in hits, reasons and ``data.reasons[].signal``.
    index
        Its position in ``SessionState.signal_counts``. Stored session states
        keep counts by position, so an index is never reused or moved.
    weight
        Its weight in the friction pile-up score (friction points per hit,
        0 = not friction: the models weigh it instead).
    cause
        The cause it stands for when it leads a friction alert; one of
        :data:`detectors.config.CAUSES`, a key part of the playbook.
    singular, plural
        The words a marketer reads after a count ("1 rage-click burst",
        "3 rage-click bursts").
    trust_feature
        The trust-model feature its count feeds (several signals may feed one
        feature; their counts add up), or ``None``.
    settings
        The :class:`~detectors.config.DetectorConfig` fields it reads.
    """

    name: str
    index: int
    weight: float
    cause: str
    singular: str
    plural: str
    trust_feature: str | None
    settings: tuple[str, ...] = ()

    def words(self, count: int) -> str:
        """The words for ``count`` of this signal.

        >>> spec = SignalSpec("x", 0, 1.0, "navigation", "page loop", "page loops", None)
        >>> spec.words(1), spec.words(2), spec.words(0)
        ('page loop', 'page loops', 'page loops')
        """
        return self.singular if count == 1 else self.plural


@dataclass(frozen=True, slots=True)
class SignalHit:
    """One firing of a signal: ``value`` is its measured size, in the unit
    its class documents (clicks in the burst, seconds of dwell, load ms...),
    ``ts`` the event time (epoch ms) and ``weight`` its friction weight
    (:attr:`SignalSpec.weight`, copied so a hit explains itself)."""

    name: str
    value: float
    ts: int
    weight: float


@dataclass(frozen=True, slots=True)
class Step:
    """The moment a signal observes.

    ``moment`` is one of :data:`MOMENTS`; ``ts`` is its event time (epoch
    ms). ``event`` is the applied event (``None`` at :data:`CLOSE`);
    ``gap_ms`` the time since the session's previous applied event (0 for
    its first); ``leave`` the page left (set at :data:`LEAVE` only);
    ``converted`` whether a closing session reached the goal.
    """

    moment: str
    ts: int
    event: Event | None = None
    gap_ms: int = 0
    leave: PageLeave | None = None
    converted: bool = False


class Signal(Protocol):
    """A friction signal.

    A signal keeps no per-session data of its own: everything it remembers
    lives in the :class:`~detectors.session.SessionState` it is given, which
    is what makes one instance safe to share across all sessions and a
    session safe to restore from its bytes. Its thresholds come from the
    config it is built with (``cls(config)``).

    ``specs`` are its registry rows, one per signal name it can emit.
    ``observes`` says when it runs: the event types it reads (at the
    :data:`EVENT` moment), plus :data:`LEAVE` and/or :data:`CLOSE`. The
    detector calls :meth:`observe` once per such moment, in the order of
    ``detectors.signals.SIGNAL_TYPES``.
    """

    specs: ClassVar[tuple[SignalSpec, ...]]
    observes: ClassVar[frozenset[str]]

    def __init__(self, config: DetectorConfig) -> None: ...

    def observe(self, state: SessionState, step: Step) -> list[SignalHit]:
        """Update ``state`` for this moment and return the hits it produced
        (names from ``specs``). Never raises for a valid event."""
        ...
