"""What the worker changes in Faust for speed (``stream.worker.faust_tuning``)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Any

import pytest

from stream.worker.faust_tuning import LeanMonitor, cython_loaded, install_uvloop


def test_faust_s_compiled_fast_paths_are_there_to_turn_on() -> None:
    # the faust-streaming wheel ships them; the worker logs and exports this at start-up
    assert cython_loaded() is True


def test_uvloop_only_when_asked_for_and_installed(caplog: pytest.LogCaptureFixture) -> None:
    policy = asyncio.get_event_loop_policy()
    assert install_uvloop(False) == "asyncio"
    assert asyncio.get_event_loop_policy() is policy
    if importlib.util.find_spec("uvloop") is None:
        with caplog.at_level(logging.WARNING):
            assert install_uvloop(True) == "asyncio"
        assert "not installed" in caplog.text
        assert asyncio.get_event_loop_policy() is policy


def test_the_lean_monitor_keeps_no_per_message_state() -> None:
    monitor = LeanMonitor()
    before = (monitor.messages_received_total, monitor.events_total, monitor.messages_sent)
    for _ in range(3):
        monitor.on_message_in(None, 0, None)
        monitor.on_stream_event_in(None, 0, None, None)
        monitor.on_stream_event_out(None, 0, None, None, None)
        monitor.on_send_initiated(None, "t", None, 1, 1)
    assert (monitor.messages_received_total, monitor.events_total, monitor.messages_sent) == before


async def test_the_worker_consumer_fetches_with_the_configured_max_wait() -> None:
    from stream.settings import Settings
    from stream.worker.app import create_app

    app = create_app(Settings.from_env({"DISENGAGE_KAFKA_FETCH_MAX_WAIT_MS": "120"}))
    thread: Any = getattr(app.consumer, "_thread")  # noqa: B009  (Faust's private)
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 120  # Faust's own: 1500
    finally:
        await consumer.stop()  # never started: only releases the client
