"""The one place that reads environment variables.

Every variable has the prefix ``DISENGAGE_``. Kafka and Redis also accept the
conventional ``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL`` as fallbacks, which
is how the test infrastructure (``deploy/local/infra.py``) hands them over.
Every scalar field of :class:`detectors.config.DetectorConfig` can be set as
``DISENGAGE_<FIELD>`` (for example ``DISENGAGE_STALL_MS=90000``); the README's
configuration table is generated from :func:`reference` so it cannot drift.
"""

from __future__ import annotations

import ast
import inspect
import os
import textwrap
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from detectors.config import DetectorConfig

PREFIX = "DISENGAGE_"


class SettingsError(ValueError):
    """A variable is set to something that cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Service settings. Field docs are the configuration reference."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, comma separated (fallback: KAFKA_BOOTSTRAP_SERVERS)."""
    kafka_security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    kafka_sasl_mechanism: str = ""
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 when SASL is used."""
    kafka_sasl_username: str = ""
    """SASL user name."""
    kafka_sasl_password: str = ""
    """SASL password (never logged)."""
    kafka_ssl_cafile: str = ""
    """CA bundle for SSL/SASL_SSL."""
    topic_interactions: str = "interactions"
    """Input topic, keyed by session_id."""
    topic_alerts: str = "alerts"
    """Output topic for CloudEvents alerts, keyed by session_id."""
    topic_dlq: str = "interactions.dlq"
    """Dead-letter topic: original bytes plus reason headers."""
    topic_partitions: int = 6
    """Partitions used when the worker creates missing topics."""
    consumer_group: str = "disengage"
    """Kafka consumer group of the workers."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis URL; rediss:// for TLS (fallback: REDIS_URL)."""
    redis_password: str = ""
    """Redis password when not in the URL (never logged)."""
    redis_tls: bool = False
    """Force TLS to Redis."""
    session_ttl_margin_s: int = 600
    """Redis TTL of a session = session timeout + this margin (seconds)."""
    batch_size: int = 500
    """Events taken per batch by the worker."""
    batch_timeout_s: float = 0.05
    """Longest wait to fill a batch (seconds)."""
    checkpoint_interval_s: float = 60.0
    """Model checkpoint period (seconds)."""
    sweep_interval_s: float = 5.0
    """Session-expiry sweep period (seconds)."""
    state_cache_sessions: int = 20_000
    """Session states of owned partitions cached in the worker (write-through;
    0 disables). Bounds the worker's memory: about 5 KB a session."""
    idle_grace_s: float = 60.0
    """Expiry runs on event time; a partition without events for this long
    lets its event-time watermark advance with the wall clock (seconds)."""
    metrics_port: int = 9464
    """Port of /metrics, /healthz and /readyz."""
    metrics_bind: str = "0.0.0.0"
    """Address the metrics and health server binds to."""
    log_level: str = "INFO"
    """Python log level."""
    webhook_url: str = ""
    """Webhook of ``disengage alerts forward`` when ``--webhook`` is not given. A
    secret for Slack: only its scheme and host are ever logged."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """Thresholds of the detector core (DISENGAGE_<FIELD>)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "detector":
                continue
            raw = env.get(PREFIX + f.name.upper())
            if raw is None and f.name == "kafka_bootstrap_servers":
                raw = env.get("KAFKA_BOOTSTRAP_SERVERS")
            if raw is None and f.name == "redis_url":
                raw = env.get("REDIS_URL")
            if raw is not None:
                values[f.name] = _convert(PREFIX + f.name.upper(), raw, _default(f))
        overrides: dict[str, Any] = {}
        base = DetectorConfig()
        for f in fields(DetectorConfig):
            default = getattr(base, f.name)
            if not isinstance(default, bool | int | float | str):
                continue
            raw = env.get(PREFIX + f.name.upper())
            if raw is not None:
                overrides[f.name] = _convert(PREFIX + f.name.upper(), raw, default)
        try:
            values["detector"] = base.with_overrides(**overrides).validate()
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        return cls(**values)

    def redacted(self) -> dict[str, Any]:
        """Settings for logs, with secrets masked."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "detector"}
        for name in ("kafka_sasl_password", "redis_password", "webhook_url"):
            if out[name]:
                out[name] = "***"
        if "@" in out["redis_url"]:
            scheme, rest = out["redis_url"].split("://", 1)
            out["redis_url"] = f"{scheme}://***@{rest.split('@', 1)[1]}"
        return out


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory()


def _convert(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        kind = type(default).__name__
        raise SettingsError(f"{name}={raw!r} is not a valid {kind}") from None
    return raw


def reference() -> list[tuple[str, str, str]]:
    """(variable, default, description) rows of every setting, for the docs."""
    rows: list[tuple[str, str, str]] = []
    owners: tuple[tuple[type[Any], set[str]], ...] = (
        (Settings, {"detector"}),
        (DetectorConfig, set()),
    )
    for owner, skip in owners:
        docs = _attribute_docs(inspect.getsource(owner))
        instance = owner()
        for f in fields(owner):
            default = getattr(instance, f.name)
            if f.name in skip or not isinstance(default, bool | int | float | str):
                continue
            shown = repr(default) if isinstance(default, str) else str(default)
            rows.append((PREFIX + f.name.upper(), shown, " ".join(docs.get(f.name, "").split())))
    return rows


def _attribute_docs(source: str) -> dict[str, str]:
    """Map attribute name -> the docstring literal that follows it."""
    cls = ast.parse(textwrap.dedent(source)).body[0]
    assert isinstance(cls, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, nxt in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value
    return docs


def markdown_table() -> str:
    """The configuration reference as a Markdown table (README)."""
    out = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, doc in reference():
        out.append(f"| `{name}` | `{default}` | {doc.replace('|', '/')} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_table())
