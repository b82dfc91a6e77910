"""Learning off the hot path, in the core (no I/O): examples, the trainer's
step, and the equivalence of learning at once and learning from the topic."""

from __future__ import annotations

import json
from array import array
from functools import cache
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import EventParser
from detectors.features import TRUST_FEATURES
from detectors.models import DetectorModels
from detectors.offline.runner import OfflineRunner
from detectors.signals import SIGNALS
from detectors.simulation.simulator import SimConfig, Simulator
from detectors.trainer import RECENT_IDS, Trainer
from detectors.training import Example, example_event, example_from_event
from stream.metrics import TrainerMetrics
from stream.settings import Settings
from stream.trainer.service import TrainerService

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


def probe_predictions(models: DetectorModels) -> list[float]:
    out = []
    for example in simulated_examples()[:30]:
        out += [models.trust.predict_vector(list(v)) for _, v in example.snapshots]
        out += [models.hazard.predict(list(v)) for _, v in example.moments]
    out += [mean.get() for mean in models.signal_means]
    return out


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
    run the same code: the trust model, which learns features only, ends equal."""
    inline = Detector(CONFIG)
    runner = OfflineRunner(inline)
    parse = EventParser(CONFIG).parse
    for e in Simulator(SimConfig(sessions=400, seed=5)).events():
        runner.feed(parse(e))
    runner.finish()

    trainer = Trainer(CONFIG)
    for offset, value in enumerate(records(simulated_examples())):
        assert trainer.apply(offset, value) == "learned"
    learned, served = trainer.models.trust, inline.models.trust
    assert learned.closed == served.closed == len(simulated_examples())
    probe = [list(v) for e in simulated_examples()[:30] for _, v in e.snapshots]
    assert [learned.predict_vector(x) for x in probe] == [served.predict_vector(x) for x in probe]


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
    blob, offset, ids = first.models.dumps_learned(), first.offset, first.recent_ids
    models = DetectorModels(CONFIG)
    models.adopt(DetectorModels.loads_learned(blob), "v1")
    resumed = Trainer(CONFIG, models, offset=offset, recent_ids=ids)
    # the records since the version are read again, and a copy of one before it too
    assert resumed.apply(half, values[half - 1]) == "duplicate"
    for offset, value in enumerate(values[half:], start=half + 1):
        resumed.apply(offset, value)
    assert resumed.models.examples == whole.models.examples
    assert probe_predictions(resumed.models) == probe_predictions(whole.models)


def test_the_recent_ids_are_bounded() -> None:
    trainer = Trainer(CONFIG, recent_ids=[f"id{i}" for i in range(RECENT_IDS + 10)])
    assert len(trainer.recent_ids) == RECENT_IDS
    assert trainer.recent_ids[0] == "id10"


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
    service = TrainerService(
        Settings(),
        registry=None,  # type: ignore[arg-type]  # _learn and _publish_due never reach it
        metrics=TrainerMetrics(CollectorRegistry()),
        clock=lambda: now[0],
    )
    service.trainer = Trainer(CONFIG)
    values = records(simulated_examples()[:3])
    service._learn([SimpleNamespace(offset=i, value=v) for i, v in enumerate(values)])
    service.dirty = False  # published through offset 3
    service._learn([SimpleNamespace(offset=3, value=values[0])])  # a copy, at the end
    now[0] += Settings().trainer_publish_s
    assert service.trainer.offset == 4
    assert service._publish_due()
