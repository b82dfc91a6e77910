"""docker-compose.yml, the Dockerfile and the image's lock file agree with the code and with
the Prometheus and Grafana files they mount.

Pure file checks (no Docker engine, no network): the compose file is parsed with PyYAML and
interpolated the way ``docker compose`` does on a machine where none of its variables is set
(defaults apply), so every check sees what a fresh ``docker compose up`` would run.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from detectors.config import DetectorConfig
from stream.cli import build_parser
from stream.kafka_io import MODELS_TOPIC_CONFIG
from stream.settings import PREFIX, Settings, SettingsError, reference

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker-compose.yml"
DOCKERFILE_PATH = ROOT / "Dockerfile"
DOCKERIGNORE_PATH = ROOT / ".dockerignore"
LOCK_PATH = ROOT / "deploy" / "docker" / "requirements.lock"
BUILD_LOCK_PATH = ROOT / "deploy" / "docker" / "build-requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# an exact release: x.y.z with an optional suffix (7.4.1-alpine, v2.53.3, 3.11.10-slim-bookworm)
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+(?:[-_.+][0-9A-Za-z][0-9A-Za-z._-]*)?$")
DEPENDENCY_CONDITIONS = {"service_healthy", "service_completed_successfully"}


# ------------------------------------------------------------------ compose interpolation
_VARIABLE = re.compile(
    r"\$\$"
    r"|\$\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_]\w*)"
)


def _interpolate(value: str, referenced: set[str]) -> str:
    """Compose interpolation with an empty environment: ``${X:-d}`` -> d, ``${X}`` -> ''."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        referenced.add(name)
        op = match.group("op") or ""
        if op.endswith("-"):
            return match.group("arg")
        assert not op.endswith("?"), (
            f"`docker compose up` fails unless ${name} is set ({match.group('arg')}); "
            "give it a default so one command starts everything"
        )
        return ""

    return _VARIABLE.sub(substitute, value)


def _interpolate_tree(node: Any, referenced: set[str]) -> Any:
    if isinstance(node, str):
        return _interpolate(node, referenced)
    if isinstance(node, list):
        return [_interpolate_tree(item, referenced) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, referenced) for key, value in node.items()}
    return node


REFERENCED: set[str] = set()
COMPOSE: dict[str, Any] = _interpolate_tree(yaml.safe_load(COMPOSE_PATH.read_text()), REFERENCED)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


# ------------------------------------------------------------------------ compose model
def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def service_env(name: str) -> dict[str, str]:
    """The service's environment (map or list form); host pass-through entries left out."""
    raw = SERVICES[name].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    return {key: _scalar(value) for key, value in raw.items() if value is not None}


def _argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [_scalar(v) for v in value]


def service_command(name: str) -> list[str]:
    return _argv(SERVICES[name].get("command"))


def healthcheck_test(name: str) -> list[str]:
    """["CMD", ...] or ["CMD-SHELL", "..."]; [] when the service has none."""
    check = SERVICES[name].get("healthcheck") or {}
    if check.get("disable"):
        return []
    test = check.get("test")
    if test is None:
        return []
    argv = ["CMD-SHELL", test] if isinstance(test, str) else [_scalar(t) for t in test]
    return [] if argv[:1] == ["NONE"] else argv


def depends_on(name: str) -> dict[str, dict[str, Any]]:
    raw = SERVICES[name].get("depends_on") or {}
    assert isinstance(raw, dict), (
        f"service {name}: depends_on is a plain list; give every dependency a condition "
        "(service_healthy / service_completed_successfully)"
    )
    return raw


@dataclass(frozen=True)
class Mount:
    source: str  # host path (bind) or volume name ("" for an anonymous volume)
    target: str
    read_only: bool
    bind: bool


def mounts(name: str) -> list[Mount]:
    out = []
    for volume in SERVICES[name].get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) == 1:
                out.append(Mount("", parts[0], False, False))
                continue
            source, target = parts[0], parts[1]
            mode = parts[2].split(",") if len(parts) > 2 else []
            out.append(Mount(source, target, "ro" in mode, source.startswith((".", "/", "~"))))
        else:
            out.append(
                Mount(
                    str(volume.get("source", "")),
                    volume["target"],
                    bool(volume.get("read_only", False)),
                    volume.get("type") == "bind",
                )
            )
    return out


def host_path(name: str, container_path: str) -> Path | None:
    """The host path a container path of ``name`` shows, through its bind mounts."""
    best: Mount | None = None
    for mount in mounts(name):
        target = mount.target.rstrip("/")
        inside = container_path == target or container_path.startswith(target + "/")
        if mount.bind and inside and (best is None or len(target) > len(best.target)):
            best = mount
    if best is None:
        return None
    rest = container_path[len(best.target.rstrip("/")) :].lstrip("/")
    base = (COMPOSE_PATH.parent / best.source).resolve()
    return base / rest if rest else base


