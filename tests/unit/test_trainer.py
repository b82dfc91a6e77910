"""Learning off the hot path, in the core (no I/O): examples, the trainer's
step, and the equivalence of learning at once and learning from the topic."""

from __future__ import annotations

import json
from array import array
from dataclasses import replace
from functools import cache
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from detectors.alerts import rfc3339
from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import EventParser
from detectors.features import TRUST_FEATURES
from detectors.models import DetectorModels
from detectors.offline.runner import OfflineRunner
from detectors.signals import SIGNALS
from detectors.simulation.simulator import SimConfig, Simulator
from detectors.trainer import RECENT_IDS, Position, Trainer
from detectors.training import Example, Mark, example_event, example_from_event, mark_event
from stream.metrics import TrainerMetrics
from stream.settings import Settings
from stream.trainer.restore import Restored
from stream.trainer.service import TrainerService, _Listener
from tests.fakes import FakeConsumer

CONFIG = DetectorConfig()


@cache
def simulated_examples(sessions: int = 400) -> tuple[Example, ...]:
    """The examples a worker (``learn`` off) makes of simulated traffic, in close order."""
    detector = Detector(CONFIG, learn=False)
    runner = OfflineRunner(detector)
    parse = EventParser(CONFIG).parse
    for e in Simulator(SimConfig(sessions=sessions, seed=5)).events():
        runner.feed(parse(e))
    runner.finish()
    return tuple(detector.examples)


def records(examples: tuple[Example, ...] | list[Example]) -> list[bytes]:
    return [json.dumps(example_event(e, "test", "t")).encode() for e in examples]


def mark(partition: int, partitions: int, ts: int | None) -> bytes:
    return json.dumps(mark_event(Mark(partition, partitions, ts), "test", "t")).encode()


def close_order(examples: tuple[Example, ...] | list[Example]) -> list[Example]:
    return sorted(examples, key=lambda e: (e.closed_ts, e.id))


def replayed(sessions: int = 400, seed: int = 5) -> DetectorModels:
    """The models the offline replay learns (inline, in close order)."""
    inline = Detector(CONFIG)
    runner = OfflineRunner(inline)
    parse = EventParser(CONFIG).parse
    for e in Simulator(SimConfig(sessions=sessions, seed=seed)).events():
        runner.feed(parse(e))
    runner.finish()
    assert runner.held == 0
    return inline.models


def partitioned_stream(examples: tuple[Example, ...], partitions: int, seed: int) -> list[bytes]:
    """The training topic of ``partitions`` input partitions drained unevenly:
    each partition's examples in the order its worker closed them, in chunks
    of random size, the partitions' chunks interleaved at random (one
    partition may run far ahead), each chunk followed by its partition's mark
    as a worker sends it (nothing of the partition closed at or before it is
    still to come); at the end, marks past every close."""
    import random

    rng = random.Random(seed)
    own: list[list[Example]] = [[] for _ in range(partitions)]
    for e in examples:
        own[int(e.id, 16) % partitions].append(e)
    start = min(e.closed_ts for e in examples) - 1
    out = [mark(p, partitions, start) for p in range(partitions)]
    while any(own):
        p = rng.choice([i for i, left in enumerate(own) if left])
        size = rng.randint(1, 40)
        chunk = own[p][:size]
        del own[p][:size]
        out += records(chunk)
        if own[p]:  # the partition's next closes are still to come
            out.append(mark(p, partitions, min(e.closed_ts for e in own[p]) - 1))
    end = max(e.closed_ts for e in examples)
    out += [mark(p, partitions, end) for p in range(partitions)]
    return out


def probe_predictions(models: DetectorModels) -> list[float]:
    out = []
    for example in simulated_examples()[:30]:
        out += [models.trust.predict_vector(list(v)) for _, v in example.snapshots]
        out += [models.hazard.predict(list(v)) for _, v in example.moments]
    out += [mean.get() for mean in models.signal_means]
    return out


def trust_predictions(models: DetectorModels) -> list[float]:
    """The trust model's output on a fixed probe (the replay's hesitation
    moments differ from a worker's: they carry the scores of the models
    learning as it goes, a worker's those of the version it serves)."""
    probe = [list(v) for e in simulated_examples()[:30] for _, v in e.snapshots]
    return [models.trust.predict_vector(x) for x in probe]


