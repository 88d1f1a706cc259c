"""Fixtures of the integration tests (the private Redis ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import Process
from devtools.rediscluster import RedisCluster
from scheduler.store import Client
from tests.cli import Invoke, invoker
from tests.clusterapp import SERVERS, SLOT, started_cluster


@pytest.fixture
def rqbeat(redis_url: str) -> Invoke:
    """Run ``rqbeat --redis-url <private server> ARGS...`` in-process."""
    return invoker(redis_url)


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path, processes: list[Process]) -> Cluster:
    """Replicas and workers against the test's private Redis (stopped at the end)."""
    return Cluster(redis_url, tmp_path, processes)


@pytest.fixture
def client(conn: Redis) -> Client:
    return Client(conn)


@pytest.fixture(scope="module", params=SERVERS)
def redis_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisCluster]:
    """A real three-primary cluster on loopback ports, of Redis and of Valkey (each
    skipped with its reason where the server cannot run one, or under RQ 2.12)."""
    yield from started_cluster(request.param, tmp_path_factory)


@pytest.fixture
def owner(redis_cluster: RedisCluster) -> Iterator[Redis]:
    """A plain client of the primary serving the namespace's slot, flushed (the test's view)."""
    conn = redis_cluster.client(redis_cluster.owner(SLOT))
    conn.flushall()
    yield conn
    conn.close()