def published_ports(name: str) -> list[tuple[int, int]]:
    """(host port, container port) pairs of ``ports``."""
    out = []
    for port in SERVICES[name].get("ports") or []:
        if isinstance(port, dict):
            out.append((int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        if len(parts) == 1:
            continue  # a random host port: nothing to point a client at
        out.append((int(parts[-2]), int(parts[-1])))
    return out


def image_services() -> list[str]:
    """Services running the project's own image (built from ./Dockerfile)."""
    built = {s.get("image") for s in SERVICES.values() if "build" in s}
    return [name for name, s in SERVICES.items() if "build" in s or s.get("image") in built]


def test_one_service_builds_the_image_and_the_others_never_pull_it() -> None:
    builders = [name for name, s in SERVICES.items() if "build" in s]
    assert builders == ["worker"], "one builder: parallel bake exports of one tag fail"
    for name in image_services():
        if name != "worker":
            assert SERVICES[name].get("pull_policy") == "never", name
            assert "worker" in depends_on(name), f"{name} must start after the image is built"


def one_shot_services() -> set[str]:
    """Services something waits for to *complete* (the topic initialiser)."""
    return {
        dep
        for name in SERVICES
        for dep, spec in depends_on(name).items()
        if (spec or {}).get("condition") == "service_completed_successfully"
    }


def find_service(predicate: Any, what: str) -> str:
    found = [name for name, s in SERVICES.items() if predicate(name, s)]
    assert len(found) == 1, f"expected one {what} service in docker-compose.yml, got {found}"
    return found[0]


KAFKA = find_service(
    lambda n, s: "KAFKA_PROCESS_ROLES" in service_env(n), "Kafka broker (KAFKA_PROCESS_ROLES)"
)
REDIS = find_service(lambda n, s: str(s.get("image", "")).startswith("redis:"), "redis")
PROMETHEUS = find_service(
    lambda n, s: str(s.get("image", "")).startswith("prom/prometheus:"), "prom/prometheus"
)
GRAFANA = find_service(
    lambda n, s: str(s.get("image", "")).startswith("grafana/grafana:"), "grafana/grafana"
)


def service_script(name: str) -> str:
    """Entrypoint and command of a service as one string (shell scripts included)."""
    return " ".join(_argv(SERVICES[name].get("entrypoint")) + service_command(name))


TOPICS_INIT = find_service(
    lambda n, s: "kafka-topics.sh" in service_script(n) and "--create" in service_script(n),
    "topic initialiser (kafka-topics.sh --create)",
)


# ---------------------------------------------------------------------------- Dockerfile
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE_PATH.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        instruction, _, rest = (pending + stripped).partition(" ")
        out.append((instruction.upper(), rest.strip()))
        pending = ""
    return out


def dockerfile_args(instruction: str) -> list[str]:
    return [rest for inst, rest in dockerfile() if inst == instruction]


def exec_form(rest: str) -> list[str]:
    assert rest.startswith("["), f"use the exec (JSON) form: {rest!r}"
    value = json.loads(rest)
    assert isinstance(value, list)
    return [str(v) for v in value]


def dockerfile_from_images() -> list[str]:
    """Base images of every stage, global ARG defaults substituted, stage names skipped."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    for instruction, rest in dockerfile():
        if instruction == "ARG" and not images and "=" in rest:
            key, value = rest.split("=", 1)
            args[key.strip()] = value.strip().strip("\"'")
        if instruction == "FROM":
            tokens = [t for t in rest.split() if not t.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), tokens[0])
            if image not in stages:
                images.append(image)
            if len(tokens) >= 3 and tokens[1].upper() == "AS":
                stages.add(tokens[2])
    return images


def dockerfile_env() -> dict[str, str]:
    out = {}
    for rest in dockerfile_args("ENV"):
        for pair in shlex.split(rest):
            assert "=" in pair, f"ENV {rest!r}: use the KEY=value form"
            key, value = pair.split("=", 1)
            out[key] = value
    return out


def dockerfile_healthcheck() -> list[str]:
    (rest,) = dockerfile_args("HEALTHCHECK")
    _, _, cmd = rest.partition("CMD ")
    return exec_form(cmd.strip())


DOCKER_CMD = exec_form(dockerfile_args("CMD")[-1])


def image_argv(name: str) -> list[str]:
    """The CLI arguments a service of the project's image runs (ENTRYPOINT = disengage)."""
    return service_command(name) or DOCKER_CMD


def worker_services() -> list[str]:
    return [name for name in image_services() if image_argv(name)[:1] == ["worker"]]


WORKER = find_service(lambda n, s: n in worker_services(), "`disengage worker`")


# --------------------------------------------------------------------------------- misc
def image_tag(image: str) -> tuple[str, str | None]:
    """(repository, tag) of an image reference; tag None when there is none."""
    ref = image.split("@", 1)[0]
    repository, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, None
    return repository, tag


def http_port(argv: list[str], env: Mapping[str, str]) -> tuple[int, str]:
    """(port, path) of the http://127.0.0.1 URL a healthcheck fetches. A port written as
    ``{...metrics_port}`` is the settings' one (the Dockerfile's check follows the env)."""
    text = " ".join(argv)
    match = re.search(r"http://(?:127\.0\.0\.1|localhost)(?::(\d+|\{[^}]*\}))?(/[^'\"\s]*)", text)
    assert match, f"healthcheck fetches no local URL: {text!r}"
    port, path = match.group(1) or "80", match.group(2)
    if port.isdigit():
        return int(port), path
    assert "metrics_port" in port, f"cannot tell the port of {match.group(0)!r}"
    return Settings.from_env(env).metrics_port, path


def kafka_listeners(variable: str) -> dict[str, tuple[str, int]]:
    value = service_env(KAFKA).get(variable, "")
    found = re.findall(r"([A-Za-z_][\w-]*)://([^:,\s]*):(\d+)", value)
    assert found, f"{KAFKA}: {variable} is missing or empty"
    return {name: (host, int(port)) for name, host, port in found}


def internal_bootstrap() -> str:
    """host:port of the broker's inter-broker (internal) advertised listener."""
    env = service_env(KAFKA)
    internal = env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
    host, port = kafka_listeners("KAFKA_ADVERTISED_LISTENERS")[internal]
    return f"{host}:{port}"


def setting_names() -> set[str]:
    """Every DISENGAGE_* variable the settings module reads (looked up, not listed here)."""
    names = {row[0] for row in reference()}
    names |= {PREFIX + name.upper() for name in Settings.model_fields if name != "detector"}
    return names


def settings_of(name: str) -> Settings:
    try:
        return Settings.from_env(service_env(name))
    except SettingsError as exc:
        raise AssertionError(f"service {name}: {exc}") from None


def prometheus_config() -> dict[str, Any]:
    command = service_command(PROMETHEUS)
    config = next(
        (a.split("=", 1)[1] for a in command if a.startswith("--config.file=")),
        "/etc/prometheus/prometheus.yml",  # the image's default command
    )
    path = host_path(PROMETHEUS, config)
    assert path is not None, f"{PROMETHEUS}: nothing is bind-mounted at {config}"
    assert path.is_file(), f"{PROMETHEUS}: {config} is mounted from {path}, which is missing"
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), f"{path} is not a YAML mapping"
    return loaded


def scrape_targets(job_name: str) -> list[tuple[str, int]]:
    """(host, port) targets of a scrape job, from dns_sd_configs and static_configs."""
    jobs = {job["job_name"]: job for job in prometheus_config().get("scrape_configs") or []}
    assert job_name in jobs, f"prometheus.yml has no scrape job {job_name!r}: {sorted(jobs)}"
    job = jobs[job_name]
    out = []
    for sd in job.get("dns_sd_configs") or []:
        assert sd.get("type", "SRV") == "A", f"job {job_name}: DNS discovery must be type A"
        out += [(host, int(sd["port"])) for host in sd["names"]]
    for static in job.get("static_configs") or []:
        for target in static.get("targets") or []:
            host, _, port = str(target).rpartition(":")
            out.append((host, int(port)))
    assert out, f"job {job_name}: no dns_sd_configs or static_configs targets"
    return out


def served_ports(name: str) -> set[int]:
    """Ports a service of the project's image really serves HTTP on: the worker's
    DISENGAGE_METRICS_PORT, a command's --metrics-port, the console's --port
    (``expose`` only documents)."""
    ports = set()
    argv = image_argv(name)
    if "--metrics-port" in argv:
        ports.add(int(argv[argv.index("--metrics-port") + 1]))
    if argv[:1] == ["worker"]:
        ports.add(settings_of(name).metrics_port)
    if argv[:1] == ["trainer"]:
        ports.add(settings_of(name).trainer_metrics_port)
    if argv[:1] == ["collect"]:
        ports.add(settings_of(name).collector_metrics_port)
        ports.add(settings_of(name).collector_port)
    if argv[:1] == ["console"]:
        ports.add(int(argv[argv.index("--port") + 1]) if "--port" in argv else 8480)
    return ports


# ============================================================================== tests
def test_bind_mounts_exist_and_are_read_only() -> None:
    checked = 0
    for name in SERVICES:
        for mount in mounts(name):
            if not mount.bind:
                continue
            path = (COMPOSE_PATH.parent / mount.source).resolve()
            assert path.exists(), f"service {name}: bind mount {mount.source} -> {path} is missing"
            assert ROOT in path.parents or path == ROOT, (
                f"service {name}: {mount.source} is outside the repository"
            )
            assert mount.read_only, (
                f"service {name}: mount {mount.source}:{mount.target} with :ro "
                "(configuration is never written by the container)"
            )
            checked += 1
    assert checked >= 4, "expected the Prometheus and Grafana configuration to be bind-mounted"


def test_every_image_is_pinned_to_an_exact_version() -> None:
    images = {f"service {n}": str(s["image"]) for n, s in SERVICES.items() if "image" in s}
    images |= {f"Dockerfile FROM #{i}": img for i, img in enumerate(dockerfile_from_images(), 1)}
    missing = [name for name, s in SERVICES.items() if "image" not in s]
    assert not missing, f"services without an image (tag the built one too): {missing}"
    for where, image in images.items():
        _, tag = image_tag(image)
        assert tag is not None, f"{where}: {image} has no tag (that means :latest)"
        assert tag != "latest", f"{where}: {image} is not pinned"
        assert PINNED_TAG.match(tag), (
            f"{where}: {image}: pin a full x.y.z version, not a floating tag like {tag!r}"
        )
    # the image built here carries the project's version
    version = PYPROJECT["project"]["version"]
    for name in image_services():
        repository, tag = image_tag(SERVICES[name]["image"])
        assert (repository, tag) == ("disengage", version), (
            f"service {name}: tag the built image disengage:{version} (pyproject version)"
        )


def test_services_have_healthchecks_restart_policies_and_conditional_dependencies() -> None:
    one_shot = one_shot_services()
    assert TOPICS_INIT in one_shot, f"nothing waits for {TOPICS_INIT} to complete"
    for name, service in SERVICES.items():
        restart = str(service.get("restart", "no"))
        if name in one_shot:
            assert restart in {"no", "False", "false"}, (
                f'one-shot service {name} must not be restarted (restart: "no"), got {restart}'
            )
        else:
            assert healthcheck_test(name), f"service {name} has no healthcheck"
            assert restart == "unless-stopped", (
                f"long-running service {name}: restart: unless-stopped, got {restart}"
            )
        for dep, spec in depends_on(name).items():
            assert dep in SERVICES, f"service {name} depends on unknown service {dep}"
            condition = (spec or {}).get("condition")
            assert condition in DEPENDENCY_CONDITIONS, (
                f"service {name} -> {dep}: condition must be one of "
                f"{sorted(DEPENDENCY_CONDITIONS)}, got {condition}"
            )
            if condition == "service_healthy":
                assert healthcheck_test(dep), f"{name} waits for {dep} healthy; it has no check"
            else:
                assert dep in one_shot
            assert not SERVICES[dep].get("profiles") or SERVICES[name].get("profiles"), (
                f"{name} depends on {dep}, which only starts under a profile"
            )


def test_project_image_healthchecks_use_python() -> None:
    """python:*-slim has no curl or wget: the checks of the project's image are Python."""
    for name in image_services():
        test = healthcheck_test(name)
        assert test[:2] == ["CMD", "python"], (
            f"service {name}: healthcheck must run python (no curl/wget in slim): {test}"
        )
        compile(test[test.index("-c") + 1], f"<{name} healthcheck>", "exec")
        served = served_ports(name)
        exposed = {int(p) for p in SERVICES[name].get("expose") or []}
        assert exposed <= served, f"service {name}: exposes {exposed}, serves {served}"
        if "http://" in " ".join(test):
            port, _ = http_port(test, service_env(name))
            assert port in served, f"service {name}: healthcheck on :{port}, serves {served}"
    worker_check = healthcheck_test(WORKER)
    _, path = http_port(worker_check, service_env(WORKER))
    assert path == "/healthz", f"worker liveness must use /healthz (not {path}): {worker_check}"


def test_kafka_listeners_and_every_bootstrap_address() -> None:
    env = service_env(KAFKA)
    listeners = kafka_listeners("KAFKA_LISTENERS")
    advertised = kafka_listeners("KAFKA_ADVERTISED_LISTENERS")
    protocols = dict(
        pair.split(":", 1) for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols), (
        f"listeners {sorted(listeners)} missing from KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"
    )
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env.get("CLUSTER_ID", "")), (
        "CLUSTER_ID must be a base64url UUID (22 characters), e.g. kafka-storage.sh random-uuid"
    )

    # the controller quorum is this node, on its controller listener
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller not in advertised
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == (
        f"{env['KAFKA_NODE_ID']}@{KAFKA}:{listeners[controller][1]}"
    ), "KAFKA_CONTROLLER_QUORUM_VOTERS must name this node's controller listener"

    # internal listener: advertised under the service name, on the port it listens on
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert internal in advertised, f"{internal} (inter-broker) is not advertised"
    host, port = advertised[internal]
    assert host == KAFKA, f"advertise the internal listener as {KAFKA}:<port>, not {host}"
    assert listeners[internal][1] == port, f"{internal} advertised on {port}, listens elsewhere"

    # external listener: advertised as localhost and published on that very port
    external = [n for n in advertised if n not in {internal, controller}]
    assert external, "no external listener for clients on the host"
    for listener in external:
        ext_host, ext_port = advertised[listener]
        assert ext_host in {"localhost", "127.0.0.1"}, f"{listener} advertised as {ext_host}"
        assert (ext_port, listeners[listener][1]) in published_ports(KAFKA), (
            f"{listener} is advertised as {ext_host}:{ext_port}: publish "
            f"{ext_port}:{listeners[listener][1]}"
        )
    assert all(container != port for _, container in published_ports(KAFKA)), (
        "the internal listener is advertised as kafka:<port>, useless from the host"
    )

    # single node: internal topics with one replica, or the broker never serves groups
    for variable in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env.get(variable) == "1", f"{KAFKA}: set {variable}=1 on a single node"

    # data on a named volume at the log dirs
    log_dir = env["KAFKA_LOG_DIRS"]
    assert any(m.target == log_dir and not m.bind and m.source for m in mounts(KAFKA)), (
        f"{KAFKA}: mount a named volume at KAFKA_LOG_DIRS ({log_dir})"
    )

    # every client inside the network uses the internal listener
    bootstrap = internal_bootstrap()
    for name in image_services():
        servers = settings_of(name).kafka_bootstrap_servers
        assert servers == bootstrap, (
            f"service {name}: DISENGAGE_KAFKA_BOOTSTRAP_SERVERS={servers}, the broker's "
            f"internal listener is {bootstrap}"
        )
    healthcheck = " ".join(healthcheck_test(KAFKA))
    assert "kafka-broker-api-versions.sh" in healthcheck and bootstrap in healthcheck