def service_at(now: list[float]) -> tuple[TrainerService, Trainer]:
    """A trainer service learning with the core's trainer, on the clock ``now[0]``
    (its ``_learn`` and ``_publish_due`` never reach the registry)."""
    service = TrainerService(
        Settings(),
        registry=None,  # type: ignore[arg-type]
        metrics=TrainerMetrics(CollectorRegistry()),
        clock=lambda: now[0],
    )
    service.trainer = trainer = Trainer(CONFIG)
    return service, trainer


def test_a_closed_session_becomes_one_exact_example() -> None:
    examples = simulated_examples()
    assert len(examples) > 380  # every session closes, some twice (a returning visit)
    assert len({e.id for e in examples}) == len(examples)  # one id per visit
    assert {e.outcome for e in examples} == {"converted", "exit", "timeout"}
    for example in examples[:50]:
        again = example_from_event(records([example])[0])
        assert again == example and again.id == example.id
    with_snapshots = [e for e in examples if e.snapshots]
    assert all(len(v) == len(TRUST_FEATURES) for e in with_snapshots for _, v in e.snapshots)


def test_the_worker_learns_nothing_and_the_trainer_learns_what_it_would() -> None:
    """Learning at once (replay) and learning the examples later (the trainer)
    run the same code in the same order: the models end equal."""
    inline = replayed()
    trainer = Trainer(CONFIG)
    for offset, value in enumerate(records(close_order(simulated_examples()))):
        assert trainer.apply(offset, value) == "learned"  # no marks: in topic order
    assert trainer.models.trust.closed == inline.trust.closed == len(simulated_examples())
    assert trust_predictions(trainer.models) == trust_predictions(inline)


def test_partitions_drained_unevenly_teach_the_trainer_the_replays_models() -> None:
    """Whatever order the workers' partitions reach the topic in, the trainer
    learns the examples in the order they closed, as the replay does: its
    models equal the replay's exactly (River's forest is order-sensitive:
    out of order, the same examples give other trees)."""
    inline = replayed()
    for partitions, seed in ((4, 1), (8, 2)):
        values = partitioned_stream(simulated_examples(), partitions, seed)
        trainer = Trainer(CONFIG)
        statuses = [trainer.apply(offset, value) for offset, value in enumerate(values)]
        assert statuses.count("held") == len(simulated_examples())
        assert "late" not in statuses and "learned" not in statuses
        assert trainer.held == 0 and trainer.models.examples == len(simulated_examples())
        assert trust_predictions(trainer.models) == trust_predictions(inline)
    # in topic order instead, the models differ: the order is what matters
    topic_order = Trainer(CONFIG)
    plain = [v for v in values if b"training-mark" not in v]
    for offset, value in enumerate(plain):
        topic_order.apply(offset, value)
    assert trust_predictions(topic_order.models) != trust_predictions(inline)


def test_a_partition_without_a_mark_holds_learning_until_the_cap() -> None:
    examples = close_order(simulated_examples()[:30])
    trainer = Trainer(CONFIG, hold_max=10)
    assert trainer.apply(0, mark(0, 2, examples[-1].closed_ts)) == "mark"
    statuses = [trainer.apply(i + 1, v) for i, v in enumerate(records(examples))]
    assert statuses == ["held"] * 30
    # partition 1 never sent a mark: the oldest beyond the cap are learned
    assert trainer.held == 10 and trainer.models.examples == 20
    assert trainer.order.watermark == examples[19].closed_ts
    # a partition with no events holds nothing back
    assert trainer.apply(31, mark(1, 2, None)) == "mark"
    assert trainer.held == 0 and trainer.models.examples == 30


def test_an_example_closed_before_the_watermark_is_learned_at_once() -> None:
    first, second = close_order(simulated_examples()[:2])
    trainer = Trainer(CONFIG)
    trainer.apply(0, mark(0, 1, second.closed_ts))
    assert trainer.apply(1, records([first])[0]) == "late"
    assert trainer.models.examples == 1
    assert trainer.apply(2, records([first])[0]) == "duplicate"


