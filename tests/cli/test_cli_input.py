"""Bad input is visible: line numbers, reasons, totals, and a failure when nothing was valid.

Every run is a subprocess (see ``conftest.disengage``) and none may print a traceback.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.cli.conftest import Disengage

COMMANDS = ("replay", "evaluate")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _summary(err: str) -> dict[str, object]:
    """The replay's JSON summary: the last line of stderr."""
    return dict(json.loads(err.strip().splitlines()[-1]))


def test_bad_lines_are_listed_with_number_reason_and_detail(
    disengage: Disengage, golden_events: Path
) -> None:
    run = disengage("replay", str(golden_events), "-o", "alerts.jsonl")
    assert run.code == 0
    name = str(golden_events)
    assert f"disengage replay: {name}:6: not_json: Expecting value" in run.err
    assert f"disengage replay: {name}:10: unknown_type: 'teleport' is not an event type" in run.err
    assert f"2 of 62 lines of {name} are not valid events (not_json 1, unknown_type 1)" in run.err


@pytest.mark.parametrize("command", COMMANDS)
def test_epoch_seconds_fail_with_the_parsers_hint(
    disengage: Disengage, golden_events: Path, tmp_path: Path, command: str
) -> None:
    seconds = tmp_path / "seconds.jsonl"
    rows = [json.loads(line) for line in _lines(golden_events)[:30] if line.startswith("{")]
    seconds.write_text("".join(json.dumps(row | {"ts": row["ts"] // 1000}) + "\n" for row in rows))
    run = disengage(command, str(seconds))
    assert run.code == 1
    assert f"{seconds}:1: bad_ts: epoch ms 1767261600 outside 1990..2200 (seconds sent?)" in run.err
    assert len([line for line in run.err_lines if ": bad_ts: " in line]) == 10  # the first 10
    assert f"({'bad_ts'} {len(rows)}); the first 10 shown" in run.err
    assert run.err_lines[-1] == (
        f"disengage {command}: no valid event in {seconds}: all {len(rows)} lines are invalid"
    )


def test_gzip_and_a_bom_read_like_the_plain_file(
    disengage: Disengage, golden_events: Path, tmp_path: Path
) -> None:
    expected = [json.loads(line) for line in _lines(golden_events.with_suffix(".alerts.jsonl"))]
    packed = tmp_path / "events.data"  # recognised by its magic bytes, not its name
    packed.write_bytes(gzip.compress(golden_events.read_bytes()))
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + golden_events.read_bytes())
    runs = [disengage("replay", str(source)) for source in (packed, with_bom)]
    runs.append(disengage("replay", "-", stdin=packed.read_bytes()))
    for run in runs:
        assert run.code == 0
        summary = _summary(run.err)
        assert summary["events"] == 60  # the first event is not lost to the BOM
        assert summary["invalid"] == {"not_json": 1, "unknown_type": 1}
        assert [json.loads(line) for line in run.out.splitlines()] == expected


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'[{"session_id": "a", "ts": 1767261600000, "type": "page_view"}]',
            "holds a JSON array; one event object per line is needed",
        ),
        (bytes(range(256)) * 4, "looks binary (it has NUL bytes), not JSON Lines text"),
        (b"PK\x03\x04" + b"\x00" * 40, "is a zip archive (unzip it first), not JSON Lines"),
        (b"", "it is empty"),
    ],
    ids=["json-array", "binary", "zip", "empty"],
)
def test_what_is_not_json_lines_is_named(
    disengage: Disengage, tmp_path: Path, command: str, content: bytes, message: str
) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)
    run = disengage(command, str(path))
    assert run.code == 1
    [line] = run.err_lines  # one line, no traceback, no list of bad lines
    assert line.startswith(f"disengage {command}: ") and str(path) in line and message in line


@pytest.mark.parametrize("command", (*COMMANDS, "convert otto"))
def test_a_missing_input_is_a_usage_error(disengage: Disengage, command: str) -> None:
    run = disengage(*command.split(), "/nonexistent/events.jsonl")
    assert run.code == 2
    assert run.err_lines == [
        f"disengage {command.split()[0]}: cannot read /nonexistent/events.jsonl: "
        "No such file or directory"
    ]