def test_redis_url_points_to_the_redis_service_with_persistence() -> None:
    command = service_command(REDIS)
    port = int(command[command.index("--port") + 1]) if "--port" in command else 6379
    for name in image_services():
        url = urlsplit(settings_of(name).redis_url)
        assert url.scheme == "redis", f"service {name}: {url.geturl()}"
        assert (url.hostname, url.port or 6379) == (REDIS, port), (
            f"service {name}: DISENGAGE_REDIS_URL={url.geturl()} must point at {REDIS}:{port}"
        )
    assert command[command.index("--appendonly") + 1] == "yes", "redis: --appendonly yes"
    assert any(m.target == "/data" and not m.bind and m.source for m in mounts(REDIS)), (
        "redis: its data dir /data on a named volume"
    )
    assert "redis-cli" in " ".join(healthcheck_test(REDIS))


def test_metrics_port_is_the_one_prometheus_scrapes_and_the_image_exposes() -> None:
    port = settings_of(WORKER).metrics_port
    assert "DISENGAGE_METRICS_PORT" in service_env(WORKER), "set DISENGAGE_METRICS_PORT"
    targets = scrape_targets("disengage-worker")
    assert targets == [(WORKER, port)], (
        f"job disengage-worker scrapes {targets}; the worker serves /metrics on {WORKER}:{port}"
    )
    assert http_port(healthcheck_test(WORKER), service_env(WORKER)) == (port, "/healthz")
    assert not SERVICES[WORKER].get("ports"), (
        "do not publish ports of the replicated worker: the replicas would collide on the host"
    )

    exposed = {int(p.split("/")[0]) for rest in dockerfile_args("EXPOSE") for p in rest.split()}
    assert port in exposed, f"Dockerfile EXPOSE {sorted(exposed)} lacks the metrics port {port}"
    image_port, path = http_port(dockerfile_healthcheck(), {})
    assert (image_port, path) == (port, "/healthz"), (
        f"Dockerfile HEALTHCHECK fetches :{image_port}{path}, the worker serves :{port}/healthz"
    )


