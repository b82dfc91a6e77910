# The disengage image. ENTRYPOINT is the CLI and the default command is the streaming worker;
# the same image runs every other subcommand:
#
#   docker build -t disengage:0.1.0 .
#   docker run --rm -e DISENGAGE_KAFKA_BOOTSTRAP_SERVERS=broker:9092 \
#              -e DISENGAGE_REDIS_URL=redis://redis:6379/0 disengage:0.1.0          # worker
#   docker run --rm ... disengage:0.1.0 simulate --kafka --rate 200
#
# docker-compose.yml (repository root) runs the whole stack with this image.
#
# Reproducible: the runtime dependencies are installed from deploy/docker/requirements.lock,
# exact versions with the sha256 of every file (`pip --require-hashes`, binary wheels only, so
# nothing is compiled), the build backend from deploy/docker/build-requirements.lock.
# Regenerate both with deploy/docker/lock.sh after changing pyproject.toml's dependencies.
# The lock is resolved for linux x86_64 (build with --platform linux/amd64 elsewhere).

ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
ARG NODE_IMAGE=node:20.18.1-bookworm-slim

# ---------------------------------------------------------------------------- builder
# Builds the project's wheel with a hash-pinned setuptools, without network build isolation.
FROM ${PYTHON_IMAGE} AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY deploy/docker/build-requirements.lock /tmp/build-requirements.lock
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps --only-binary=:all: \
        -r /tmp/build-requirements.lock

WORKDIR /src
COPY pyproject.toml README.md ./
COPY detectors ./detectors
COPY stream ./stream
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# ---------------------------------------------------------------------------- tracker
# The browser tracker the collector serves at <prefix>/t.js: npm packages from the lock,
# strict type check, one minified file (5 KB gzipped budget checked).
FROM ${NODE_IMAGE} AS tracker

WORKDIR /tracker
COPY tracker/package.json tracker/package-lock.json tracker/tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY tracker/src ./src
COPY tracker/scripts ./scripts
RUN npm run typecheck && npm run build && npm run size

# ---------------------------------------------------------------------------- console
# The marketing console's page (`disengage console`): Chart.js from the lock, bundled.
FROM ${NODE_IMAGE} AS console

WORKDIR /console
COPY console/package.json console/package-lock.json console/tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY console/src ./src
RUN npm run typecheck && npm run build

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 disengage \
 && useradd --system --uid 10001 --gid disengage --no-log-init \
        --create-home --home-dir /home/disengage --shell /usr/sbin/nologin disengage

# Dependencies first: this layer is rebuilt only when the lock changes, not on code changes.
COPY deploy/docker/requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps --only-binary=:all: \
        -r /tmp/requirements.lock \
 && rm /tmp/requirements.lock

# The project itself, without dependencies (all of them came from the lock); `pip check`
# fails the build if the lock misses one.
COPY --from=builder /wheels/ /tmp/wheels/
RUN /opt/venv/bin/pip install --no-deps --no-index /tmp/wheels/disengage-*.whl \
 && /opt/venv/bin/pip check \
 && rm -rf /tmp/wheels

# the tracker bundle, where `disengage collect` serves it from
COPY --from=tracker /tracker/dist/disengage.min.js /opt/disengage/tracker/disengage.min.js
ENV DISENGAGE_COLLECTOR_TRACKER_FILE=/opt/disengage/tracker/disengage.min.js
# the console's page and bundle, where `disengage console` serves them from
COPY console/public /opt/disengage/console/public
COPY --from=console /console/dist/console.js /opt/disengage/console/dist/console.js
ENV DISENGAGE_CONSOLE_DIR=/opt/disengage/console

USER disengage
WORKDIR /home/disengage

# /metrics, /healthz and /readyz of the worker (DISENGAGE_METRICS_PORT, default 9464); the
# collector's event endpoints (DISENGAGE_COLLECTOR_PORT, 8470); the console (8480).
EXPOSE 9464 8470 8480

# Liveness, not readiness: /healthz answers while the process runs; /readyz is 503 until the
# replica owns partitions (and on a replica left without any), which is no reason to restart.
# The port follows DISENGAGE_METRICS_PORT through the settings module (no curl in slim).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; from stream.settings import Settings; urllib.request.urlopen(f'http://127.0.0.1:{Settings.from_env().metrics_port}/healthz', timeout=4)"]

ENTRYPOINT ["disengage"]
CMD ["worker"]
