"""What a chaos scenario produced, the checks on it, and the suite's summary table.

Kept apart from :mod:`tests.integration.chaos` (which runs the scenarios) so that
each stays readable: here are only data and judgements, no process or network.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.config import DetectorConfig
from detectors.session import SessionState
from detectors.training import Example

from .harness import ROOT, metric_sum

SUMMARY = ROOT / ".cache" / "chaos" / "summary.txt"
#: Rule-based alerts must match the replay exactly; model-based ones are reported.
RULE_BASED_RULES = frozenset({"friction_pileup"})
RULE_BASED_KINDS = frozenset({"friction_hotspot"})
#: Most WARNING/ERROR lines the workers of one scenario may log.
MAX_LOG_LINES = 30
DLQ_HEADERS = (
    "dlq.reason",
    "dlq.detail",
    "dlq.source.topic",
    "dlq.source.partition",
    "dlq.source.offset",
    "dlq.time",
)


def family(kind: str, rule: str) -> str:
    """``rule`` for the transparent rules (checked exactly), ``model`` for the rest.

    >>> family("trust_loss", "friction_pileup"), family("hesitation", "leave_hazard")
    ('rule', 'model')
    """
    return "rule" if rule in RULE_BASED_RULES or kind in RULE_BASED_KINDS else "model"


@dataclass
class Expected:
    """What the replay does with the messages (offsets are the messages' indices)."""

    alerts: dict[str, str]  # alert id -> family
    labels: dict[str, str]  # alert id -> kind/rule
    counts: dict[str, int]  # session -> events applied
    dead: dict[int, str]  # source offset -> DLQ reason
    valid: int  # messages that parse into an event
    timeouts: int  # sessions closed by timeout
    statuses: Counter[str]
    examples: list[Example] = field(default_factory=list)  # closed sessions, labelled


# ------------------------------------------------------------------------ readiness
@dataclass(frozen=True)
class Sample:
    """One poll of the watched worker: wall time, which worker, /readyz status
    (0: no answer) and body, gauges (worker_ready, kafka_up, redis_up, events)."""

    t: float
    worker: int
    status: int
    body: str
    gauges: dict[str, float]


@dataclass
class Readiness:
    """How /readyz and the gauges behaved around the fault (``None``: no fault).
    Times are seconds from the fault's start (not ready) or end (ready again)."""

    showed: bool | None = None
    first_not_ready_s: float | None = None
    first_ready_after_s: float | None = None
    gauges_down: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)


def readiness_report(samples: list[Sample], fault: list[float], recovered: float) -> Readiness:
    """``fault``: [start, end] (empty: no fault); ``recovered``: when the worker was
    ready again. The fault counts as shown if a sample from its start until the
    worker was ready again (a restarted worker must first rejoin) was not 200."""
    if len(fault) != 2:
        return Readiness()
    start, end = fault
    during = [s for s in samples if start <= s.t < max(end, recovered)]
    report = Readiness(showed=any(s.status != 200 for s in during))
    report.statuses = Counter(s.status for s in during)
    down = [s for s in during if s.status != 200]
    if down:
        report.first_not_ready_s = down[0].t - start
    back = [s for s in samples if s.t > end and s.status == 200 and _owns(s.body)]
    if back:
        report.first_ready_after_s = back[0].t - end
    report.gauges_down = sorted(_gauges_down(samples, start, max(end, recovered)))
    return report


def _gauges_down(samples: list[Sample], start: float, end: float) -> set[str]:
    """Gauges seen at 0 between ``start`` and ``end``, counting a worker's gauge
    only once it was 1 (a starting worker reports 0 until its first refresh)."""
    up: set[tuple[int, str]] = set()
    down: set[str] = set()
    for s in samples:
        for name, value in s.gauges.items():
            if name == "events":
                continue
            if value == 1:
                up.add((s.worker, name))
            elif (s.worker, name) in up and start <= s.t < end:
                down.add(name)
    return down


def _owns(body: str) -> bool:
    """Does a /readyz body say the worker owns the (one) partition?"""
    try:
        return bool(json.loads(body).get("partitions"))
    except (ValueError, AttributeError):
        return False


# ----------------------------------------------------------------------------- logs
_LEVELS = "(WARNING|ERROR|CRITICAL)"
#: a WARNING+ line of the worker's own format or of Faust's
_LEVEL = re.compile(rf"^(?:\d{{4}}-\d\d-\d\d [\d:,]+ {_LEVELS} |\[[^\]]+\] \[\d+\] \[{_LEVELS}\])")


@dataclass
class LogStats:
    tracebacks: int = 0
    warnings: int = 0  # WARNING, ERROR and CRITICAL lines
    examples: list[str] = field(default_factory=list)