def test_every_scrape_target_is_a_compose_service_serving_that_port() -> None:
    checked: set[str] = set()
    for job in prometheus_config().get("scrape_configs") or []:
        for host, port in scrape_targets(job["job_name"]):
            checked.add(job["job_name"])
            if host in {"localhost", "127.0.0.1"}:
                assert port == 9090, f"job {job['job_name']}: Prometheus itself is on 9090"
                continue
            assert host in SERVICES, f"job {job['job_name']} scrapes {host}: no such service"
            if host in image_services():
                assert port in served_ports(host), (
                    f"job {job['job_name']} scrapes {host}:{port}; it serves {served_ports(host)}"
                )
    assert "disengage-worker" in checked, "no scrape target of the worker job was checked"


def test_topic_initialiser_creates_the_topics_the_workers_use() -> None:
    env = service_env(TOPICS_INIT)
    script = re.sub(
        r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), service_script(TOPICS_INIT)
    )
    assert "--create" in script and "--if-not-exists" in script, (
        f"{TOPICS_INIT}: kafka-topics.sh --create --if-not-exists (it runs on every up)"
    )
    loop = re.search(r"for\s+(\w+)\s+in\s+([^;\n]+)", script)
    topic_args = re.findall(r"--topic[ =]\"?([^\s\"]+)\"?", script)
    topics = set()
    for arg in topic_args:
        if loop and arg in {f"${loop.group(1)}", f"${{{loop.group(1)}}}"}:
            topics |= set(loop.group(2).split())
        else:
            topics.add(arg)
    # every topic with the workers' partition count, but the training topic (one
    # partition: one trainer learns it in order) and the compacted models topic
    singles = {}
    for command in re.split(r"\n(?=\s*/opt/kafka)", script):
        named = re.search(r"--topic[ =]\"?([^\s\"$]+)", command)
        if named and re.search(r"--partitions[ =]\"?1\b", command):
            singles[named.group(1)] = command
    partitions = {
        int(p)
        for command in re.split(r"\n(?=\s*/opt/kafka)", script)
        if command not in singles.values()
        for p in re.findall(r"--partitions[ =]\"?(\d+)", command)
    }
    assert len(partitions) == 1, f"{TOPICS_INIT}: one --partitions count, got {partitions}"
    (count,) = partitions
    assert re.search(r"--replication-factor[ =]\"?1\b", script), "single node: replication 1"
    bootstrap = re.findall(r"--bootstrap-server[ =]\"?([^\s\"]+)", script)
    assert bootstrap and set(bootstrap) == {internal_bootstrap()}, (
        f"{TOPICS_INIT}: --bootstrap-server {bootstrap}, the internal listener is "
        f"{internal_bootstrap()}"
    )

    for name in image_services():
        settings = settings_of(name)
        wanted = {
            getattr(settings, name)
            for name in Settings.model_fields
            if name.startswith("topic_") and isinstance(getattr(settings, name), str)
        }
        argv = image_argv(name)
        if argv[:2] == ["alerts", "forward"]:
            # the forwarder's dead-letter topic (`disengage alerts forward --help`)
            args = build_parser().parse_args(argv)
            wanted.add(args.dlq_topic or f"{settings.topic_alerts}.forward.dlq")
        assert wanted <= topics, f"{TOPICS_INIT} does not create {sorted(wanted - topics)}"
        assert settings.topic_training in singles, (
            f"{TOPICS_INIT}: create {settings.topic_training} with --partitions 1"
        )
        models = singles.get(settings.topic_models, "")
        for key, value in MODELS_TOPIC_CONFIG.items():
            assert f"--config {key}={value}" in models, (
                f"{TOPICS_INIT}: create {settings.topic_models} with one partition and the "
                f"configs of stream.kafka_io.MODELS_TOPIC_CONFIG (compacted, with room for a "
                f"model version): {key}={value} is missing"
            )
        assert settings.topic_partitions == count, (
            f"service {name}: DISENGAGE_TOPIC_PARTITIONS={settings.topic_partitions}, "
            f"{TOPICS_INIT} creates {count} partitions"
        )
        condition = depends_on(name).get(TOPICS_INIT, {}).get("condition")
        assert condition == "service_completed_successfully", (
            f"service {name} must wait for {TOPICS_INIT}: service_completed_successfully"
        )
    auto = service_env(KAFKA).get("KAFKA_NUM_PARTITIONS")
    assert auto in (None, str(count)), f"KAFKA_NUM_PARTITIONS={auto}, topics have {count}"
    assert depends_on(TOPICS_INIT).get(KAFKA, {}).get("condition") == "service_healthy"


