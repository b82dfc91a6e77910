"""The one retry helper: forever, with backoff, and a stop that stops."""

from __future__ import annotations

import asyncio

import pytest

from stream.retry import Stopped, backoff, retry_forever


def test_a_stop_set_during_a_failed_try_raises_stopped_without_reporting_a_retry() -> None:
    stop = asyncio.Event()
    reported: list[float] = []

    async def fails_and_stops() -> None:
        stop.set()  # a SIGTERM arrives while the call is in flight
        raise ConnectionError("down")

    async def go() -> None:
        await retry_forever(
            fails_and_stops,
            wait=backoff(5.0, 5.0),
            on_failure=lambda exc, delay: reported.append(delay),
            stop=stop,
        )

    with pytest.raises(Stopped):
        asyncio.run(asyncio.wait_for(go(), 2.0))  # never waits the 5 s
    assert reported == []


def test_a_stop_during_the_wait_ends_it_at_once() -> None:
    stop = asyncio.Event()
    tries: list[int] = []

    async def fails() -> None:
        tries.append(1)
        asyncio.get_running_loop().call_later(0.05, stop.set)
        raise ConnectionError("down")

    async def go() -> None:
        await retry_forever(
            fails, wait=backoff(10.0, 10.0), on_failure=lambda e, d: None, stop=stop
        )

    with pytest.raises(Stopped):
        asyncio.run(asyncio.wait_for(go(), 2.0))
    assert tries == [1]


def test_errors_outside_retry_on_propagate_at_once() -> None:
    tries: list[int] = []

    async def broken() -> None:
        tries.append(1)
        raise KeyError("a bug, not an outage")

    async def go() -> None:
        await retry_forever(
            broken, wait=backoff(0.001, 0.001), on_failure=lambda e, d: None, retry_on=OSError
        )

    with pytest.raises(KeyError):
        asyncio.run(go())
    assert tries == [1]


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        backoff(0.0, 1.0)
    with pytest.raises(ValueError, match="initial_s"):
        backoff(2.0, 1.0)
