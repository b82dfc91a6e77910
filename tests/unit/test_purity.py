"""The core is pure: no broker, store or metrics client, and no clock."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import detectors

CORE = Path(detectors.__file__).parent
#: Every module of the core, subpackages included, as dotted names below ``detectors``.
MODULES = sorted(
    ".".join(p.relative_to(CORE).with_suffix("").parts)
    for p in CORE.rglob("*.py")
    if p.stem != "__init__"
)
FORBIDDEN = ("aiokafka", "kafka", "faust", "mode", "redis", "prometheus_client")
#: Calls that read the wall clock. Event time comes from the events;
#: ``time.perf_counter`` (run duration in ``evaluation``) is not a clock
#: of the detection logic and is allowed.
CLOCK_CALLS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}


def test_the_core_modules_are_found() -> None:
    assert {"detector", "events", "session", "signals", "offline.runner", "alerts"} <= set(MODULES)
    assert "simulation.simulator" in MODULES  # subpackages are searched too


def test_importing_the_core_loads_no_infrastructure_client() -> None:
    imports = "; ".join(f"import detectors.{m}" for m in MODULES)
    code = f"{imports}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=CORE.parent,
        timeout=120,
    ).stdout
    loaded = set(json.loads(out))
    assert "detectors.detector" in loaded and "river" in loaded  # the probe works
    for name in FORBIDDEN:
        assert name not in loaded
        assert not any(m.startswith(name + ".") for m in loaded), name


def imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            roots.add(str(node.args[0].value).split(".")[0])
    return roots


def _clock_owners(tree: ast.AST) -> dict[str, str]:
    """Local name -> module or class it stands for (``import time as t``:
    ``t`` -> ``time``; ``from datetime import datetime as dt``: ``dt`` ->
    ``datetime``), so an alias hides no clock."""
    owners = {"time": "time", "datetime": "datetime", "date": "date"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                owners[alias.asname or alias.name] = alias.name.split(".")[-1]
        elif isinstance(node, ast.ImportFrom) and node.module == "datetime":
            for alias in node.names:
                owners[alias.asname or alias.name] = alias.name
    return owners


def clock_calls(tree: ast.AST) -> list[str]:
    """Every place that reads the clock or hands a clock on. A clock function
    is flagged wherever it is named, not only where it is called: a default
    argument (``clock=time.monotonic``), a ``default_factory=time.time``, a
    lambda or an assignment all read the wall clock behind the caller's back."""
    owners = _clock_owners(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            value = node.value
            if isinstance(value, ast.Name):
                owner: str | None = owners.get(value.id, value.id)
            elif isinstance(value, ast.Attribute):
                owner = value.attr
            else:
                owner = None
            if (owner, node.attr) in CLOCK_CALLS:
                found.append(f"{owner}.{node.attr} at line {node.lineno}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            for alias in node.names:
                if (node.module, alias.name) in CLOCK_CALLS:
                    found.append(f"from {node.module} import {alias.name}")
    return found


@pytest.mark.parametrize("module", MODULES)
def test_source_imports_no_infrastructure_and_reads_no_clock(module: str) -> None:
    path = CORE.joinpath(*module.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not imported_roots(tree) & set(FORBIDDEN)
    assert clock_calls(tree) == []


def test_the_checks_catch_offenders() -> None:
    bad = ast.parse(
        "import redis\nfrom aiokafka import AIOKafkaProducer\nimport time\n"
        "from datetime import datetime\nx = time.time()\ny = datetime.now()\n"
        "z = __import__('faust')\n"
    )
    assert imported_roots(bad) >= {"redis", "aiokafka", "faust"}
    assert len(clock_calls(bad)) == 2
    assert clock_calls(ast.parse("import datetime\nd = datetime.datetime.now()\n"))


@pytest.mark.parametrize(
    "source",
    [
        # the memory store's signature before the clock was injected
        "import time\nclass S:\n"
        "    def __init__(self, ttl_s: float, clock=time.monotonic) -> None: ...\n",
        # the worker's PartitionState before the clock was injected
        "import time\nfrom dataclasses import dataclass, field\n@dataclass\nclass P:\n"
        "    at: float = field(default_factory=time.time)\n",
        "import time\ndef f(*, clock=time.time_ns): ...\n",
        "from datetime import datetime\ndef f(now=datetime.now): ...\n",
        "from datetime import datetime as dt\nstamp = lambda: dt.utcnow()\n",
        "import time as t\nnow = t.monotonic()\n",
        "import datetime as d\nclock = d.date.today\n",
    ],
)
def test_a_clock_given_as_a_default_or_under_an_alias_is_caught(source: str) -> None:
    assert clock_calls(ast.parse(source)), source


def test_timing_a_run_and_parsing_times_are_not_clocks() -> None:
    fine = (
        "import time\nfrom datetime import UTC, datetime\nstarted = time.perf_counter()\n"
        "moment = datetime.fromtimestamp(0, tz=UTC)\nparsed = datetime.fromisoformat('2026')\n"
        "def f(clock) -> float: return clock()\n"
    )
    assert clock_calls(ast.parse(fine)) == []