def test_every_disengage_variable_is_a_real_setting_and_is_read() -> None:
    known = setting_names()
    set_anywhere = {
        (name, key) for name in SERVICES for key in service_env(name) if key.startswith(PREFIX)
    }
    unknown = sorted({key for _, key in set_anywhere} - known)
    assert not unknown, f"not settings of stream/settings.py (typo or not landed yet): {unknown}"
    interpolated = sorted(v for v in REFERENCED if v.startswith(PREFIX) and v not in known)
    assert not interpolated, f"${{...}} references that are not settings: {interpolated}"

    defaults = DetectorConfig()
    for name, key in sorted(set_anywhere):
        raw = service_env(name)[key]
        settings = settings_of(name)
        field_name = key[len(PREFIX) :].lower()
        own = set(Settings.model_fields)
        owner: Any = settings if field_name in own else settings.detector
        assert field_name in own or hasattr(defaults, field_name), f"{key} maps to no field"
        value = getattr(owner, field_name)
        if isinstance(value, dict):  # a JSON setting (DISENGAGE_COLLECTOR_SITES)
            parsed = json.loads(raw)
            assert {k: v.model_dump(exclude_defaults=True) for k, v in value.items()} == {
                k: {f: tuple(x) if isinstance(x, list) else x for f, x in v.items()}
                for k, v in parsed.items()
            }, f"service {name}: {key} was not read"
            continue
        if isinstance(value, bool):
            expected: Any = raw.strip().lower() in {"1", "true", "yes", "on"}
        else:
            expected = type(value)(raw)
        assert value == expected, f"service {name}: {key}={raw!r} was not read (got {value!r})"

    salt = service_env(WORKER).get("DISENGAGE_USER_SALT", "")
    assert "DISENGAGE_USER_SALT" in REFERENCED and salt, (
        "take DISENGAGE_USER_SALT from the host environment, with a placeholder default"
    )