def log_stats(paths: list[Path]) -> LogStats:
    stats = LogStats()
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("Traceback (most recent call last)"):
                stats.tracebacks += 1
            if _LEVEL.match(line):
                stats.warnings += 1
                if len(stats.examples) < 8:
                    stats.examples.append(line[:240])
    return stats


# -------------------------------------------------------------------------- outcome
@dataclass
class Outcome:
    """What the worker did in one scenario, next to what the replay expected."""

    name: str
    messages: list[tuple[bytes | None, bytes | None]]
    config: DetectorConfig  # the worker's, which the replay used
    expected: Expected
    alerts: list[tuple[str, str]]  # (id, family) in topic order
    labels: dict[str, str]  # alert id -> kind/rule, of the alerts on the topic
    dlq: list[Any]  # DLQ consumer records
    states: dict[str, SessionState]
    stored: set[str]  # sessions with a state in Redis
    metrics: dict[str, float]
    readiness: Readiness
    recover_s: float | None
    logs: LogStats
    exit_code: int
    seconds: float
    training: list[str] = field(default_factory=list)  # problems of the training topic/trainer

    def ids(self, which: str | None = None) -> set[str]:
        return {i for i, f in self.alerts if which is None or f == which}

    def expected_ids(self, which: str | None = None) -> set[str]:
        return {i for i, f in self.expected.alerts.items() if which is None or f == which}

    def missing(self, which: str | None = None) -> set[str]:
        return self.expected_ids(which) - self.ids(which)

    def extra(self, which: str | None = None) -> set[str]:
        return self.ids(which) - self.expected_ids(which)

    def model_diff(self, label: str) -> tuple[set[str], set[str]]:
        """Model-based alerts whose kind/rule starts with ``label``: (missing, extra)."""
        missing = {i for i in self.missing("model") if self.expected.labels[i].startswith(label)}
        extra = {i for i in self.extra("model") if self.labels[i].startswith(label)}
        return missing, extra

    def _diff(self, label: str) -> str:
        missing, extra = self.model_diff(label)
        return f"{len(missing)}/{len(extra)}"

    @property
    def duplicated(self) -> int:
        return sum(n - 1 for n in Counter(i for i, _ in self.alerts).values())

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(self.metrics, name, **labels)

    # ------------------------------------------------------------- dead letters
    def dead_offsets(self) -> Counter[int]:
        return Counter(int(_header(r, "dlq.source.offset") or -1) for r in self.dlq)

    def dlq_problems(self) -> list[str]:
        out = []
        got = self.dead_offsets()
        expected = self.expected.dead
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        if missing:
            reasons = Counter(expected[o] for o in missing)
            out.append(f"{len(missing)} expected dead letters missing, by reason {dict(reasons)}")
        if extra:
            extra_reasons = Counter(
                str(_header(r, "dlq.reason")) for r in self.dlq if _offset(r) in extra
            )
            out.append(f"{len(extra)} unexpected dead letters, by reason {dict(extra_reasons)}")
        wrong: Counter[str] = Counter()
        for r in self.dlq:
            offset = _offset(r)
            if offset not in expected:
                continue
            reason = _header(r, "dlq.reason")
            if reason != expected[offset]:
                wrong[f"{expected[offset]}->{reason}"] += 1
            absent = [h for h in DLQ_HEADERS if _header(r, h) is None]
            if absent:
                wrong[f"headers missing {absent}"] += 1
            key, value = self.messages[offset]
            if value is None and r.value is not None:
                wrong[f"tombstone dead-lettered as {r.value!r}, not null"] += 1
            elif r.value != value:
                wrong["value differs from the original bytes"] += 1
            if r.key != key:
                wrong["key differs from the original key"] += 1
        if wrong:
            out.append(f"dead letters not as expected: {dict(wrong)}")
        return out

    # ------------------------------------------------------------------- checks
    def wrong_counts(self) -> list[tuple[str, int | None, int]]:
        return [
            (sid, self.states[sid].n_events if sid in self.states else None, n)
            for sid, n in self.expected.counts.items()
            if sid not in self.states or self.states[sid].n_events != n
        ]

    def problems(self) -> list[str]:
        """The checks every scenario must pass, as sentences (empty: all passed)."""
        out = []
        if self.duplicated:
            out.append(f"{self.duplicated} alert(s) produced twice")
        for which in ("rule",):
            if missing := self.missing(which):
                out.append(f"{len(missing)} rule-based alert(s) missing: {sorted(missing)[:5]}")
            if extra := self.extra(which):
                out.append(
                    f"{len(extra)} rule-based alert(s) not in the replay: {sorted(extra)[:5]}"
                )
        if wrong := self.wrong_counts():
            out.append(
                f"{len(wrong)} session(s) with another event count than the replay "
                f"(sid, worker, replay): {wrong[:5]}"
            )
        if extra_sessions := self.stored - set(self.expected.counts):
            out.append(
                f"{len(extra_sessions)} session(s) in Redis the replay never opened: "
                f"{sorted(extra_sessions)[:5]}"
            )
        if outbox := [sid for sid, s in self.states.items() if s.outbox]:
            out.append(f"{len(outbox)} session(s) with alerts left in the outbox: {outbox[:5]}")
        out += self.dlq_problems()
        if self.logs.tracebacks:
            out.append(f"{self.logs.tracebacks} traceback(s) in the worker logs")
        if self.logs.warnings > MAX_LOG_LINES:
            out.append(
                f"{self.logs.warnings} WARNING/ERROR lines (> {MAX_LOG_LINES}), e.g. "
                f"{self.logs.examples[:3]}"
            )
        if self.exit_code != 0:
            out.append(f"the worker exited with {self.exit_code} on SIGTERM at the end")
        return out + self.training

    def row(self) -> dict[str, str]:
        r = self.readiness
        return {
            "scenario": self.name,
            "events": str(self.expected.valid),
            "expected": str(len(self.expected.alerts)),
            "on topic": str(len(self.alerts)),
            "missing": str(len(self.missing())),
            "dup": str(self.duplicated),
            "rule miss/extra": f"{len(self.missing('rule'))}/{len(self.extra('rule'))}",
            "trust miss/extra": self._diff("trust_loss/"),
            "hesitation miss/extra": self._diff("hesitation/"),
            "dlq got/distinct/exp": f"{len(self.dlq)}/{len(self.dead_offsets())}/"
            f"{len(self.expected.dead)}",
            "recover s": "-"
            if r.showed is None
            else ("never" if self.recover_s is None else f"{self.recover_s:.1f}"),
            "readyz fault": "-" if r.showed is None else ("yes" if r.showed else "no"),
            "gauges 0": ",".join(g.replace("_up", "") for g in r.gauges_down) or "-",
            "training": "ok" if not self.training else f"{len(self.training)} problem(s)",
            "warn lines": str(self.logs.warnings),
            "s": f"{self.seconds:.0f}",
        }


