"""Fixtures for the integration tier: a pipeline of the test's own on the real broker and Redis.

``make test`` runs pytest under ``deploy/local/infra.py run``, which exports
``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL``. Without them the integration
tests fail with a message saying how to run them; they never skip.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test() -> object:
    from .harness import reap_workers

    yield None
    reap_workers()


#: The model-based and aggregate alert rules out of reach (see
#: test_worker.py): the pipeline can then be checked exactly against the
#: offline detector.
RULES_ONLY = {
    "DISENGAGE_TRUST_MIN_CLOSED": "100000000",
    "DISENGAGE_HESITATION_WARMUP": "100000000",
    "DISENGAGE_ALERT_BUDGET_PER_1000": "0",
    # hotspots are aggregate and outside the session outbox (see README)
    "DISENGAGE_HOTSPOT_MIN_VISITS": "100000000",
}
# Redis databases 0-4 are left to the contract tests and the benchmarks.
_databases = itertools.cycle(range(5, 16))


@pytest.fixture
def env(kafka_bootstrap: str, redis_url: str) -> Iterator[Any]:
    """A pipeline of the test's own: topics, consumer group, Redis database."""
    from .harness import Env, create_topics, flush

    e = Env(kafka_bootstrap, redis_url, db=next(_databases), extra=dict(RULES_ONLY))
    asyncio.run(flush(e))
    asyncio.run(create_topics(e))
    yield e
    asyncio.run(flush(e))


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright's sync API (the browser tests)."""
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    from .harness import CHROMIUM, CHROMIUM_ARGS, TRACKER_BUNDLE

    assert Path(CHROMIUM).exists(), "make system-deps installs Debian's chromium"
    assert TRACKER_BUNDLE.exists(), "the tracker is built by `make tracker` (part of `make test`)"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The chaos suite's table (tests/integration/chaos_report.py), when it ran."""
    import sys

    report = sys.modules.get(f"{__package__}.chaos_report")
    lines = report.summary_lines() if report is not None else []
    if lines:
        terminalreporter.section("chaos suite (also in .cache/chaos/summary.txt)")
        for line in lines:
            terminalreporter.write_line(line)
