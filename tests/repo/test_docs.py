"""The README cannot drift from the code it documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema

from detectors.alerts import ALERT_JSON_SCHEMA
from stream.settings import markdown_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _block(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", README, re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


def test_configuration_table_is_generated_from_settings() -> None:
    assert _block("config") == markdown_table(), "run: python -m stream.settings"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [line for line in ci if line and not line.startswith(("#", "set ", "cd "))] == [
        "make test"
    ]


def test_alert_example_is_the_golden_alert_and_valid() -> None:
    example = re.search(r"## Alerts.*?```json\n(.*?)```", README, re.S)
    assert example
    alert = json.loads(example.group(1))
    jsonschema.Draft202012Validator(ALERT_JSON_SCHEMA).validate(alert)
    golden = ROOT / "tests" / "golden" / "session_mix.alerts.jsonl"
    assert alert == json.loads(golden.read_text().splitlines()[0])


def test_metrics_table_is_generated_from_the_registry() -> None:
    from stream.metrics import markdown_table as metrics_table

    assert _block("metrics") == metrics_table(), "run: make docs"


def test_the_code_map_names_every_module() -> None:
    """ARCHITECTURE.md is one line per module: a module added without its line fails here."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`(?:[\w/]+/)?(\w+\.py)`", text))
    missing = sorted(
        str(path.relative_to(ROOT))
        for package in ("detectors", "stream")
        for path in (ROOT / package).rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and path.name not in named
    )
    assert not missing, f"ARCHITECTURE.md does not mention {missing}"


def test_every_dead_letter_reason_is_documented() -> None:
    from stream.metrics import DLQ_REASONS

    missing = [reason for reason in DLQ_REASONS if f"`{reason}`" not in README]
    assert not missing, f"README does not name the DLQ reasons {missing}"
