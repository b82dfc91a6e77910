"""Fixtures shared by every tier that talks to the real Kafka broker or Redis server.

``make test`` runs pytest under ``deploy/local/infra.py run``, which exports
``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL`` and ``REDIS_CLUSTER_URL`` (one node of
a 3-node Redis Cluster). Without them the tests that need them fail with a
message saying how to run them; they never skip.
"""

from __future__ import annotations

import os
import urllib.parse

import pytest


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: run the suite with `make test` (or under "
            "`python deploy/local/infra.py run -- pytest ...`), which starts a real "
            "Kafka broker, Redis server and 3-node Redis Cluster"
        )
    return value


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _require("KAFKA_BOOTSTRAP_SERVERS")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _require("REDIS_URL")


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """One node of the Redis Cluster (clients learn the others from it); database 0 only."""
    return _require("REDIS_CLUSTER_URL")


def redis_db_url(url: str, db: int) -> str:
    """The same server, another logical database."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))