def test_an_example_a_fast_client_clock_closed_far_ahead_is_learned_at_once() -> None:
    """Held, an example closed an hour ahead of its production would pin the
    trainer's resume offset until the marks caught up: learned at once."""
    first, second = close_order(simulated_examples()[:2])
    ahead = replace(second, closed_ts=second.closed_ts + 3_600_000)
    produced = rfc3339(second.closed_ts)
    trainer = Trainer(CONFIG)
    trainer.apply(0, mark(0, 1, 0))
    values = [json.dumps(example_event(e, "test", produced)).encode() for e in (first, ahead)]
    assert [trainer.apply(1, values[0]), trainer.apply(2, values[1])] == ["held", "ahead"]
    assert trainer.held == 1 and trainer.models.examples == 1 and trainer.resume_offset == 1


def test_when_no_partition_has_events_the_held_examples_are_learned() -> None:
    examples = close_order(simulated_examples()[:5])
    trainer = Trainer(CONFIG)
    trainer.apply(0, mark(0, 2, 0))
    trainer.apply(1, mark(1, 2, 0))
    for offset, value in enumerate(records(examples), start=2):
        assert trainer.apply(offset, value) == "held"
    trainer.apply(7, mark(0, 2, None))
    assert trainer.held == 5
    trainer.apply(8, mark(1, 2, None))
    assert trainer.held == 0 and trainer.models.examples == 5
    assert trainer.order.watermark == 0  # later examples are held again, not late


def test_marks_that_release_nothing_publish_rarely() -> None:
    """Idle partitions' marks follow the wall clock; a version that changes no
    model is published ten intervals on, not every interval."""
    from stream.trainer.service import MARKS_ONLY_PUBLISH_FACTOR

    now = [0.0]
    service, trainer = service_at(now)
    interval = Settings().trainer_publish_s
    service._learn([SimpleNamespace(offset=0, value=mark(0, 1, 1000))])
    now[0] += interval
    assert service.dirty and not service._publish_due()
    now[0] += interval * (MARKS_ONLY_PUBLISH_FACTOR - 1)
    assert service._publish_due()
    # a mark that releases a held example changes the models: one interval
    service.dirty = service.changed = False
    service.published_at = now[0]
    (example,) = close_order(simulated_examples()[:1])
    service._learn([SimpleNamespace(offset=1, value=records([example])[0])])
    service.dirty = service.changed = False
    service._learn([SimpleNamespace(offset=2, value=mark(0, 1, example.closed_ts))])
    now[0] += interval
    assert trainer.models.examples == 1 and service._publish_due()


def test_marks_only_move_forward_and_an_empty_partition_stops_holding_back() -> None:
    trainer = Trainer(CONFIG)
    trainer.apply(0, mark(0, 2, 500))
    trainer.apply(1, mark(0, 2, 300))  # an older owner's mark, read late
    trainer.apply(2, mark(1, 2, 400))
    assert trainer.marks == {0: 500, 1: 400} and trainer.watermark() == 400
    trainer.apply(3, mark(1, 2, None))  # a new owner found it without events
    assert trainer.watermark() == 500
    assert trainer.apply(4, b'{"type": "io.disengage.training-mark.v1", "data": {}}') == "invalid"


def test_duplicates_and_bad_records_change_nothing() -> None:
    values = records(simulated_examples()[:60])
    trainer = Trainer(CONFIG)
    for offset, value in enumerate(values):
        trainer.apply(offset, value)
    before = probe_predictions(trainer.models)
    examples = trainer.models.examples
    bad_vector = Example("x", 1, 2, 2, "exit", ((1, array("f", [0.5])),), (), (0,) * len(SIGNALS))
    statuses = [
        trainer.apply(60, values[3]),  # a copy re-produced by an outbox recovery
        trainer.apply(5, values[5]),  # an offset learned already
        trainer.apply(61, b"not json"),
        trainer.apply(62, None),
        trainer.apply(63, b'{"type": "io.disengage.training.v1", "data": {"format": 99}}'),
        trainer.apply(64, records([bad_vector])[0]),
    ]
    assert statuses == ["duplicate", "duplicate", *["invalid"] * 4]
    assert "trust features long" in trainer.last_error
    assert trainer.models.examples == examples and probe_predictions(trainer.models) == before
    assert trainer.offset == 65


