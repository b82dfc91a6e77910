#!/usr/bin/env python3
"""Start and stop a real single-node Kafka broker (KRaft), redis-server and a 3-node Redis
Cluster for tests.

No Docker: the broker jars come from Maven Central (deploy/kafka/pom.xml, cached in
.cache/kafka/<version>/libs) and redis-server from apt when it is missing. All bind to
127.0.0.1 on free ports, and every start gets a fresh directory .cache/infra/run-<id>/
holding server.properties, the data, logs/, an `env` file and state.json.

  python deploy/local/infra.py run -- python -m pytest -m integration   # start, run, stop
  eval "$(python deploy/local/infra.py start)"     # leave running, export the variables
  python deploy/local/infra.py status
  eval "$(python deploy/local/infra.py stop)"      # $DISENGAGE_INFRA_DIR, else newest live run
  python deploy/local/infra.py stop --all

A service whose variable (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, REDIS_CLUSTER_URL: one node
of the cluster) is already set is not started; the given address is used as is. Standard
library only: CI can call this before any pip install.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
POM = REPO / "deploy" / "kafka" / "pom.xml"
CACHE = REPO / ".cache"
RUNS = CACHE / "infra"
DEFAULT_KAFKA_VERSION = os.environ.get("DISENGAGE_KAFKA_VERSION", "3.9.1")
KAFKA_TIMEOUT_S, REDIS_TIMEOUT_S, STOP_GRACE_S = 90.0, 15.0, 30.0
CLUSTER_NODES = 3
ENV_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "REDIS_CLUSTER_URL", "DISENGAGE_INFRA_DIR")
Proc = subprocess.Popen[bytes]


class InfraError(RuntimeError):
    """A failure whose message is for the user (printed without a traceback)."""


class Interrupted(BaseException):
    """Raised by ``run``'s signal handler when a signal arrives before CMD started."""


def log(msg: str) -> None:
    print(f"infra: {msg}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


def kafka_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise InfraError(f"bad Kafka version {version!r} (want e.g. 3.9.1 or 4.1.0)") from None


# ---------------------------------------------------------------------------- installing
def ensure_kafka_libs(version: str) -> Path:
    """Return .cache/kafka/<version>/libs, resolving it with Maven on first use."""
    libs = CACHE / "kafka" / version / "libs"
    if (libs / ".complete").exists():
        return libs
    if shutil.which("mvn") is None:
        raise InfraError(
            f"Kafka {version} is not cached in {libs} and `mvn` is not on PATH; "
            "install Maven (apt-get install maven)"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".lock", "w") as lock:  # concurrent first runs: one downloads
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / ".complete").exists():
            return libs
        tmp = libs.parent / f"libs.tmp-{os.getpid()}"
        log(f"resolving Kafka {version} jars from Maven Central into {libs} (first run only)")
        t0 = time.monotonic()
        cmd = ["mvn", "-B", "-q", "-ntp", "-f", str(POM), "dependency:copy-dependencies"]
        cmd += [f"-DoutputDirectory={tmp}", f"-Dkafka.version={version}"]
        cmd += [f"-Dkafka.major={kafka_major(version)}"]  # selects the logging profile
        mvn = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if mvn.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InfraError(
                f"Maven could not resolve org.apache.kafka:kafka_2.13:{version}\n"
                f"$ {shlex.join(cmd)}\n"
                + re.sub(r"\x1b\[[0-9;]*m", "", mvn.stdout + mvn.stderr)  # Maven 3.8 -q colours
            )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        (libs / ".complete").write_text(version + "\n")
        log(f"Kafka {version} jars ready in {time.monotonic() - t0:.1f}s")
    return libs


