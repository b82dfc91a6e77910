"""The one place that reads environment variables.

Every variable has the prefix ``DISENGAGE_``. Kafka and Redis also accept the
conventional ``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL`` as fallbacks, which
is how the test infrastructure (``deploy/local/infra.py``) hands them over.
Every scalar field of :class:`detectors.config.DetectorConfig` can be set as
``DISENGAGE_<FIELD>`` (for example ``DISENGAGE_STALL_MS=90000``), and so can
its playbook and page-type patterns, as JSON. The README's configuration table
is generated from the field descriptions (:func:`markdown_table`), so it
cannot drift.

:meth:`Settings.from_env` is the only reader of the environment: ``Settings()``
holds the defaults, whatever the process environment says. A bad value raises
:class:`SettingsError` with one line naming the variable.

>>> Settings.from_env({"DISENGAGE_STALL_MS": "90000", "REDIS_URL": "redis://r:6379/1"}).redis_url
'redis://r:6379/1'
>>> Settings.from_env({"DISENGAGE_BATCH_SIZE": "lots"})
Traceback (most recent call last):
...
stream.settings.SettingsError: DISENGAGE_BATCH_SIZE='lots' is not a valid int
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

from detectors.config import DetectorConfig
from detectors.learning_order import HOLD_MAX
from stream.collector.sites import Site

PREFIX = "DISENGAGE_"

#: Fields of :class:`DetectorConfig` that are set as JSON, and what the JSON
#: holds. The other settable detector fields are the scalar ones.
JSON_FIELDS: dict[str, str] = {
    "page_patterns": (
        'Set as a JSON list of ["regex", "page_type"] pairs, which replaces the built-in list; '
        "the first match wins, and page types are those of `detectors.config.PAGE_TYPES`."
    ),
    "playbook": (
        'Set as a JSON object {"kind/cause/stage": "action"}, which replaces the built-in '
        "playbook; keys are tried as kind/cause/stage, kind/cause/*, kind/*/stage, then kind/*, "
        "which every kind needs (causes: `detectors.config.CAUSES`)."
    ),
}
#: Where the defaults of :data:`JSON_FIELDS` are written.
JSON_DEFAULTS: dict[str, str] = {
    "page_patterns": "detectors.config.DEFAULT_PAGE_PATTERNS",
    "playbook": "detectors.config.DEFAULT_PLAYBOOK",
}
_SCALARS = (bool, int, float, str)
_FALLBACKS = {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"}
_PARSE_ERRORS = {"bool_parsing": "bool", "int_parsing": "int", "float_parsing": "float"}


class SettingsError(ValueError):
    """A variable is set to something that cannot be used; the message names it."""


def detector_fields() -> list[str]:
    """Names of the :class:`DetectorConfig` fields settable as ``DISENGAGE_<FIELD>``:
    the scalar ones and :data:`JSON_FIELDS`, in the dataclass's order."""
    base = DetectorConfig()
    return [
        f.name
        for f in fields(DetectorConfig)
        if f.name in JSON_FIELDS or isinstance(getattr(base, f.name), _SCALARS)
    ]


