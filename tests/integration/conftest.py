"""Fixtures of the integration tests (the private Redis ones are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import Process
from scheduler.store import Client
from tests.cli import Invoke, invoker


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