def ensure_redis_server() -> str:
    """Return the path of redis-server, installing the Debian package if it is missing."""
    if found := shutil.which("redis-server"):
        return found
    if shutil.which("apt-get") is None:
        raise InfraError("redis-server is not on PATH and there is no apt-get; install Redis")
    sudo: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise InfraError("redis-server is missing; run `apt-get install redis-server` as root")
        sudo = ["sudo"] if sys.stdin.isatty() else ["sudo", "-n"]  # never hang in CI
    log("redis-server not found; installing it with apt-get")
    for step in (["update"], ["install", "-y", "--no-install-recommends", "redis-server"]):
        cmd = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", *step]
        if subprocess.run(cmd, stdout=sys.stderr).returncode != 0:
            raise InfraError(f"`{shlex.join(cmd)}` failed; install redis-server yourself")
    if found := shutil.which("redis-server"):
        return found
    raise InfraError("apt-get installed redis-server but it is not on PATH")


# ------------------------------------------------------------------------------- probing
def free_ports(n: int) -> list[int]:
    """Ask the kernel for ``n`` distinct free TCP ports on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        if not (chunk := sock.recv(n - len(buf))):
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def _kafka_call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    """Send one request with a v1 (non-flexible) header; return the response body."""
    client = b"disengage-infra"
    req = struct.pack(">hhih", api_key, version, corr, len(client)) + client + body
    sock.sendall(struct.pack(">i", len(req)) + req)
    resp = _recv_exact(sock, struct.unpack(">i", _recv_exact(sock, 4))[0])
    if struct.unpack(">i", resp[:4])[0] != corr:
        raise ConnectionError("correlation id mismatch")
    return resp[4:]


def kafka_brokers(host: str, port: int, timeout: float = 5.0) -> list[tuple[int, str, int]]:
    """Fetch cluster metadata over the Kafka wire protocol; return the (id, host, port)s.

    ApiVersions v0 first (every broker answers it), then a Metadata request for no topics
    at the highest non-flexible version (<= 8) that the broker supports. A KRaft broker
    lists itself only once it is registered and unfenced, i.e. ready for clients.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        av = _kafka_call(sock, 18, 0, 1, b"")
        err, count = struct.unpack_from(">hi", av)
        apis = {
            k: (lo, hi)
            for k, lo, hi in (struct.unpack_from(">hhh", av, 6 + 6 * i) for i in range(count))
        }
        lo, hi = apis.get(3, (0, -1))
        version = min(hi, 8)
        if err or version < max(lo, 1):
            raise ConnectionError(f"ApiVersions error {err}; Metadata versions {lo}..{hi}")
        body = struct.pack(">i", 0)  # no topics: brokers only, nothing gets auto-created
        body += b"\x00" * ((version >= 4) + 2 * (version >= 8))  # v4+/v8+ boolean flags
        md = _kafka_call(sock, 3, version, 2, body)
    pos = 4 if version >= 3 else 0  # throttle_time_ms
    (count,) = struct.unpack_from(">i", md, pos)
    pos += 4
    brokers = []
    for _ in range(count):
        node_id, hlen = struct.unpack_from(">ih", md, pos)
        bhost = md[pos + 6 : pos + 6 + hlen].decode()
        bport, rack_len = struct.unpack_from(">ih", md, pos + 6 + hlen)
        pos += 12 + hlen + max(rack_len, 0)
        brokers.append((node_id, bhost, bport))
    return brokers


def kafka_ready(port: int, host: str = "127.0.0.1") -> bool:
    try:
        return bool(kafka_brokers(host, port, timeout=2.0))
    except (OSError, struct.error, UnicodeDecodeError):
        return False