class Settings(BaseSettings):
    """Service settings. Field descriptions are the configuration reference."""

    # Only from_env reads the environment (see settings_customise_sources);
    # _Environment keeps names exactly as documented (upper case).
    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        frozen=True,
        populate_by_name=True,
        # the detector's field docs (attribute docstrings of the core's
        # dataclass) become the descriptions of its variables
        use_attribute_docstrings=True,
        arbitrary_types_allowed=True,
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            PREFIX + "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="Kafka bootstrap servers, comma separated (fallback: KAFKA_BOOTSTRAP_SERVERS).",
    )
    kafka_security_protocol: str = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: str = Field(
        default="", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 when SASL is used."
    )
    kafka_sasl_username: str = Field(default="", description="SASL user name.")
    kafka_sasl_password: str = Field(default="", description="SASL password (never logged).")
    kafka_ssl_cafile: str = Field(default="", description="CA bundle for SSL/SASL_SSL.")
    topic_interactions: str = Field(
        default="interactions", description="Input topic, keyed by session_id."
    )
    topic_alerts: str = Field(
        default="alerts", description="Output topic for CloudEvents alerts, keyed by session_id."
    )
    topic_dlq: str = Field(
        default="interactions.dlq",
        description="Dead-letter topic: original bytes plus reason headers.",
    )
    topic_training: str = Field(
        default="training",
        description="Training topic: each closed session's labelled example, from the workers "
        "to the trainer. Created with one partition (one trainer learns it in order).",
    )
    topic_page_visits: str = Field(
        default="page-visits",
        description="Page visits from the workers to the shared hotspot monitors, keyed by "
        "hotspot key (page type and step), so one monitor sees every visit of a page whatever "
        "input partition its sessions came from. Created with DISENGAGE_TOPIC_PARTITIONS.",
    )
    topic_models: str = Field(
        default="models",
        description="Compacted topic of published model versions (the durable copy of the "
        "trainer's state; Redis holds the versions the workers load).",
    )
    topic_partitions: int = Field(
        default=6, description="Partitions used when the worker creates missing topics."
    )
    consumer_group: str = Field(
        default="disengage", description="Kafka consumer group of the workers."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices(PREFIX + "REDIS_URL", "REDIS_URL"),
        description="Redis URL; rediss:// for TLS (fallback: REDIS_URL).",
    )
    redis_cluster: bool = Field(
        default=False,
        description="Connect to a Redis Cluster (redis-py's cluster client, seeded from "
        "DISENGAGE_REDIS_URL); every key is hash-tagged so a batch stays one round trip per node.",
    )
    redis_password: str = Field(
        default="", description="Redis password when not in the URL (never logged)."
    )
    redis_tls: bool = Field(default=False, description="Force TLS to Redis.")
    session_ttl_margin_s: int = Field(
        default=600, description="Redis TTL of a session = session timeout + this margin (seconds)."
    )
    batch_size: int = Field(
        default=1000,
        ge=1,
        description="Most events the worker takes per batch (one fetch). 1,000: "
        "benchmarks/bench_worker.py drained 5,200-8,064 events/s with it against 4,620 with "
        "500 (2026-11-30); live traffic fills a batch only when the worker falls behind.",
    )
    batch_timeout_s: float = Field(
        default=0.05,
        description="Longest wait for input when none is buffered (seconds); a batch is "
        "whatever has arrived, up to DISENGAGE_BATCH_SIZE.",
    )
    produce_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait for the brokers to acknowledge the alerts or dead letters "
        "of a batch (seconds); then the batch counts as failed and is retried in place.",
    )
    model_poll_s: float = Field(
        default=2.0,
        gt=0,
        description="How often a worker checks for a newer (or newly pinned) model version "
        "(seconds); it is loaded in the background and served from the next batch.",
    )
    trainer_group: str = Field(
        default="disengage-trainer",
        description="Kafka consumer group of the trainers: one learns, the others stand by.",
    )
    trainer_publish_s: float = Field(
        default=15.0,
        gt=0,
        description="The trainer publishes a new model version at most this often, when it "
        "read new training records (seconds; a duplicate counts: the version must cover its "
        "offset). Publishing costs ~0.4 s of CPU once the learned models have grown to "
        "~13 MB (3,000 sessions of live simulated traffic): pickling 0.35 s, zstd 0.03 s.",
    )
    trainer_hold_max: int = Field(
        default=HOLD_MAX,
        ge=1,
        description="The trainer learns examples in the order their sessions closed: it holds "
        "each until every input partition's closure mark has passed it. At most this many are "
        "held (~2-4 kB each); beyond it the oldest are learned without waiting. Live it holds "
        "a sweep interval and the allowed lateness of closes; in a backlog, the gap between "
        "the fastest and the slowest partition.",
    )
    trainer_metrics_port: int = Field(
        default=9466, description="Port of the trainer's /metrics, /healthz and /readyz."
    )
    models_keep: int = Field(
        default=20,
        ge=1,
        description="Model versions kept in Redis (a pinned one is never deleted).",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=5000,
        description="Longest time the brokers hold a worker's fetch when there is no data "
        "(fetch.max.wait.ms; Faust hard-codes 1,500, which adds up to 1.5 s to an alert "
        "when records arrive for a partition outside the fetch in flight).",
    )
    faust_cython: bool = Field(
        default=False,
        description="Faust's Cython fast paths for its stream iterator and conductor "
        "(cython_optimizations); the worker logs at start-up whether they loaded. Off by "
        "default: benchmarks/bench_worker.py measured no gain (0.140 vs 0.141 of the raw loop).",
    )
    gc_freeze: bool = Field(
        default=True,
        description="Between batches, move what survived the garbage collector's middle and "
        "full collections into its permanent generation (gc.freeze), so no full collection "
        "walks the session-state cache (one walk of the default 20,000 cached states stopped "
        "the worker for ~0.5 s; bench_worker at half load: 11 such pauses in 75 s without, "
        "none with). See stream/worker/gc_pauses.py.",
    )
    gc_unfreeze_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="How often the worker unfreezes everything and collects the whole heap "
        "once (one pause of ~0.5 s), freeing any reference cycle formed among frozen objects "
        "(seconds).",
    )
    uvloop: bool = Field(
        default=False,
        description="Run the worker's event loop on uvloop (pip install 'disengage[uvloop]'). "
        "Off by default: no gain measured, with the Cython paths, in benchmarks/bench_worker.py.",
    )
    checkpoint_interval_s: float = Field(
        default=60.0,
        description="Period of the hotspot monitors' and alert budgets' checkpoints (seconds).",
    )
    hotspot_scope: Literal["shared", "partition"] = Field(
        default="shared",
        description="shared: page visits go to DISENGAGE_TOPIC_PAGE_VISITS and one hotspot "
        "monitor per page sees the whole deployment's traffic (bench-hotspots: 3/3 incidents "
        "found at any partition count); partition: each input partition's detector watches only "
        "its own visits (none found over 4 or more partitions at 4,000 sessions).",
    )
    sweep_interval_s: float = Field(
        default=5.0,
        description="Session-expiry sweep period (seconds): of wall time, and of each "
        "partition's event time (a batch that moves it this far past the partition's last "
        "sweep is followed by one; in a backlog minutes of event time go by between two ticks, "
        "and sessions would otherwise time out in one burst and reach the trainer out of order).",
    )
    state_cache_sessions: int = Field(
        default=20_000,
        description="Session states of owned partitions cached in the worker (0 disables). "
        "Bounds the worker's memory: about 5 KB a session; with write-behind it also bounds "
        "the states waiting to be written (at least 1,000): a batch writes the oldest beyond it.",
    )
    state_flush_s: float = Field(
        default=10.0,
        ge=0,
        le=25,
        description="Write-behind: a session state changed by a batch is written to Redis "
        "once it has been dirty this long (seconds, of wall time or of its partition's event "
        "time), so one write covers all the session's events in that time (on simulated live "
        "traffic 10 s made 57% fewer writes, 5 s 26%); the input's offsets are committed only "
        "below the first event not yet written, so a crash re-reads about this much input "
        "(plus the 1 s commit period) and loses nothing. States with an alert or a training "
        "example are written at once. At most 25 s: a quiet session's hesitation check (30 s "
        "after its last event) is found through the index written with its state. 0: every "
        "batch writes every state it changed.",
    )
    idle_grace_s: float = Field(
        default=60.0,
        description="Expiry runs on event time; a partition without events for this long "
        "lets its event-time watermark advance with the wall clock (seconds).",
    )
    metrics_port: int = Field(default=9464, description="Port of /metrics, /healthz and /readyz.")
    metrics_bind: str = Field(
        default="0.0.0.0", description="Address the metrics and health server binds to."
    )
    log_level: str = Field(default="INFO", description="Python log level.")
    webhook_url: str = Field(
        default="",
        description="Webhook of ``disengage alerts forward`` when ``--webhook`` is not given. "
        "A secret for Slack: only its scheme and host are ever logged.",
    )
    collector_port: int = Field(
        default=8470, description="Port of `disengage collect`'s event endpoints (public)."
    )
    collector_bind: str = Field(
        default="0.0.0.0", description="Address the collector's event endpoints bind to."
    )
    collector_metrics_port: int = Field(
        default=9467,
        description="Port of the collector's /metrics, /healthz and /readyz (bound to "
        "DISENGAGE_METRICS_BIND; kept off the public port).",
    )
    collector_path_prefix: str = Field(
        default="/dg",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description='Path prefix of the event endpoints ("" for none). Ad blockers block '
        "paths containing analytics, collect, track or stats: keep those words out of it.",
    )
    collector_sites: dict[str, Site] = Field(
        default_factory=dict,
        description="JSON object of site id to {write_key, origins, rate_per_s, burst_s, "
        "webhook_secret} (stream/collector/sites.py). The collector refuses to start without "
        "one.",
    )
    collector_max_event_bytes: int = Field(
        default=32 * 1024,
        ge=256,
        description="Largest event accepted (bytes, as sent); a larger one is dead-lettered "
        "(too_large). Segment's HTTP API limit.",
    )
    collector_max_body_bytes: int = Field(
        default=500 * 1024,
        ge=1024,
        description="Largest request body, after decompression (bytes); a larger one is "
        "answered 413. Segment's HTTP API limit.",
    )
    collector_tracker_file: str = Field(
        default="",
        description='The browser tracker the collector serves at <prefix>/t.js ("": '
        "tracker/dist/disengage.min.js of this checkout, built by `npm run build` in tracker/).",
    )
    console_dir: str = Field(
        default="",
        description="The console's page and bundle that `disengage console` and the demo serve "
        '("": console/ of this checkout, built by `make console`).',
    )
    collector_channel_secret: str = Field(
        default="",
        description="Key (HMAC-SHA256) of the tokens that open a session's intervention "
        'channel (stream/collector/channel.py). "": a random key per collector process, '
        "which is enough for one collector; set the same long random value on every collector "
        "behind one address, so a token issued by one opens the channel on another.",
    )
    collector_channel_ttl_s: float = Field(
        default=900.0,
        ge=10,
        description="Seconds a channel token is valid. The tracker gets a fresh one with "
        "every events request, so a page that is in use never runs out; a leaked token "
        "opens one session's channel for at most this long.",
    )
    detector: DetectorConfig = Field(
        default_factory=DetectorConfig,
        description="Thresholds of the detector core (DISENGAGE_<FIELD>).",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``) and nothing else."""
        try:
            return cls(**_Environment(cls, os.environ if env is None else env)())
        except ValidationError as exc:
            raise SettingsError(_one_line(exc)) from None
        except SourceError as exc:  # a JSON value that does not decode
            raise SettingsError(str(exc)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # constructor arguments only: from_env reads the environment, so
        # Settings() is the defaults and tests never pick up the caller's shell
        return (init_settings,)

    @field_validator("detector", mode="after")
    @classmethod
    def _check_detector(cls, config: DetectorConfig) -> DetectorConfig:
        # the core's checks: regexes compile, page types and playbook keys exist,
        # every kind has its fallback (detectors.config.validate_*)
        return config.validate()

    def redacted(self) -> dict[str, Any]:
        """Settings for logs, with secrets masked."""
        out = self.model_dump(exclude={"detector"})
        for name in (
            "kafka_sasl_password",
            "redis_password",
            "webhook_url",
            "collector_channel_secret",
        ):
            if out[name]:
                out[name] = "***"
        for site in out["collector_sites"].values():
            for name in ("write_key", "webhook_secret"):
                if site[name]:
                    site[name] = "***"
        if "@" in out["redis_url"]:
            scheme, rest = out["redis_url"].split("://", 1)
            out["redis_url"] = f"{scheme}://***@{rest.split('@', 1)[1]}"
        return out


class _Environment(EnvSettingsSource):
    """``DISENGAGE_*`` variables of ``environ`` for the service's fields, plus
    ``detector``: the raw ``DISENGAGE_<FIELD>`` values of :func:`detector_fields`
    (JSON decoded for :data:`JSON_FIELDS`), which pydantic converts to the
    dataclass's field types."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self.environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self.case_sensitive:
            return dict(self.environ)
        # pydantic-settings matches case-insensitively; the variables are
        # documented in upper case and always were matched exactly, so a
        # lower-case variable of another program never configures the worker
        return {name.lower(): value for name, value in self.environ.items() if name.isupper()}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        if field_name == "detector":  # read field by field below, never as one blob
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        overrides: dict[str, Any] = {}
        for name in detector_fields():
            variable = PREFIX + name.upper()
            raw = self.env_vars.get(variable if self.case_sensitive else variable.lower())
            if raw is not None:
                overrides[name] = _decode_json(variable, raw) if name in JSON_FIELDS else raw
        if overrides:
            values["detector"] = overrides
        return values


