"""The shared hotspot monitors (``stream.worker.hotspot_agent``) and the
page visits the batch step sends them, on the memory store and a fake sink.

The workers' side: with ``share_hotspots`` a batch's page visits leave as
one record per hotspot key, after the states are saved, and a failed produce
keeps them for the retry. The monitors' side: records in, alerts out, bad
records dead-lettered, and the monitors checkpointed and restored.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from typing import Any

import pytest

from detectors.alerts import Alert
from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import Event, EventParser
from detectors.hotspots import PageVisit, visits_from_json, visits_to_json
from detectors.models import MODEL_NAME
from detectors.offline.runner import OfflineRunner
from detectors.simulation.simulator import SimConfig, Simulator
from detectors.store import MemorySessionStore
from stream.metrics import Metrics
from stream.records import Message, Record
from stream.worker.hotspot_agent import SharedHotspots, monitor_name
from stream.worker.pipeline import BatchProcessor
from tests.builders import T0
from tests.fakes import FakeClock, FakeSink

CFG = DetectorConfig()
PARTITIONS = 4
VISITS_TOPIC = "page-visits"


@pytest.fixture(scope="module")
def raw() -> list[dict[str, Any]]:
    """3,000 simulated sessions with the simulator's checkout incident."""
    return list(Simulator(SimConfig(sessions=3000, seed=11)).events())


@pytest.fixture(scope="module")
def events(raw: list[dict[str, Any]]) -> list[Event]:
    parser = EventParser(CFG)
    return [parser.parse(e) for e in raw]


@pytest.fixture(scope="module")
def offline(events: list[Event]) -> tuple[list[Alert], list[PageVisit]]:
    """One detector's own hotspot alerts, and the visits a sharing one sends
    (neither learns: hotspots do not depend on the learned models)."""
    alone = OfflineRunner(Detector(CFG, learn=False))
    sharing = Detector(CFG, learn=False, share_hotspots=True)
    runner = OfflineRunner(sharing)
    alerts: list[Alert] = []
    for event in events:
        alerts += [a for a in alone.feed(event) if a.kind == "friction_hotspot"]
        runner.feed(event)
    alerts += [a for a in alone.finish() if a.kind == "friction_hotspot"]
    runner.finish()
    return alerts, sharing.visits


def as_records(visits: list[PageVisit], per_record: int = 50) -> list[Message]:
    """``visits`` as page-visits records, keyed and partitioned by hotspot key
    as the worker produces them (a few visits of one key per record)."""
    messages: list[Message] = []
    offsets: Counter[int] = Counter()
    for start in range(0, len(visits), per_record):
        by_key: dict[str, list[PageVisit]] = {}
        for visit in visits[start : start + per_record]:
            by_key.setdefault(visit.key, []).append(visit)
        for key, group in by_key.items():
            p = zlib.crc32(key.encode()) % PARTITIONS
            messages.append(
                Message(visits_to_json(group), key.encode(), VISITS_TOPIC, p, offsets[p], T0)
            )
            offsets[p] += 1
    return messages


def agent(
    store: MemorySessionStore | None = None, sink: FakeSink | None = None
) -> SharedHotspots:
    clock = FakeClock(T0 / 1000)
    return SharedHotspots(
        CFG,
        store or MemorySessionStore(3600, clock),
        sink or FakeSink(clock),
        Metrics(),
        clock=clock,
        version=lambda: "v7",
    )


def produced(sink: FakeSink) -> list[dict[str, object]]:
    return [json.loads(record.value or b"") for _, record in sink.topic]


async def test_shared_monitors_raise_what_one_detector_raises_alone(
    offline: tuple[list[Alert], list[PageVisit]],
) -> None:
    alone, visits = offline
    assert alone, "the simulator's checkout incident must be found by one detector"
    sink = FakeSink(FakeClock(T0 / 1000))
    monitors = agent(sink=sink)
    messages = as_records(visits)
    for start in range(0, len(messages), 100):
        await monitors.process(messages[start : start + 100])
    alerts = produced(sink)
    # a key's visits reach one monitor in order: the same incidents, the same ids
    assert [a["id"] for a in alerts] == [a.id for a in alone]
    assert {a["data"]["model_version"] for a in alerts} == {"v7"}  # type: ignore[index]
    observed = monitors.metrics.registry.get_sample_value(
        "disengage_page_visits_total", {"side": "observed"}
    )
    assert observed == len(visits)
    rates = [
        s
        for fam in monitors.metrics.registry.collect()
        for s in fam.samples
        if s.name == "disengage_hotspot_problem_rate"
    ]
    assert rates and {s.labels["partition"] for s in rates} <= {
        str(p) for p in range(PARTITIONS)
    }


async def test_an_unreadable_record_is_dead_lettered_and_the_rest_observed() -> None:
    sink = FakeSink(FakeClock(T0 / 1000))
    monitors = agent(sink=sink)
    good = [PageVisit("checkout/2", False, f"e{i}", T0 + i) for i in range(5)]
    batch = [
        Message(visits_to_json(good), b"checkout/2", VISITS_TOPIC, 1, 0, T0),
        Message(b'{"not": "visits"}', b"checkout/2", VISITS_TOPIC, 1, 1, T0),
        Message(None, b"checkout/2", VISITS_TOPIC, 1, 2, T0),
        Message(b"[]", b"checkout/2", VISITS_TOPIC, 1, 3, T0),
    ]
    await monitors.process(batch)
    reasons = [dict(r.headers or [])["dlq.reason"] for r in sink.dead_letters]
    assert reasons == [b"invalid_visits"] * 3
    offsets = [dict(r.headers or [])["dlq.source.offset"] for r in sink.dead_letters]
    assert offsets == [b"1", b"2", b"3"]
    assert monitors.monitors[1].keys["checkout/2"].visits == 5


