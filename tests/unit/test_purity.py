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
MODULES = sorted(p.stem for p in CORE.glob("*.py") if p.stem != "__init__")
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
    assert {"detector", "events", "session", "signals", "runner", "alerts"} <= set(MODULES)


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


def clock_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            value = node.func.value
            owner = (
                value.id
                if isinstance(value, ast.Name)
                else (value.attr if isinstance(value, ast.Attribute) else None)
            )
            if (owner, node.func.attr) in CLOCK_CALLS:
                found.append(f"{owner}.{node.func.attr} at line {node.lineno}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            for alias in node.names:
                if (node.module, alias.name) in CLOCK_CALLS:
                    found.append(f"from {node.module} import {alias.name}")
    return found


@pytest.mark.parametrize("module", MODULES)
def test_source_imports_no_infrastructure_and_reads_no_clock(module: str) -> None:
    tree = ast.parse((CORE / f"{module}.py").read_text(encoding="utf-8"))
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
