"""Logging a fault once per state change, not once per failed try.

A Redis freeze or a broker outage makes every call fail, every few hundred
milliseconds, for as long as it lasts. Logging each failure (with its
traceback) buries the one line an operator needs under thousands. So:

* :class:`Fault` tracks one dependency or path (Redis, producing to Kafka,
  the batch loop) as failing or fine. It logs one line, with the cause, when
  it starts failing, and one line when it recovers, with how long it lasted and
  how many tries failed. The tries in between go to DEBUG.
* :class:`Throttled` is for conditions that recur rather than last (events
  from a wrong client clock): the first is logged, then at most one line per
  interval saying how many more there were.
* :class:`RepeatFilter` applies the same idea to the log records of the
  libraries underneath (aiokafka, Faust), which log every reconnect attempt.

Tracebacks are logged only at DEBUG; the cause is the exception's type and
message, in one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


def describe(exc: BaseException | str) -> str:
    """One line naming an error: its type and message (at most 200 chars).

    >>> describe(TimeoutError())
    'TimeoutError'
    >>> describe(ConnectionError("Connection refused"))
    'ConnectionError: Connection refused'
    """
    if isinstance(exc, str):
        return exc[:200]
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}"[:200] if text else name


class Fault:
    """A path that is either working or failing, logged once per change.

    >>> import logging
    >>> f = Fault("Redis", logging.getLogger("doctest"))
    >>> f.failed(TimeoutError(), "store load"); f.failed(TimeoutError(), "store load")
    >>> f.failing, f.failures
    (True, 2)
    >>> f.ok(); f.failing
    False
    """

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        *,
        level: int = logging.ERROR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.log = logger
        self.level = level
        self.clock = clock
        self.since: float | None = None
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException | str, context: str) -> None:
        """Record a failed try of ``context`` (what was being done)."""
        self.failures += 1
        if self.since is None:
            self.since = self.clock()
            self.log.log(
                self.level,
                "%s failing: %s: %s (retrying; logged again when it recovers)",
                self.name,
                context,
                describe(exc),
            )
        else:
            self.log.debug("%s still failing: %s: %s", self.name, context, describe(exc))
        if isinstance(exc, BaseException):
            self.log.debug("%s failure detail", self.name, exc_info=exc)

    def ok(self) -> None:
        """Record a success; logs the recovery if it was failing."""
        if self.since is None:
            return
        lasted = self.clock() - self.since
        self.log.warning(
            "%s recovered after %.1f s (%d failed tries)", self.name, lasted, self.failures
        )
        self.since = None
        self.failures = 0


class Throttled:
    """At most one log line per ``interval_s`` for a recurring condition.

    >>> import logging
    >>> now = [0.0]
    >>> t = Throttled(logging.getLogger("doctest"), 60.0, clock=lambda: now[0])
    >>> [t.log("x") for _ in range(3)]
    [True, False, False]
    >>> now[0] = 61.0; t.log("x"), t.suppressed
    (True, 0)
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float,
        *,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.level = level
        self.clock = clock
        self.last: float | None = None
        self.suppressed = 0

    def log(self, message: str) -> bool:
        """Log ``message`` unless one was logged within the interval; returns
        whether it was logged."""
        now = self.clock()
        if self.last is not None and now - self.last < self.interval_s:
            self.suppressed += 1
            return False
        more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
        self.logger.log(self.level, "%s%s", message, more)
        self.last, self.suppressed = now, 0
        return True


class RepeatFilter(logging.Filter):
    """Let a library's WARNING-or-worse record through once per ``interval_s``
    for each (logger, message template); later repeats within the interval
    are dropped and counted, and the next one that passes says how many.
    Tracebacks of let-through records are cut to their one-line cause.

    Only records of loggers under ``prefixes`` are touched.
    """

    def __init__(
        self,
        prefixes: tuple[str, ...] = ("aiokafka", "faust", "mode", "kafka"),
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(self.prefixes):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        dropped = last[1] if last is not None else 0
        self._seen[key] = (now, 0)
        if record.exc_info and record.exc_info[1] is not None:
            cause = describe(record.exc_info[1])
            record.msg = f"{record.getMessage()} ({cause})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        if dropped:
            window = f"{self.interval_s:.0f} s"
            record.msg = f"{record.getMessage()} [{dropped} similar in the last {window}]"
            record.args = ()
        return True


def quiet_library_repeats() -> None:
    """Install :class:`RepeatFilter` on the root handlers: during an outage
    aiokafka and Faust log every reconnect attempt, often with a traceback."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