def test_one_worker_service_with_two_replicas_in_one_consumer_group() -> None:
    service = SERVICES[WORKER]
    assert (service.get("deploy") or {}).get("replicas") == 2, f"{WORKER}: deploy.replicas: 2"
    assert "container_name" not in service, f"{WORKER}: container_name forbids replicas"
    assert service_env(WORKER).get("DISENGAGE_CONSUMER_GROUP", "x") != "", "empty group"
    # one service: every replica has the same environment, hence the same group
    assert worker_services() == [WORKER]


def test_named_volumes_are_declared_and_hold_the_data() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used = {m.source for name in SERVICES for m in mounts(name) if not m.bind and m.source}
    assert used <= declared, f"undeclared named volumes: {sorted(used - declared)}"
    assert declared <= used, f"declared but unused volumes: {sorted(declared - used)}"
    for name, data_dir in (
        (PROMETHEUS, "/prometheus"),
        (GRAFANA, "/var/lib/grafana"),
    ):
        assert any(m.target == data_dir and m.source in declared for m in mounts(name)), (
            f"service {name}: a named volume at its data dir {data_dir}"
        )


def test_prometheus_rules_are_mounted_where_prometheus_looks() -> None:
    rule_files = prometheus_config().get("rule_files") or []
    assert rule_files, "prometheus.yml has no rule_files"
    matched: set[Path] = set()
    for pattern in rule_files:
        host = host_path(PROMETHEUS, pattern)
        assert host is not None, f"rule_files {pattern}: not under a bind mount of {PROMETHEUS}"
        files = {Path(p) for p in glob.glob(str(host))}
        assert files, f"rule_files {pattern} (= {host} on the host) matches no file"
        matched |= files
    rules_dir = ROOT / "deploy" / "prometheus" / "rules"
    on_disk = {p.resolve() for p in rules_dir.glob("*") if p.suffix in {".yml", ".yaml"}}
    assert on_disk <= matched, f"rule files nobody loads: {sorted(on_disk - matched)}"
    for path in matched:
        assert "groups" in (yaml.safe_load(path.read_text()) or {}), f"{path}: no groups"