def _decode_json(variable: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"{variable} is not valid JSON: {exc}") from None


def _variable(loc: tuple[int | str, ...]) -> str | None:
    """The variable an error location points at (``None``: a check across fields)."""
    head = str(loc[0]) if loc else ""
    if head == "detector":
        return PREFIX + str(loc[1]).upper() if len(loc) > 1 else None
    if head.upper().startswith(PREFIX) or head.upper() in _FALLBACKS:
        return head.upper()  # read through an alias
    return PREFIX + head.upper() if head else None


def _one_line(exc: ValidationError) -> str:
    """Pydantic's errors as one line that names each variable, e.g.
    ``DISENGAGE_STALL_MS='2 min' is not a valid int`` or
    ``DISENGAGE_HESITATION_QUANTILE must be in [0.5, 1)``."""
    parts = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        variable = _variable(loc)
        kind = _PARSE_ERRORS.get(error["type"])
        if variable and kind:
            parts.append(f"{variable}={error['input']!r} is not a valid {kind}")
            continue
        cause = error.get("ctx", {}).get("error")
        message = str(cause) if cause is not None else error["msg"]
        # the core's checks start with the field they reject: say the variable
        named = re.match(r"(\w+)(.*)", message, re.S)
        if named and named.group(1) in detector_fields():
            parts.append(PREFIX + named.group(1).upper() + named.group(2))
            continue
        where = "".join(f"[{part}]" for part in loc[2:]) if loc[:1] == ("detector",) else ""
        parts.append(f"{variable}{where}: {message}" if variable else message)
    return "; ".join(" ".join(part.split()) for part in parts)


def reference() -> list[tuple[str, str, str]]:
    """(variable, default, description) rows of every setting, for the docs."""
    rows: list[tuple[str, str, str]] = []
    for name, info in Settings.model_fields.items():
        if name != "detector":
            rows.append((PREFIX + name.upper(), _shown(info.default), _words(info.description)))
    detector_docs = Settings.model_json_schema()["$defs"]["DetectorConfig"]["properties"]
    base = DetectorConfig()
    for name in detector_fields():
        description = _words(detector_docs[name].get("description"))
        if name in JSON_FIELDS:
            rows.append(
                (PREFIX + name.upper(), JSON_DEFAULTS[name], f"{description} {JSON_FIELDS[name]}")
            )
        else:
            rows.append((PREFIX + name.upper(), _shown(getattr(base, name)), description))
    return rows


def _shown(default: Any) -> str:
    return repr(default) if isinstance(default, str) else str(default)


def _words(text: str | None) -> str:
    return " ".join((text or "").split())


def markdown_table() -> str:
    """The configuration reference as a Markdown table (README)."""
    out = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, doc in reference():
        out.append(f"| `{name}` | `{default}` | {doc.replace('|', '/')} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_table())
