"""The one retry helper of the shell: try again, with backoff, until it works or we stop.

Every place that must not give up (a batch that would otherwise lose events, a
Redis call, an alert the webhook has not accepted yet) calls :func:`retry_forever`
with a wait strategy from :func:`backoff`. The loop itself is tenacity's; this
module only fixes the policy the shell wants everywhere:

* retry forever: losing data is worse than stalling, and a stalled worker shows
  on the dashboards (lag, readiness) where a dropped batch would not;
* report each failure with the delay before the next try, so the caller can
  count it in a metric and log it once, without a traceback per retry;
* stop promptly: the wait is cut short when ``stop`` is set, and
  :class:`Stopped` is raised instead of trying again.

>>> import asyncio
>>> calls = []
>>> async def flaky() -> str:
...     calls.append(1)
...     if len(calls) < 3:
...         raise ConnectionError("down")
...     return "ok"
>>> seen = []
>>> asyncio.run(retry_forever(flaky, wait=backoff(0.001, 0.002),
...                           on_failure=lambda exc, delay: seen.append(type(exc).__name__)))
'ok'
>>> seen
['ConnectionError', 'ConnectionError']
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.wait import wait_base

T = TypeVar("T")

__all__ = ["Stopped", "backoff", "cancelled_by_caller", "retry_forever"]


class Stopped(Exception):
    """Raised by :func:`retry_forever` when ``stop`` was set while it waited."""


def backoff(initial_s: float, max_s: float, *, jitter: bool = False) -> wait_base:
    """Exponential backoff: ``initial_s * 2**(n-1)`` seconds before try ``n+1``, capped.

    With ``jitter`` the wait is drawn uniformly from ``[0, that]`` ("full jitter",
    AWS Architecture Blog, *Exponential Backoff and Jitter*, 2015), which keeps
    many clients that failed together from retrying together.

    >>> from types import SimpleNamespace
    >>> wait = backoff(0.1, 5.0)
    >>> [round(wait(SimpleNamespace(attempt_number=n)), 3) for n in (1, 2, 3, 8)]
    [0.1, 0.2, 0.4, 5.0]
    """
    if initial_s <= 0 or max_s < initial_s:
        raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {initial_s}, {max_s}")
    if jitter:
        return wait_random_exponential(multiplier=initial_s, max=max_s)
    return wait_exponential(multiplier=initial_s, max=max_s)


async def retry_forever(
    fn: Callable[[], Awaitable[T]],
    *,
    wait: wait_base | Callable[[RetryCallState], float],
    on_failure: Callable[[BaseException, float], None],
    stop: asyncio.Event | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    give_up_on: tuple[type[BaseException], ...] = (),
) -> T:
    """``await fn()`` until it returns, waiting ``wait`` between tries.

    ``on_failure(exc, delay_s)`` is called after each failed try with the delay
    before the next one. Exceptions outside ``retry_on`` or in ``give_up_on``
    propagate at once, and so does cancellation. Raises :class:`Stopped` if
    ``stop`` is set during a wait.
    """

    async def sleep(seconds: float) -> None:
        if stop is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            return
        raise Stopped

    def before_sleep(state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        if stop is not None and stop.is_set():
            raise Stopped  # no "retrying in ..." for a retry that will not happen
        exc = state.outcome.exception()
        assert exc is not None
        on_failure(exc, state.next_action.sleep)

    if stop is not None and stop.is_set():
        raise Stopped
    retrying = AsyncRetrying(
        wait=wait,
        sleep=sleep,
        retry=retry_if_exception_type(retry_on) & retry_if_not_exception_type(give_up_on),
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retrying(fn)


def cancelled_by_caller() -> bool:
    """Whether the running task is really being cancelled, as opposed to a
    ``CancelledError`` that leaked out of a library call (aiokafka 0.14's
    ``consumer.stop()`` right after ``start()``): only the first must be
    re-raised; the second is a failure like any other, to retry."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
