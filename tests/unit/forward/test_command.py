"""``disengage alerts forward`` on the command line, and the forwarder's metrics."""

from __future__ import annotations

import pytest

from stream.cli import build_parser, main
from stream.forward.command import options_from
from stream.forward.delivery import Backoff
from stream.forward.filters import AlertFilter
from stream.forward.options import ForwardOptions
from stream.forward.ratelimit import RateLimit
from stream.metrics import (
    FORWARD_RESULTS,
    FORWARD_RETRY_CAUSES,
    ForwarderMetrics,
    markdown_table,
)


# ----------------------------------------------------------------- metrics
def test_forwarder_metrics_are_primed_with_closed_label_sets() -> None:
    metrics = ForwarderMetrics()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }
    for result in FORWARD_RESULTS:
        assert samples[("disengage_forward_alerts_total", (("result", result),))] == 0
    for cause in FORWARD_RETRY_CAUSES:
        assert samples[("disengage_forward_retries_total", (("cause", cause),))] == 0
    assert samples[("disengage_forward_last_success_timestamp_seconds", ())] == 0
    assert ("disengage_forward_post_seconds_bucket", (("le", "10.0"),)) in samples


def test_metrics_reference_lists_the_forwarder() -> None:
    table = markdown_table()
    assert "| `disengage_forward_alerts_total` | counter | `result` |" in table
    assert "`disengage_forward_last_success_timestamp_seconds` | gauge" in table


# --------------------------------------------------------------------- CLI
def test_cli_needs_a_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISENGAGE_WEBHOOK_URL", raising=False)
    with pytest.raises(SystemExit, match="--webhook URL"):
        main(["alerts", "forward"])
    monkeypatch.setenv("DISENGAGE_WEBHOOK_URL", "ftp://hooks.example/services/SECRET")
    with pytest.raises(SystemExit) as info:
        main(["alerts", "forward"])
    assert "ftp://hooks.example" in str(info.value) and "SECRET" not in str(info.value)


def test_cli_parses_the_forward_options() -> None:
    args = build_parser().parse_args(
        [
            "alerts",
            "forward",
            "--webhook",
            "http://h/x",
            "--kind",
            "trust_loss",
            "--kind",
            "hesitation",
            "--min-severity",
            "medium",
            "--page-type",
            "checkout",
            "--rate-limit",
            "10/min",
            "--format",
            "json",
            "--no-redis",
            "--no-session-id",
        ]
    )
    assert args.kind == ["trust_loss", "hesitation"]
    assert (args.min_severity, args.page_type, args.rate_limit) == (
        "medium",
        ["checkout"],
        "10/min",
    )
    assert (args.format, args.use_redis, args.include_session) == ("json", False, False)
    assert (args.group, args.offset_reset, args.timeout) == ("disengage-forwarder", "earliest", 10)
    options = options_from(args, args.webhook)
    assert options.filters == AlertFilter(
        kinds=frozenset({"trust_loss", "hesitation"}),
        min_severity="medium",
        page_types=frozenset({"checkout"}),
    )
    assert (options.rate_limit, options.fmt) == (RateLimit(10, 60.0), "json")
    assert (options.use_redis, options.include_session) == (False, False)


def test_cli_defaults_are_the_options_defaults() -> None:
    args = build_parser().parse_args(["alerts", "forward"])
    assert options_from(args, "http://h/x") == ForwardOptions("http://h/x")
    assert ForwardOptions("http://h/x").backoff == Backoff(0.5, 30.0)


def test_cli_refuses_bad_forward_options_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISENGAGE_WEBHOOK_URL", "http://hooks.example/x")
    for argv, words in (
        (["--rate-limit", "3/day"], "rate limit"),
        (["--backoff-base", "5", "--backoff-cap", "1"], "backoff"),
        (["--timeout", "0"], "timeout"),
        (["--group", ""], "consumer group"),
    ):
        with pytest.raises(SystemExit, match=words):
            main(["alerts", "forward", *argv])