def test_a_trainer_resumed_from_a_published_version_ends_where_one_that_never_stopped_does() -> (
    None
):
    values = records(simulated_examples())
    whole = Trainer(CONFIG)
    for offset, value in enumerate(values):
        whole.apply(offset, value)

    first = Trainer(CONFIG)
    half = len(values) // 2
    for offset, value in enumerate(values[:half]):
        first.apply(offset, value)
    # what a version carries: the learned models, the next offset, the recent ids
    blob, position = first.models.dumps_learned(), first.position
    models = DetectorModels(CONFIG)
    models.adopt(DetectorModels.loads_learned(blob), "v1")
    resumed = Trainer(CONFIG, models, position=position)
    # the records since the version are read again, and a copy of one before it too
    assert resumed.apply(half, values[half - 1]) == "duplicate"
    for offset, value in enumerate(values[half:], start=half + 1):
        resumed.apply(offset, value)
    assert resumed.models.examples == whole.models.examples
    assert probe_predictions(resumed.models) == probe_predictions(whole.models)


def test_a_trainer_resumed_while_it_held_examples_ends_where_one_that_never_stopped_does() -> None:
    """A version published while examples were held, or released and not
    learned yet (a lazy trainer learns them in slices), records their
    offsets; the next owner reads the topic again from the first of them,
    takes those again in their order and skips the rest (learned, marks,
    duplicates): the models end equal to an uninterrupted run's, and to the
    replay's."""
    from stream.model_registry import TrainerState

    values = partitioned_stream(simulated_examples(), 4, seed=3)
    whole = Trainer(CONFIG)
    for offset, value in enumerate(values):
        whole.apply(offset, value)
    for cut, lazy in (
        (len(values) // 3, False),
        (2 * len(values) // 3, False),
        (len(values) // 2, True),
    ):
        first = Trainer(CONFIG, lazy=lazy)
        for offset, value in enumerate(values[:cut]):
            first.apply(offset, value)
        if lazy:  # part of what was released is learned when the version is taken
            first.learn_ready(first.ready // 2)
            assert first.ready > 0
        assert first.held > 0 and first.resume_offset < first.offset
        models = DetectorModels(CONFIG)
        models.adopt(DetectorModels.loads_learned(first.models.dumps_learned()), "v1")
        state = TrainerState.from_bytes(TrainerState.at(1, first.position).to_bytes())
        assert bool(state.ready) == lazy
        resumed = Trainer(CONFIG, models, position=state.position, lazy=lazy)
        assert resumed.resume_offset == first.resume_offset
        for offset in range(resumed.resume_offset, len(values)):
            resumed.apply(offset, values[offset])
            if lazy and offset % 7 == 0:
                resumed.learn_ready(3)  # slices of any size: the same sequence
        resumed.learn_ready()
        assert resumed.models.examples == whole.models.examples == len(simulated_examples())
        assert probe_predictions(resumed.models) == probe_predictions(whole.models)
        assert resumed.position == whole.position
    assert trust_predictions(whole.models) == trust_predictions(replayed())


def test_slicing_the_learning_changes_nothing_even_with_copies_in_the_stream() -> None:
    """A lazy trainer learns what is due in slices (between the consumer's
    heartbeats); copies re-produced by outbox recoveries land while examples
    wait: the sequence learned, and what is dropped, are an eager trainer's."""
    import random

    values = partitioned_stream(simulated_examples(), 4, seed=4)
    rng = random.Random(9)
    with_copies = list(values)
    for i in range(len(values) - 1, 0, -37):  # copies, a few dozen records later
        if b"training-mark" not in values[i]:
            with_copies.insert(min(len(with_copies), i + rng.randint(1, 60)), values[i])
    eager, lazy = Trainer(CONFIG), Trainer(CONFIG, lazy=True)
    statuses = []
    for offset, value in enumerate(with_copies):
        statuses.append(eager.apply(offset, value))
        assert lazy.apply(offset, value) == statuses[-1]
        if rng.random() < 0.2:
            lazy.learn_ready(rng.randint(0, 40))
    lazy.learn_ready()
    assert statuses.count("duplicate") > 10
    assert lazy.position == eager.position
    assert probe_predictions(lazy.models) == probe_predictions(eager.models)


def test_examples_gone_from_the_topic_at_a_restart_are_counted_and_learning_goes_on() -> None:
    values = partitioned_stream(simulated_examples(), 4, seed=3)
    first = Trainer(CONFIG, lazy=True)
    cut = len(values) // 2
    for offset, value in enumerate(values[:cut]):
        first.apply(offset, value)
    first.learn_ready(first.ready // 2)
    position = first.position
    assert position.held and position.ready
    resumed = Trainer(CONFIG, position=position)
    # retention removed everything below the position: reading starts there
    for offset in range(cut, len(values)):
        resumed.apply(offset, values[offset])
    assert resumed.lost == len(position.held) + len(position.ready)
    assert resumed.held + resumed.ready == 0
    # (its models start fresh here: what ``first`` learned is not in them)
    learned = first.models.examples + resumed.models.examples
    assert learned + resumed.lost == len(simulated_examples())


def test_the_recent_ids_are_bounded() -> None:
    ids = [f"id{i}" for i in range(RECENT_IDS + 10)]
    trainer = Trainer(CONFIG, position=Position(recent_ids=ids))
    assert len(trainer.position.recent_ids) == RECENT_IDS
    assert trainer.position.recent_ids[0] == "id10"


def test_scoring_changes_no_learned_model() -> None:
    """The hot path reads the learned models only: a worker's detector leaves
    them byte for byte as it found them, whatever it scores."""
    trainer = Trainer(CONFIG)
    for offset, value in enumerate(records(simulated_examples())):
        trainer.apply(offset, value)
    models = DetectorModels(CONFIG)
    models.adopt(DetectorModels.loads_learned(trainer.models.dumps_learned()), "v1")
    before = models.dumps_learned()
    detector = Detector(CONFIG, models, learn=False)
    runner = OfflineRunner(detector)
    parse = EventParser(CONFIG).parse
    for e in Simulator(SimConfig(sessions=150, seed=6)).events():
        runner.feed(parse(e))
    runner.finish()
    assert len(detector.examples) >= 150
    assert models.dumps_learned() == before


def test_the_serving_form_scores_exactly_as_the_learned_models_and_is_smaller() -> None:
    trainer = Trainer(CONFIG)
    for offset, value in enumerate(records(simulated_examples())):
        trainer.apply(offset, value)
    assert trainer.models.trust.serving == "forest"  # the case where the forest is dropped
    full, serving = trainer.models.dumps_learned(), trainer.models.dumps_serving()
    assert len(serving) < 0.75 * len(full)  # ~0.25 after 3000 sessions: the forest grows
    served = DetectorModels(CONFIG)
    served.adopt(DetectorModels.loads_learned(serving), "v1")
    learned = DetectorModels(CONFIG)
    learned.adopt(DetectorModels.loads_learned(full), "v1")
    assert probe_predictions(served) == probe_predictions(learned)
    # the trainer goes on learning with its own, complete models
    assert trainer.apply(10**6, records(simulated_examples()[:1])[0]) == "duplicate"


def test_alerted_examples_carry_their_group_and_the_trainer_learns_the_uplift() -> None:
    from detectors.uplift import CONTROL, TREATED, treatment_of

    examples = simulated_examples()
    alerted = [e for e in examples if e.alert_marks]
    assert alerted and all(e.treatment is not None for e in alerted)
    assert all(e.treatment is None for e in examples if not e.alert_marks)
    for e in alerted:
        assert e.treatment == treatment_of(e.sid, CONFIG.holdout_salt, CONFIG.holdout_share)
        assert example_from_event(records([e])[0]) == e
    trainer = Trainer(CONFIG)
    for offset, value in enumerate(records(examples)):
        trainer.apply(offset, value)
    overall = trainer.models.uplift.uplift("all", "")
    for group, arm in ((TREATED, overall.treated), (CONTROL, overall.control)):
        mine = [e for e in alerted if e.treatment == group]
        assert (arm.sessions, arm.converted) == (len(mine), sum(e.converted for e in mine))
    # the tracker travels with the published version
    learned = DetectorModels.loads_learned(trainer.models.dumps_serving())
    assert learned["uplift"] == trainer.models.uplift


def test_a_version_published_before_the_uplift_still_loads() -> None:
    import pickle

    header, learned = pickle.loads(DetectorModels(CONFIG).dumps_serving())
    del learned["uplift"]
    old = pickle.dumps((header, learned))
    from detectors.uplift import UpliftTracker

    tracker = DetectorModels.loads_learned(old)["uplift"]
    assert isinstance(tracker, UpliftTracker) and tracker.slices() == []


def test_the_trainer_exports_the_uplift_with_its_interval() -> None:
    from prometheus_client import CollectorRegistry

    from detectors.uplift import UpliftTracker
    from stream.metrics import TrainerMetrics

    tracker = UpliftTracker(min_sessions=30)
    for i in range(100):  # treated: 40% convert; control: 10%
        slices = {("all", ""), ("kind", "trust_loss")}
        tracker.closed("treated", i % 10 < 4, slices)
        if i < 40:
            tracker.closed("control", i % 10 == 0, {("all", ""), ("kind", "trust_loss")})
    tracker.closed("control", False, {("action", "chat")})  # too few for a figure
    metrics = TrainerMetrics(CollectorRegistry())
    metrics.show_uplift(tracker)
    value = metrics.registry.get_sample_value
    assert value("disengage_uplift", {"dimension": "all", "value": "", "bound": "difference"}) == (
        0.4 - 0.1
    )
    lower = value("disengage_uplift", {"dimension": "all", "value": "", "bound": "lower"})
    upper = value("disengage_uplift", {"dimension": "all", "value": "", "bound": "upper"})
    assert lower is not None and upper is not None and 0 < lower < 0.3 < upper < 1
    counts = {"dimension": "kind", "value": "trust_loss", "treatment": "control"}
    assert value("disengage_uplift_sessions", {**counts, "outcome": "converted"}) == 4
    assert value("disengage_uplift_sessions", {**counts, "outcome": "not_converted"}) == 36
    chat = {"dimension": "action", "value": "chat", "bound": "lower"}
    assert value("disengage_uplift", chat) is None


def test_a_trailing_duplicate_is_covered_by_the_next_version() -> None:
    """A copy of an example already learned (a worker delivering an outbox
    again after a takeover) may be the last record of the training topic:
    the trainer learns nothing from it, but its next version must cover its
    offset, else the latest version stays short of the topic (and its lag
    above 0) until another session closes."""
    now = [0.0]
    service, trainer = service_at(now)
    values = records(simulated_examples()[:3])
    service._learn([SimpleNamespace(offset=i, value=v) for i, v in enumerate(values)])
    service.dirty = False  # published through offset 3
    service._learn([SimpleNamespace(offset=3, value=values[0])])  # a copy, at the end
    now[0] += Settings().trainer_publish_s
    assert trainer.offset == 4
    assert service._publish_due()


async def test_a_take_over_that_failed_at_the_rebalance_is_tried_again() -> None:
    """Restoring the models can fail when the partition is assigned (Redis
    or the models topic away): the partition stays assigned, so the trainer
    must keep trying to take it over, not read on with no learner."""
    service, _ = service_at([0.0])
    service.trainer = None
    consumer = FakeConsumer([], topic=service.settings.topic_training)
    service.consumer, service.tp = consumer, consumer.tp
    attempts: list[int] = []

    async def restore() -> Restored:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("Redis unavailable")
        return Restored(Trainer(CONFIG, position=Position(offset=7)), 3, "redis")

    service.restore = restore  # type: ignore[method-assign]
    await _Listener(service).on_partitions_assigned({service.tp})  # logged, not raised
    assert service.trainer is None and consumer.seeks == []
    await service._step()
    assert service.trainer is not None and service.version == 3
    assert consumer.seeks == [7] and len(attempts) == 2
    await service._step()  # owned now: not taken over again
    assert len(attempts) == 2
    # revoked: handed over (nothing new to publish), and not taken again while
    # aiokafka still lists the partition (until the next assignment)
    service.dirty = False
    await _Listener(service).on_partitions_revoked({service.tp})
    assert service.trainer is None and service.tp in consumer.assignment()
    await service._step()
    assert service.trainer is None and len(attempts) == 2
