"""Settings: names, defaults, conversions and one-line errors naming the variable."""

from __future__ import annotations

import json

import pytest

from detectors.config import DEFAULT_PAGE_PATTERNS, DEFAULT_PLAYBOOK, DetectorConfig
from detectors.events import EventParser
from stream.settings import PREFIX, Settings, SettingsError, detector_fields, reference


def test_defaults_are_the_defaults_whatever_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISENGAGE_BATCH_SIZE", "7")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092")
    assert Settings().batch_size == 1000
    assert Settings.from_env({}).batch_size == 1000  # a given mapping is all that is read
    assert Settings.from_env({}).detector == DetectorConfig()
    assert Settings.from_env().batch_size == 7
    assert Settings.from_env().kafka_bootstrap_servers == "elsewhere:9092"


def test_service_and_detector_variables_are_converted() -> None:
    settings = Settings.from_env(
        {
            "DISENGAGE_BATCH_TIMEOUT_S": "0.2",
            "DISENGAGE_REDIS_TLS": "yes",
            "DISENGAGE_TOPIC_PARTITIONS": "3",
            "DISENGAGE_STALL_MS": "90000",
            "DISENGAGE_RAGE_MAX_DISTANCE_PX": "12",
            "DISENGAGE_GOAL_EVENT": "form_submit",
        }
    )
    assert (settings.batch_timeout_s, settings.redis_tls, settings.topic_partitions) == (
        0.2,
        True,
        3,
    )
    assert settings.detector == DetectorConfig(
        stall_ms=90_000, rage_max_distance_px=12.0, goal_event="form_submit"
    )
    assert isinstance(settings.detector.rage_max_distance_px, float)


def test_prefixed_variables_win_over_the_conventional_fallbacks() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:1", "REDIS_URL": "redis://r:1/0"}
    settings = Settings.from_env(env)
    assert (settings.kafka_bootstrap_servers, settings.redis_url) == ("k:1", "redis://r:1/0")
    env["DISENGAGE_KAFKA_BOOTSTRAP_SERVERS"] = "mine:2"
    assert Settings.from_env(env).kafka_bootstrap_servers == "mine:2"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.batch_size = 1


def test_playbook_and_page_patterns_are_json_settings_that_reach_the_detector() -> None:
    patterns = [["/kasse\\b", "checkout"], ["/artikel/", "product"]]
    playbook = {
        "hesitation/*": "call them",
        "trust_loss/*": "reassure",
        "friction_hotspot/*": "page owners: look",
    }
    settings = Settings.from_env(
        {
            "DISENGAGE_PAGE_PATTERNS": json.dumps(patterns),
            "DISENGAGE_PLAYBOOK": json.dumps(playbook),
        }
    )
    assert settings.detector.page_patterns == (("/kasse\\b", "checkout"), ("/artikel/", "product"))
    assert settings.detector.playbook == playbook
    parser = EventParser(settings.detector)
    event = parser.parse(
        {
            "session_id": "s",
            "ts": 1_700_000_000_000,
            "type": "page_view",
            "page": "https://shop.example/kasse?step=2",
        }
    )
    assert event.page_type == "checkout"
    assert Settings().detector.playbook == DEFAULT_PLAYBOOK
    assert Settings().detector.page_patterns == DEFAULT_PAGE_PATTERNS


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DISENGAGE_STALL_MS": "two minutes"},
            "DISENGAGE_STALL_MS='two minutes' is not a valid int",
        ),
        (
            {"DISENGAGE_BATCH_TIMEOUT_S": "fast"},
            "DISENGAGE_BATCH_TIMEOUT_S='fast' is not a valid float",
        ),
        ({"DISENGAGE_REDIS_TLS": "maybe"}, "DISENGAGE_REDIS_TLS='maybe' is not a valid bool"),
        (
            {"DISENGAGE_HESITATION_QUANTILE": "0.2"},
            "DISENGAGE_HESITATION_QUANTILE must be in [0.5, 1)",
        ),
        ({"DISENGAGE_GOAL_EVENT": "buy"}, "DISENGAGE_GOAL_EVENT 'buy' is not an event type"),
        ({"DISENGAGE_PLAYBOOK": "{oops"}, "DISENGAGE_PLAYBOOK is not valid JSON"),
        (
            {"DISENGAGE_PLAYBOOK": "[1, 2]"},
            "DISENGAGE_PLAYBOOK: Input should be a valid dictionary",
        ),
        ({"DISENGAGE_PLAYBOOK": '{"hesitation": "x"}'}, "DISENGAGE_PLAYBOOK key 'hesitation'"),
        (
            {"DISENGAGE_PAGE_PATTERNS": '[["(", "home"]]'},
            "DISENGAGE_PAGE_PATTERNS[0]: '(' is not a regex",
        ),
        ({"DISENGAGE_PAGE_PATTERNS": '[["/x", "blog"]]'}, "'blog' is not a page type"),
        ({"DISENGAGE_PAGE_PATTERNS": '[["/x"]]'}, "DISENGAGE_PAGE_PATTERNS[0][1]: Field required"),
    ],
)
def test_a_bad_value_gives_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert "pydantic" not in text  # no library banner or error URL


def test_several_bad_values_are_all_named_on_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DISENGAGE_METRICS_PORT": "x", "DISENGAGE_BATCH_SIZE": "y"})
    assert "DISENGAGE_METRICS_PORT='x'" in str(caught.value)
    assert "DISENGAGE_BATCH_SIZE='y'" in str(caught.value)


def test_reference_lists_every_setting_once_with_a_description() -> None:
    rows = reference()
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names))
    own = {PREFIX + name.upper() for name in Settings.model_fields if name != "detector"}
    detector = {PREFIX + name.upper() for name in detector_fields()}
    assert set(names) == own | detector
    assert {"DISENGAGE_PLAYBOOK", "DISENGAGE_PAGE_PATTERNS", "DISENGAGE_STALL_MS"} <= detector
    assert [name for name, _, doc in rows if not doc.strip()] == []
    shown = {name: default for name, default, _ in rows}
    assert shown["DISENGAGE_BATCH_SIZE"] == "1000"
    assert shown["DISENGAGE_TOPIC_ALERTS"] == "'alerts'"
    assert shown["DISENGAGE_PLAYBOOK"] == "detectors.config.DEFAULT_PLAYBOOK"


def test_variables_match_in_upper_case_only() -> None:
    """Another program's lower-case ``disengage_*`` variable never configures the worker."""
    settings = Settings.from_env({"disengage_batch_size": "7", "disengage_stall_ms": "5"})
    assert settings.batch_size == Settings().batch_size
    assert settings.detector.stall_ms == Settings().detector.stall_ms
    assert Settings.from_env({"DISENGAGE_BATCH_SIZE": "7"}).batch_size == 7