def _header(record: Any, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode("utf-8", "replace")
    return None


def _offset(record: Any) -> int:
    return int(_header(record, "dlq.source.offset") or -1)


# -------------------------------------------------------------------------- summary
ROWS: list[dict[str, str]] = []


def record(outcome: Outcome) -> None:
    """Add the scenario's row to the summary and rewrite :data:`SUMMARY`."""
    ROWS[:] = [r for r in ROWS if r["scenario"] != outcome.name] + [outcome.row()]
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text("\n".join(summary_lines()) + "\n")
    details = SUMMARY.with_name(re.sub(r"\W+", "-", outcome.name).strip("-") + ".json")
    details.write_text(json.dumps(details_of(outcome), indent=2, default=str) + "\n")


def details_of(outcome: Outcome) -> dict[str, Any]:
    """What a reader of a failing scenario wants next to its row."""
    r = outcome.readiness
    return {
        "row": outcome.row(),
        "problems": outcome.problems(),
        "missing": {i: outcome.expected.labels[i] for i in sorted(outcome.missing())},
        "extra": {i: outcome.labels[i] for i in sorted(outcome.extra())},
        "replay statuses": dict(outcome.expected.statuses),
        "replay timeouts": outcome.expected.timeouts,
        "dlq reasons": dict(Counter(_header(d, "dlq.reason") for d in outcome.dlq)),
        "readiness": {
            "showed": r.showed,
            "first_not_ready_s": r.first_not_ready_s,
            "first_ready_after_s": r.first_ready_after_s,
            "statuses_during": dict(r.statuses),
            "gauges_down": r.gauges_down,
        },
        "log": {
            "tracebacks": outcome.logs.tracebacks,
            "warnings": outcome.logs.warnings,
            "examples": outcome.logs.examples,
        },
        "metrics": {
            k: v
            for k, v in outcome.metrics.items()
            if k.startswith(
                (
                    "disengage_sessions_closed",
                    "disengage_clock",
                    "disengage_produce",
                    "disengage_redis_errors",
                    "disengage_dlq",
                    "disengage_event_status",
                )
            )
        },
    }


def summary_lines() -> list[str]:
    if not ROWS:
        return []
    columns = list(ROWS[0])
    widths = {c: max(len(c), *(len(r[c]) for r in ROWS)) for c in columns}
    line = "  ".join
    out = [line(c.ljust(widths[c]) for c in columns)]
    out += [line(r[c].ljust(widths[c]) for c in columns) for r in ROWS]
    out.append(f"scenarios: {len(ROWS)}, their time: {sum(float(r['s']) for r in ROWS):.0f} s")
    return out
