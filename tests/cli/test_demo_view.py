"""The demo's live view fits a terminal: 80x24 and wider, whole reasons, no wrapped header."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import EventParser
from detectors.offline.runner import OfflineRunner
from detectors.simulation.simulator import SimConfig, Simulator
from stream.commands.demo_view import DemoView, describe


@pytest.fixture(scope="module")
def view() -> DemoView:
    config = DetectorConfig()
    parser = EventParser(config)
    runner = OfflineRunner(Detector(config))
    demo = DemoView(runner, speed=60.0, started=0.0)
    simulator = Simulator(SimConfig(sessions=300, incident=False), keep_truth=False)
    for raw in simulator.events():
        for alert in runner.feed(parser.parse(raw)):
            demo.alert(alert)
    assert len(demo.recent) >= 5, "the simulation should raise a few alerts"
    return demo


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 30), (200, 50)])
def test_the_view_fits_the_terminal(view: DemoView, width: int, height: int) -> None:
    console = Console(file=io.StringIO(), width=width, height=height, record=True)
    console.print(view.render(console, now=10.0, sim_ts=1_767_261_600_000))
    lines = console.export_text().rstrip("\n").splitlines()
    assert len(lines) <= height - 1  # the live display keeps a line for the cursor
    assert all(len(line) <= width for line in lines)
    assert "disengage demo" in lines[0] and lines[0].startswith("╭")  # the title on one line
    assert any(line.startswith("│ trust model") for line in lines)
    words = " ".join(" ".join(lines).split())
    # the newest alert whole (reason and action wrapped, never cut to 2 characters)
    assert " ".join(describe(view.recent[0]).split()) in words
    assert "AUC 0.000" not in words