def test_grafana_provisioning_matches_the_mounts() -> None:
    env = service_env(GRAFANA)
    provisioning = env.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")
    host = host_path(GRAFANA, provisioning)
    assert host is not None and host.is_dir(), f"grafana: nothing mounted at {provisioning}"

    providers = [
        provider
        for path in sorted((host / "dashboards").glob("*.y*ml"))
        for provider in (yaml.safe_load(path.read_text()) or {}).get("providers") or []
    ]
    assert providers, f"no dashboard providers under {host / 'dashboards'}"
    dashboards_dir = (ROOT / "deploy" / "grafana" / "dashboards").resolve()
    for provider in providers:
        container_path = provider["options"]["path"]
        mapped = host_path(GRAFANA, container_path)
        assert mapped == dashboards_dir, (
            f"dashboard provider path {container_path} shows {mapped}, "
            f"mount deploy/grafana/dashboards there"
        )
        assert list(mapped.glob("*.json")), f"no dashboards in {mapped}"

    datasources = [
        source
        for path in sorted((host / "datasources").glob("*.y*ml"))
        for source in (yaml.safe_load(path.read_text()) or {}).get("datasources") or []
    ]
    prometheus_sources = [s for s in datasources if s.get("type") == "prometheus"]
    assert prometheus_sources, "no Prometheus datasource provisioned"
    for source in prometheus_sources:
        url = urlsplit(source["url"])
        assert (url.hostname, url.port) == (PROMETHEUS, 9090), (
            f"datasource {source['url']}: Prometheus is {PROMETHEUS}:9090 in the network"
        )

    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        mapped_home = host_path(GRAFANA, home)
        assert mapped_home and mapped_home.is_file(), f"home dashboard {home} is not mounted"
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "true"
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer"
    assert "GF_SECURITY_ADMIN_PASSWORD" in env and any(
        v.startswith("GRAFANA") or v.startswith("GF_") for v in REFERENCED
    ), "take the Grafana admin password from the environment (with a default)"
    assert (3000, 3000) in published_ports(GRAFANA) and (9090, 9090) in published_ports(PROMETHEUS)


def test_service_commands_are_real_cli_invocations() -> None:
    parser = build_parser()
    for name in image_services():
        argv = image_argv(name)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                parser.parse_args(argv)
            except SystemExit:
                raise AssertionError(
                    f"service {name}: `disengage {shlex.join(argv)}` is rejected by stream/cli.py:"
                    f" {stderr.getvalue().strip()}"
                ) from None
    simulate = [n for n in image_services() if image_argv(n)[:1] == ["simulate"]]
    assert simulate, "no simulator service producing live traffic"
    for name in simulate:
        args = parser.parse_args(image_argv(name))
        assert args.kafka and args.rate > 0, f"service {name}: simulate --kafka --rate R"


# ----------------------------------------------------------------------- Dockerfile
def test_dockerfile_is_multi_stage_non_root_and_runs_the_cli() -> None:
    assert len(dockerfile_args("FROM")) >= 2, "build the wheel in a builder stage"
    bases = set(dockerfile_from_images())
    (base,) = {b for b in bases if b.startswith("python:")}
    assert "slim" in base, f"base image {base}"
    # the only other stage builds the browser tracker with Node
    assert all(b.startswith("node:") and "slim" in b for b in bases - {base}), bases
    users = dockerfile_args("USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "run as a non-root user"
    assert exec_form(dockerfile_args("ENTRYPOINT")[-1]) == ["disengage"]
    assert DOCKER_CMD == ["worker"]
    env = dockerfile_env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1" and env.get("PYTHONUNBUFFERED") == "1"
    runs = " ".join(dockerfile_args("RUN"))
    lock = LOCK_PATH.relative_to(ROOT).as_posix()
    assert any(lock in rest.split() for rest in dockerfile_args("COPY")), f"COPY {lock}"
    installs = re.findall(r"pip install ([^&]*-r \S*\.lock)", runs)
    assert any(i.endswith("/" + LOCK_PATH.name) for i in installs), f"pip install -r {lock}"
    for install in installs:
        assert "--require-hashes" in install, f"install the lock with hashes: {install}"
        assert "--no-deps" in install, f"--no-deps, the lock lists every dependency: {install}"
    assert re.search(r"pip install [^&]*--no-deps[^&]*disengage-\S*\.whl", runs), (
        "install the project's wheel with --no-deps (its dependencies came from the lock)"
    )


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def docker_context_includes(path: str) -> bool:
    """Whether .dockerignore lets ``path`` (relative, posix) into the build context: the
    last pattern matching the path or one of its parents decides, as in Docker."""
    included = True
    candidates = [path, *(str(p) for p in PurePosixPath(path).parents if str(p) != ".")]
    for line in DOCKERIGNORE_PATH.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip("/")))
        regex = _docker_pattern(pattern)
        if any(regex.fullmatch(c) for c in candidates):
            included = negated
    return included