async def test_monitors_survive_a_handover_through_their_checkpoints(
    offline: tuple[list[Alert], list[PageVisit]],
) -> None:
    _, visits = offline
    clock = FakeClock(T0 / 1000)
    store = MemorySessionStore(3600, clock)
    first = agent(store=store)
    messages = as_records(visits[: len(visits) // 2])
    await first.process(messages)
    owned = sorted(first.monitors)
    before = {
        p: {key: (state.visits, first.monitors[p].rate(key)) for key, state in m.keys.items()}
        for p, m in first.monitors.items()
    }
    await first.revoke(owned)
    assert not first.monitors
    second = agent(store=store)
    await second.assign(owned)
    for p in owned:
        restored = second.monitors[p]
        assert {
            key: (state.visits, restored.rate(key)) for key, state in restored.keys.items()
        } == before[p]
    # and they go on as the first would have
    rest = as_records(visits[len(visits) // 2 :])
    await second.process(rest)
    assert sum(s.visits for m in second.monitors.values() for s in m.keys.values()) == len(
        visits
    )


async def test_an_unreadable_checkpoint_starts_an_empty_monitor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(T0 / 1000)
    store = MemorySessionStore(3600, clock)
    await store.save_blob(monitor_name(2), b"garbage")
    monitors = agent(store=store)
    await monitors.assign([2])
    assert monitors.monitors[2].keys == {}
    assert "ignoring its checkpoint" in caplog.text


async def test_a_failed_alert_produce_is_retried_without_observing_twice(
    offline: tuple[list[Alert], list[PageVisit]],
) -> None:
    alone, visits = offline
    sink = FakeSink(FakeClock(T0 / 1000))
    sink.fail_alerts.append(ConnectionError("broker down"))
    monitors = agent(sink=sink)
    await monitors.process(as_records(visits, per_record=len(visits)))
    assert [a["id"] for a in produced(sink)] == [a.id for a in alone]
    failures = monitors.metrics.registry.get_sample_value(
        "disengage_produce_failures_total", {"what": "alerts"}
    )
    assert failures == 1


# ------------------------------------------------------------ the workers' side
def worker(sink: FakeSink, share: bool) -> BatchProcessor:
    clock = FakeClock(T0 / 1000)
    return BatchProcessor(
        CFG,
        MemorySessionStore(3600, clock),
        sink,
        Metrics(),
        clock=clock,
        idle_grace_s=30.0,
        cache_sessions=1000,
        share_hotspots=share,
    )


def messages_of(raw: list[dict[str, Any]]) -> list[Message]:
    """Simulated events as input records, partitioned by session id."""
    out = []
    offsets: Counter[int] = Counter()
    for event in raw:
        sid = event["session_id"]
        p = zlib.crc32(sid.encode()) % PARTITIONS
        body = json.dumps(event).encode()
        out.append(Message(body, sid.encode(), "interactions", p, offsets[p], T0))
        offsets[p] += 1
    return out


def sent_visits(records: list[Record]) -> list[PageVisit]:
    out: list[PageVisit] = []
    for record in records:
        visits = visits_from_json(record.value or b"")
        assert {v.key for v in visits} == {(record.key or b"").decode()}  # keyed by hotspot key
        out += visits
    return out


async def test_a_sharing_worker_sends_each_page_visit_once_keyed_by_its_page(
    raw: list[dict[str, Any]],
) -> None:
    batch = messages_of(raw[:3000])
    sink = FakeSink(FakeClock(T0 / 1000))
    processor = worker(sink, share=True)
    for start in range(0, len(batch), 500):
        await processor.process(batch[start : start + 500])
    visits = sent_visits(sink.visits)
    assert visits and not processor.visit_backlog
    for part in processor.partitions.values():
        assert not part.detector.models.hotspots.keys  # nothing observed locally
    assert len({(v.key, v.event_id, v.ts) for v in visits}) == len(visits)
    sent = processor.metrics.registry.get_sample_value(
        "disengage_page_visits_total", {"side": "sent"}
    )
    assert sent == len(visits)
    # the same visits a detector per partition observes in its own monitor
    local = FakeSink(FakeClock(T0 / 1000))
    alone = worker(local, share=False)
    for start in range(0, len(batch), 500):
        await alone.process(batch[start : start + 500])
    assert not local.visits
    watched = sum(
        state.visits
        for part in alone.partitions.values()
        for state in part.detector.models.hotspots.keys.values()
    )
    assert watched == len(visits)


async def test_visits_of_a_failed_produce_are_sent_once_before_the_next_batch(
    raw: list[dict[str, Any]],
) -> None:
    batch = messages_of(raw[:2000])
    sink = FakeSink(FakeClock(T0 / 1000))
    processor = worker(sink, share=True)
    await processor.process(batch[:1000])
    before = len(sent_visits(sink.visits))
    sink.fail_visits.append(ConnectionError("broker down"))
    with pytest.raises(ConnectionError):
        await processor.process(batch[1000:])
    assert processor.visit_backlog and processor.undelivered
    await processor.process(batch[1000:])  # the retry: every event is a duplicate now
    assert not processor.visit_backlog
    visits = sent_visits(sink.visits)
    assert len(visits) > before
    assert len({(v.key, v.event_id, v.ts) for v in visits}) == len(visits)  # none twice


def test_the_served_version_names_untrained_models_as_the_detector_does() -> None:
    assert Detector(CFG).models.version == f"{MODEL_NAME}@0"