def redis_ping(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_cluster_ok(port: int, host: str = "127.0.0.1") -> bool:
    """Does the node at ``port`` report ``cluster_state:ok`` (all slots served)?"""
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            sock.sendall(b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n")
            head = sock.recv(4096)  # "$<n>\r\n" then the text, state first
            return b"cluster_state:ok" in head
    except OSError:
        return False


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def ours(pid: int, *needles: str) -> bool:
    """Guard against pid reuse: does ``pid``'s command line still contain ``needles``?"""
    if not alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return True  # no /proc: trust the pid
    return all(n in cmdline for n in needles)


# ------------------------------------------------------------------------------- running
def _pdeathsig() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when infra.py dies (Linux only)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def launch(
    what: str,
    cmd: list[str],
    logs: list[Path],
    ready: Callable[[], bool],
    timeout: float,
    tied: bool,
) -> Proc | None:
    """Start ``cmd`` in its own session with output to ``logs[-1]``; poll ``ready``.

    Returns None if the service lost its port to another process (the caller retries with
    new ports); raises InfraError with the tails of ``logs`` on any other failure.
    """
    seen = {p: p.stat().st_size if p.exists() else 0 for p in logs}  # earlier attempts
    with open(logs[-1], "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=logs[-1].parent,
            start_new_session=True,  # own process group: stop_pid() kills all of it
            preexec_fn=_pdeathsig() if tied else None,
        )
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                return proc
            time.sleep(0.25)
    except BaseException:
        stop_pid(proc.pid, proc)
        raise
    died = proc.returncode is not None
    why = f"exited with code {proc.returncode}" if died else f"not ready after {timeout:.0f}s"
    stop_pid(proc.pid, proc)
    if any(b"Address already in use" in p.read_bytes()[seen[p] :] for p in logs if p.exists()):
        log(f"{what}: port taken meanwhile; retrying on new ports")
        return None
    tails = "\n".join(f"----- tail of {p} -----\n{tail(p)}" for p in logs)
    raise InfraError(f"{what} {why}\n{tails}")


def write_kafka_config(run: Path, port: int, cport: int, major: int) -> None:
    """Write server.properties and log4j.properties (3.x) or log4j2.properties (4.x)."""
    props = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@127.0.0.1:{cport}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": run / "data",
        "num.partitions": 1,
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 1,  # the first consumer group comes up faster
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "log.retention.ms": 3_600_000,
        "log.segment.bytes": 16 * 1024 * 1024,
        "num.network.threads": 2,
        "num.io.threads": 4,
    }
    if major >= 4:
        props |= {
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
        }
    (run / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    logfile, pattern = run / "logs" / "kafka.log", "[%d] %p %m (%c)%n"
    if major >= 4:
        (run / "log4j2.properties").write_text(
            f"status = warn\nappender.file.type = File\nappender.file.name = FILE\n"
            f"appender.file.fileName = {logfile}\nappender.file.layout.type = PatternLayout\n"
            f"appender.file.layout.pattern = {pattern}\n"
            f"rootLogger.level = INFO\nrootLogger.appenderRef.file.ref = FILE\n"
            f"logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
        )
    else:
        (run / "log4j.properties").write_text(
            f"log4j.rootLogger=INFO, file\nlog4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={logfile}\n"
            f"log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            f"log4j.appender.file.layout.ConversionPattern={pattern}\n"
            f"log4j.logger.state.change.logger=WARN\n"
        )


def kafka_java(run: Path, version: str) -> list[str]:
    """``java`` with the broker's class path and the logging config of ``run``."""
    if shutil.which("java") is None:
        raise InfraError("`java` is not on PATH; the broker needs a JDK 17+")
    libs = ensure_kafka_libs(version)
    java = ["java", "-Djava.awt.headless=true", "-cp", f"{libs}/*"]
    if kafka_major(version) >= 4:
        java += [
            f"-Dlog4j2.configurationFile={run / 'log4j2.properties'}",
            "-Dlog4j2.shutdownHookEnabled=false",
        ]
    else:
        java += [f"-Dlog4j.configuration=file:{run / 'log4j.properties'}"]
    return java


def kafka_server_command(run: Path, version: str) -> list[str]:
    java = kafka_java(run, version)
    props = run / "server.properties"
    return [java[0], "-Xmx1g", "-Xms256m", "-XX:+UseG1GC", *java[1:], "kafka.Kafka", str(props)]


def start_kafka(run: Path, version: str, tied: bool) -> tuple[Proc, dict[str, Any]]:
    """Format a fresh KRaft log dir, start kafka.Kafka and wait until it serves metadata."""
    major = kafka_major(version)
    java = kafka_java(run, version)
    props, out = run / "server.properties", run / "logs" / "kafka.out"
    for _ in range(3):  # a port picked as free can be taken before Kafka binds it
        port, cport = free_ports(2)
        shutil.rmtree(run / "data", ignore_errors=True)
        write_kafka_config(run, port, cport, major)
        cluster_id = "-"
        while cluster_id.startswith("-"):  # same rule as Kafka's Uuid.randomUuid()
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        tool = [java[0], "-XX:TieredStopAtLevel=1", *java[1:], "kafka.tools.StorageTool"]
        fmt = subprocess.run(  # short-lived JVM: C1 only starts ~0.5 s faster
            [*tool, "format", "-t", cluster_id, "-c", str(props)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if fmt.returncode != 0:
            raise InfraError(f"kafka-storage format failed:\n{fmt.stdout}{fmt.stderr}")
        log(f"starting Kafka {version} (KRaft) on 127.0.0.1:{port}, controller :{cport}")
        cmd = kafka_server_command(run, version)
        logs, ready = [run / "logs" / "kafka.log", out], functools.partial(kafka_ready, port)
        if proc := launch("Kafka", cmd, logs, ready, KAFKA_TIMEOUT_S, tied):
            info = {"controller_port": cport, "version": version, "cluster_id": cluster_id}
            return proc, {"pid": proc.pid, "port": port, **info}
    raise InfraError("Kafka: no free port after 3 attempts")


def restart_kafka(run: Path, info: dict[str, Any], tied: bool) -> tuple[Proc, dict[str, Any]]:
    """Start the broker of ``run`` again on its existing data and ports (no format), after
    it stopped or was killed; ``info`` is what :func:`start_kafka` returned. For the chaos
    tests (tests/integration/chaos.py)."""
    port = int(info["port"])
    log(f"restarting Kafka {info['version']} on its data, 127.0.0.1:{port}")
    cmd = kafka_server_command(run, str(info["version"]))
    logs = [run / "logs" / "kafka.log", run / "logs" / "kafka.out"]
    proc = launch("Kafka", cmd, logs, functools.partial(kafka_ready, port), KAFKA_TIMEOUT_S, tied)
    if proc is None:
        raise InfraError(f"Kafka: port {port} was taken while the broker was down")
    return proc, {**info, "pid": proc.pid}


def start_redis(
    run: Path, tied: bool, persistent: bool = False, port: int | None = None
) -> tuple[Proc, dict[str, Any]]:
    """Start a throw-away redis-server (no persistence) and wait for PONG.

    ``persistent``: append-only file in ``run/redis`` (fsync every second), so a restart on
    the same ``port`` and directory keeps the data (the chaos tests restart Redis this way).
    """
    exe = ensure_redis_server()
    (run / "redis").mkdir(exist_ok=True)
    fixed = port
    for _ in range(1 if fixed else 3):
        (port,) = (fixed,) if fixed else free_ports(1)
        log(f"starting redis-server on 127.0.0.1:{port}")
        cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no"]
        cmd += ["--save", "", "--dir", str(run / "redis")]  # no snapshots
        cmd += ["--appendonly", "yes" if persistent else "no"]
        logs, ready = [run / "logs" / "redis.log"], functools.partial(redis_ping, port)
        if proc := launch("redis-server", cmd, logs, ready, REDIS_TIMEOUT_S, tied):
            return proc, {"pid": proc.pid, "port": port}
    raise InfraError("redis-server: no free port after 3 attempts")


def start_redis_cluster(run: Path, tied: bool) -> tuple[list[Proc], dict[str, Any]]:
    """Start CLUSTER_NODES throw-away ``redis-server --cluster-enabled yes`` (no replicas, no
    persistence), join them with ``redis-cli --cluster create`` and wait until every node
    says ``cluster_state:ok``. Each node has its own directory ``run/redis-cluster/<port>``
    (its nodes.conf) and log ``logs/redis-cluster-<port>.log``."""
    exe = ensure_redis_server()
    cli = shutil.which("redis-cli") or str(Path(exe).with_name("redis-cli"))
    if not Path(cli).exists():  # Debian's redis-server depends on redis-tools, which has it
        raise InfraError("redis-cli is not on PATH; install it (apt-get install redis-tools)")
    t0, procs, ports = time.monotonic(), list[Proc](), list[int]()
    try:
        for _ in range(3 * CLUSTER_NODES):  # a port picked as free can be taken meanwhile
            if len(ports) == CLUSTER_NODES:
                break
            port, bus = free_ports(2)  # an explicit bus port: port + 10000 may be taken
            home = run / "redis-cluster" / str(port)
            home.mkdir(parents=True)
            cmd = [exe, "--port", str(port), "--cluster-port", str(bus), "--bind", "127.0.0.1"]
            cmd += ["--daemonize", "no", "--save", "", "--appendonly", "no", "--dir", str(home)]
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            logs = [run / "logs" / f"redis-cluster-{port}.log"]
            ready = functools.partial(redis_ping, port)
            if proc := launch("redis cluster node", cmd, logs, ready, REDIS_TIMEOUT_S, tied):
                procs.append(proc)
                ports.append(port)
        if len(ports) < CLUSTER_NODES:
            raise InfraError("redis cluster: no free ports after several attempts")
        nodes = [f"127.0.0.1:{p}" for p in ports]
        create = [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
        log(f"creating a {CLUSTER_NODES}-node Redis Cluster on {' '.join(nodes)}")
        out = run / "logs" / "redis-cluster-create.log"
        with open(out, "wb") as sink:
            sink.write(f"$ {shlex.join(create)}\n".encode())
            sink.flush()
            done = subprocess.run(
                create, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, timeout=60
            )
        if done.returncode != 0:
            raise InfraError(f"redis-cli --cluster create failed:\n{tail(out)}")
        deadline = time.monotonic() + REDIS_TIMEOUT_S
        while not all(redis_cluster_ok(p) for p in ports):  # gossip reaches every node
            if time.monotonic() > deadline:
                raise InfraError(f"redis cluster not ok after {REDIS_TIMEOUT_S:.0f}s")
            time.sleep(0.1)
    except BaseException:
        for proc in procs:
            stop_pid(proc.pid, proc)
        raise
    log(f"Redis Cluster ok in {time.monotonic() - t0:.1f}s")
    return procs, {"pids": [p.pid for p in procs], "ports": ports}


def stop_pid(pid: int, proc: Proc | None = None) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL it after STOP_GRACE_S."""

    def gone() -> bool:
        return proc.poll() is not None if proc else not alive(pid)

    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.1)
        if gone():
            break
        log(f"pid {pid} still running {grace:.0f}s after {sig.name}")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # anything left in the group


def read_state(run: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((run / "state.json").read_text()))
    except (OSError, ValueError):
        return {}


def live_services(run: Path) -> dict[str, int]:
    """The services of ``run`` that are still running, by name -> pid."""
    state, found = read_state(run), {}
    for name in ("kafka", "redis"):
        svc = state.get(name)
        needles = [str(run)] if name == "kafka" else ["redis", str(svc and svc["port"])]
        if svc and ours(svc["pid"], *needles):
            found[name] = svc["pid"]
    cluster = state.get("redis_cluster") or {"pids": [], "ports": []}
    for pid, port in zip(cluster["pids"], cluster["ports"], strict=True):
        if ours(pid, "redis", str(port)):
            found[f"redis-cluster-{port}"] = pid
    return found


def answers(var: str, value: str) -> bool:
    """Does the Kafka bootstrap address or Redis URL ``value`` answer?"""
    try:
        if var.startswith("REDIS"):
            url = urllib.parse.urlsplit(value)
            return redis_ping(url.port or 6379, url.hostname or "127.0.0.1")
        host, _, port = value.split(",")[0].strip().rpartition(":")
        return kafka_ready(int(port), host.strip("[]") or "127.0.0.1")
    except ValueError:
        return False


def external(var: str) -> str | None:
    """The address in ``var`` if the environment provides a service (``None``: start one).

    A value exported by an earlier ``start`` whose run has been stopped since (its
    DISENGAGE_INFRA_DIR is dead and the address does not answer) is ignored.
    """
    value, mine = os.environ.get(var, "").strip(), os.environ.get("DISENGAGE_INFRA_DIR", "")
    stopped = mine.startswith(str(RUNS)) and not live_services(Path(mine))
    if value and stopped and not answers(var, value):
        log(f"ignoring stale {var}={value} (run {Path(mine).name} is stopped)")
        return None
    return value or None


def start(version: str, tied: bool = False) -> tuple[Path, dict[str, Any], list[Proc]]:
    """Start what the environment does not provide; write ``env`` and ``state.json``."""
    run = RUNS / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    (run / "logs").mkdir(parents=True)
    state: dict[str, Any] = {"dir": str(run), "started": time.time()}
    state |= {"kafka": None, "redis": None, "redis_cluster": None}
    procs: list[Proc] = []

    def save() -> None:
        (run / "state.json").write_text(json.dumps(state, indent=2) + "\n")

    save()
    try:
        if bootstrap := external("KAFKA_BOOTSTRAP_SERVERS"):
            log(f"KAFKA_BOOTSTRAP_SERVERS is set: using the broker at {bootstrap}")
        else:
            proc, state["kafka"] = start_kafka(run, version, tied)
            procs.append(proc)
            save()
            bootstrap = f"127.0.0.1:{state['kafka']['port']}"
        if redis_url := external("REDIS_URL"):
            log(f"REDIS_URL is set: using the Redis at {redis_url}")
        else:
            proc, state["redis"] = start_redis(run, tied)
            procs.append(proc)
            save()
            redis_url = f"redis://127.0.0.1:{state['redis']['port']}/0"
        if cluster_url := external("REDIS_CLUSTER_URL"):
            log(f"REDIS_CLUSTER_URL is set: using the Redis Cluster at {cluster_url}")
        else:
            nodes, state["redis_cluster"] = start_redis_cluster(run, tied)
            procs.extend(nodes)
            save()
            cluster_url = f"redis://127.0.0.1:{state['redis_cluster']['ports'][0]}/0"
    except BaseException:
        stop_run(run, keep_logs=True, procs=procs)
        raise
    values = (bootstrap, redis_url, cluster_url, str(run))
    state["env"] = dict(zip(ENV_VARS, values, strict=True))
    save()
    (run / "env").write_text(
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in state["env"].items())
    )
    return run, state, procs


def stop_run(run: Path, keep_logs: bool = False, procs: Sequence[Proc] = ()) -> None:
    """Stop the services of ``run`` (and ``procs``), delete its data and maybe its logs."""
    services = live_services(run)
    for name, pid in services.items():
        log(f"stopping {name} (pid {pid})")
    by_pid = {p.pid: p for p in procs if p.poll() is None}
    for pid in {*services.values(), *by_pid}:
        stop_pid(pid, by_pid.get(pid))
    shutil.rmtree(run / "data", ignore_errors=True)
    shutil.rmtree(run / "redis", ignore_errors=True)
    shutil.rmtree(run / "redis-cluster", ignore_errors=True)
    if keep_logs and any((run / "logs").glob("*")):
        log(f"logs kept in {run / 'logs'}")
    else:
        shutil.rmtree(run, ignore_errors=True)


# ------------------------------------------------------------------------------ commands
def runs() -> list[Path]:
    """All run directories, oldest first."""
    return sorted(RUNS.glob("run-*"), key=lambda p: p.stat().st_mtime) if RUNS.exists() else []


def cmd_start(args: argparse.Namespace) -> int:
    run, _, _ = start(args.kafka_version)
    log(
        f"running (state in {run}); stop with: "
        f'eval "$(python {Path(__file__).relative_to(REPO)} stop)"'
    )
    sys.stdout.write((run / "env").read_text())
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    if args.all or args.run_dir:
        targets = runs() if args.all else [Path(args.run_dir).resolve()]
    elif os.environ.get("DISENGAGE_INFRA_DIR"):
        targets = [Path(os.environ["DISENGAGE_INFRA_DIR"])]
    else:
        targets = [r for r in runs() if live_services(r)][-1:] or runs()[-1:]
    for run in targets:
        stop_run(run, keep_logs=args.keep_logs)
        log(f"stopped {run.name}")
    if not targets:
        log("nothing to stop")
    print("unset " + " ".join(ENV_VARS))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    for run in runs():
        state, parts = read_state(run), []
        for name, ready in (("kafka", kafka_ready), ("redis", redis_ping)):
            svc = state.get(name)
            up = svc and svc["pid"] in live_services(run).values() and ready(svc["port"])
            parts.append(
                f"{name} 127.0.0.1:{svc['port']} pid {svc['pid']} {'UP' if up else 'DOWN'}"
                if svc
                else f"{name} not started here"
            )
        if cluster := state.get("redis_cluster"):
            up = all(redis_cluster_ok(port) for port in cluster["ports"])
            nodes = ",".join(map(str, cluster["ports"]))
            parts.append(f"redis cluster 127.0.0.1:{nodes} {'UP' if up else 'DOWN'}")
        print(f"{run.name}: {', '.join(parts)}")
    if not runs():
        print(f"no runs in {RUNS}")
    return 0


def _tty_foreground() -> bool:
    """Is infra.py in the terminal's foreground group (so Ctrl-C also reached CMD)?"""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def cmd_run(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise InfraError("usage: infra.py run [--kafka-version V] -- CMD [ARGS...]")
    if shutil.which(cmd[0]) is None:
        log(f"error: command not found: {cmd[0]}")
        return 127
    child: Proc | None = None
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if child is None:
            if len(received) == 1:
                raise Interrupted(signum)
        elif child.poll() is None and not (signum == signal.SIGINT and _tty_foreground()):
            child.send_signal(signum)  # a terminal's Ctrl-C has already reached CMD

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in handled:
        signal.signal(sig, forward)
    run: Path | None = None
    procs: list[Proc] = []
    code = 1
    try:
        t0 = time.monotonic()
        run, state, procs = start(args.kafka_version, tied=True)
        log(
            f"ready in {time.monotonic() - t0:.1f}s: "
            + " ".join(f"{k}={v}" for k, v in state["env"].items())
        )
        log(f"running: {shlex.join(cmd)}")
        child = subprocess.Popen(cmd, env={**os.environ, **state["env"]}, preexec_fn=_pdeathsig())
        code = child.wait()
        code = 128 - code if code < 0 else code  # killed by signal N -> 128 + N, like a shell
    except Interrupted as exc:
        code = 128 + int(exc.args[0])
        log("interrupted during startup")
    finally:
        for sig in handled:  # from here on, signals must not cut the cleanup short
            signal.signal(sig, lambda signum, _frame: received.append(signum))
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        if run is not None:
            stop_run(run, keep_logs=args.keep_logs or code != 0, procs=procs)
    log(f"command exited with {code}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="infra.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="environment: KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, REDIS_CLUSTER_URL (use that "
        "service instead of starting one), DISENGAGE_KAFKA_VERSION (default for --kafka-version)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    version_help = f"Kafka 3.x or 4.x version on Maven Central (default {DEFAULT_KAFKA_VERSION})"
    p = sub.add_parser(
        "start", help="start Kafka, Redis and the Redis Cluster in the background, print exports"
    )
    p.add_argument("--kafka-version", default=DEFAULT_KAFKA_VERSION, help=version_help)
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("stop", help="stop a run and delete its data, print `unset`")
    p.add_argument("run_dir", nargs="?", help="default: $DISENGAGE_INFRA_DIR, else newest live run")
    p.add_argument("--all", action="store_true", help="stop every run in .cache/infra")
    p.add_argument("--keep-logs", action="store_true", help="keep the run's logs/")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("status", help="list runs and whether their services answer")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser(
        "run",
        help="start, run CMD with the variables set, always stop; "
        "exit with CMD's code (logs are kept if it fails)",
    )
    p.add_argument("--kafka-version", default=DEFAULT_KAFKA_VERSION, help=version_help)
    p.add_argument("--keep-logs", action="store_true", help="keep logs/ even if CMD passes")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    p.set_defaults(func=cmd_run)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InfraError as exc:
        log(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