def _repo_files(directory: Path) -> Iterator[str]:
    for path in directory.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path.relative_to(ROOT).as_posix()


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    for excluded in (
        ".git/HEAD",
        ".venv/bin/python",
        ".cache/kafka/x",
        "tests/test_docs.py",
        "benchmarks/bench_core.py",
        "deploy/local/infra.py",
        ".mypy_cache/x",
        "detectors/__pycache__/config.cpython-311.pyc",
    ):
        assert not docker_context_includes(excluded), f".dockerignore lets {excluded} in"
    for rest in dockerfile_args("COPY"):
        sources = [t for t in rest.split() if not t.startswith("--")][:-1]
        if "--from=" in rest:
            continue
        for source in sources:
            path = ROOT / source
            files = list(_repo_files(path)) if path.is_dir() else [source]
            assert path.exists(), f"Dockerfile copies {source}, which does not exist"
            for file in files:
                assert docker_context_includes(file), f".dockerignore drops {file} (COPY {source})"


# ------------------------------------------------------------------------- lock files
@dataclass
class Pin:
    version: str
    hashes: list[str]
    via: list[str]


def read_lock(path: Path) -> tuple[dict[str, Pin], list[str]]:
    """(canonical name -> pin, top-level option lines) of a pip-compile lock file."""
    assert path.is_file(), f"{path} is missing: run deploy/docker/lock.sh"
    pins: dict[str, Pin] = {}
    options: list[str] = []
    current: Pin | None = None
    for line in re.sub(r"\\\n", " ", path.read_text()).splitlines():
        if not line.strip():
            continue
        if line.startswith("    #"):
            if current is not None:
                text = line.strip().lstrip("#").strip()
                text = text.removeprefix("via").strip()
                if text:
                    current.via.append(text)
            continue
        if line.startswith("#"):
            continue
        tokens = line.split()
        if tokens[0].startswith("-"):
            options.append(line.strip())
            continue
        requirement = Requirement(tokens[0])
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
            f"{path.name}: {tokens[0]} is not an exact == pin"
        )
        hashes = [t.split("=", 1)[1] for t in tokens[1:] if t.startswith("--hash=")]
        assert hashes and all(h.startswith("sha256:") for h in hashes), (
            f"{path.name}: {tokens[0]} has no --hash=sha256:..."
        )
        current = Pin(specs[0].version, hashes, [])
        pins[canonicalize_name(requirement.name)] = current
    return pins, options


def _check_lock_covers(path: Path, requirements: list[str], direct_marker: str) -> None:
    pins, options = read_lock(path)
    assert not options, f"{path.name}: no index/find-links options in the lock: {options}"
    direct = set()
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        direct.add(name)
        assert name in pins, f"{path.name} does not pin {requirement.name}: run lock.sh"
        assert requirement.specifier.contains(pins[name].version, prereleases=True), (
            f"{path.name}: {name}=={pins[name].version} violates pyproject's {requirement}"
        )
    annotated = {n for n, pin in pins.items() if any(v.startswith(direct_marker) for v in pin.via)}
    assert annotated == direct, (
        f"{path.name} was compiled from other requirements than pyproject.toml's "
        f"(extras?): extra {sorted(annotated - direct)}, missing {sorted(direct - annotated)}"
    )


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    """Runtime dependencies only: the test, plot and bench extras stay out of the image."""
    _check_lock_covers(
        LOCK_PATH, PYPROJECT["project"]["dependencies"], "disengage (pyproject.toml)"
    )


def test_build_lock_pins_the_build_backend() -> None:
    _check_lock_covers(
        BUILD_LOCK_PATH,
        PYPROJECT["build-system"]["requires"],
        "disengage (pyproject.toml::build-system.requires)",
    )


def test_lock_python_matches_the_image() -> None:
    header = re.search(r"pip-compile with Python (\d+\.\d+)", LOCK_PATH.read_text())
    assert header, f"{LOCK_PATH.name}: no pip-compile header"
    (base,) = {b for b in dockerfile_from_images() if b.startswith("python:")}
    _, tag = image_tag(base)
    assert tag is not None
    version = re.match(r"\d+\.\d+\.\d+", tag)
    assert version, f"base image {base}"
    assert version.group(0).rsplit(".", 1)[0] == header.group(1), (
        f"the lock is resolved for Python {header.group(1)}, the image runs {version.group(0)}"
    )
    requires = PYPROJECT["project"]["requires-python"]
    assert Version(version.group(0)) in SpecifierSet(requires), (
        f"image Python {version.group(0)} outside requires-python {requires}"
    )
