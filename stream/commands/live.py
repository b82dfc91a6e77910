"""Live traffic in and alerts out: ``simulate --kafka`` and ``alerts tail``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer

from detectors.simulation.simulator import SimConfig, Simulator
from stream.alert_view import alert_line, view_of
from stream.kafka_io import client_options, ensure_topics, make_producer
from stream.settings import Settings

#: Mean events per simulated session (measured over 10,000 sessions, seed 7).
#: Used to turn a target event rate into a session arrival rate.
EVENTS_PER_SESSION = 51.5
#: How far back the simulated site was already running when production starts.
WARM_START_S = 600


def live_events(
    rate: float,
    seed: int = SimConfig.seed,
    incident: bool = False,
    sessions: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Simulated events at about ``rate`` events/s whose event times track
    the wall clock from the first one yielded: the simulation starts
    ``WARM_START_S`` in the past and what happened before now is not
    yielded (traffic starts at full rate, with sessions joined midway, as a
    worker starting on a live site would see them). Simulating those ten
    minutes takes seconds, so every event yielded is shifted by that time:
    the caller sends each when the wall clock reaches its ``ts``, and the
    traffic starts without a burst of events already due. ``sessions``: the
    simulation's sessions in all (the warm start's included), else endless."""
    now_ms = int(time.time() * 1000)
    config = SimConfig(
        sessions=sessions if sessions is not None else 10**9,
        seed=seed,
        start_ts=now_ms - WARM_START_S * 1000,
        arrival_rate=rate / EVENTS_PER_SESSION,
        incident=incident,
    )
    shift = None
    for event in Simulator(config, keep_truth=False).events():
        if event["ts"] < now_ms:
            continue  # before the live part of the simulation
        if shift is None:
            shift = int(time.time() * 1000) - now_ms  # the time the warm start took
        event["ts"] += shift
        yield event


async def produce_simulation(
    settings: Settings,
    rate: float,
    sessions: int | None = None,
    duration_s: float | None = None,
    seed: int = SimConfig.seed,
    incident: bool = False,
    out: TextIO = sys.stderr,
) -> int:
    """Produce simulated events (:func:`live_events`) to the interactions
    topic at about ``rate`` events/s, each when the wall clock reaches its
    timestamp, for ``duration_s`` seconds or ``sessions`` sessions' worth.
    Returns the number of events produced."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    await ensure_topics(settings)
    producer = make_producer(settings, acks=1, enable_idempotence=False, linger_ms=20)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # closes what start() opened before it failed
        raise
    events = live_events(rate, seed, incident, sessions)
    started = None
    sent = 0
    encode = json.JSONEncoder(separators=(",", ":")).encode
    try:
        for event in events:
            now = time.time()
            if started is None:
                started = last_report = now
            if duration_s is not None and now - started >= duration_s:
                break
            ahead = event["ts"] / 1000.0 - now
            if ahead > 0.005:
                await asyncio.sleep(ahead)
            await producer.send(
                settings.topic_interactions,
                encode(event).encode(),
                key=event["session_id"].encode(),
            )
            sent += 1
            if now - last_report >= 5.0:
                last_report = now
                print(f"produced {sent} events ({sent / (now - started):.0f}/s)", file=out)
    finally:
        await producer.flush()
        await producer.stop()
    elapsed = max(time.time() - (started or time.time()), 1e-9)
    print(f"produced {sent} events in {elapsed:.1f}s ({sent / elapsed:.0f}/s)", file=out)
    return sent


def matches(event: dict[str, Any], kinds: set[str], page: str | None) -> bool:
    """Filter by kind and by a substring of the page (or hotspot key)."""
    data = event.get("data", {})
    if kinds and data.get("kind") not in kinds:
        return False
    return not (page and page not in str(data.get("page") or ""))


async def tail_alerts(
    settings: Settings,
    kinds: set[str],
    page: str | None,
    from_beginning: bool = False,
    as_json: bool = False,
    limit: int | None = None,
    idle_timeout_s: float | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print alerts as they arrive; stop after ``limit`` matches or after
    ``idle_timeout_s`` without messages. Returns the number printed."""
    consumer = AIOKafkaConsumer(
        settings.topic_alerts,
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()  # closes what start() opened before it failed
        raise
    shown = 0
    last_message = time.monotonic()
    try:
        while limit is None or shown < limit:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                if idle_timeout_s is not None and time.monotonic() - last_message > idle_timeout_s:
                    break
                continue
            last_message = time.monotonic()
            for messages in batch.values():
                for message in messages:
                    try:
                        event = json.loads(message.value)
                    except (TypeError, ValueError, RecursionError):
                        continue  # not JSON (or a tombstone): not an alert to show
                    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
                        continue
                    if not matches(event, kinds, page):
                        continue
                    line = json.dumps(event) if as_json else alert_line(view_of(event, None, True))
                    print(line, file=out, flush=True)
                    shown += 1
                    if limit is not None and shown >= limit:
                        return shown
    finally:
        await consumer.stop()
    return shown
