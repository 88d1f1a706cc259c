"""Fixtures: one private Redis per test session, flushed before every test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from devtools.processes import Process, RedisServer

#: What a user's app in a test's own directory is called (devtools.apps.write_app).
USER_APP = "myapp"


@pytest.fixture(autouse=True)
def _forget_user_apps() -> Iterator[None]:
    """Leave no user's app importable after a test: a CLI call in this process (``rqbeat
    apply`` checks targets from the current directory) may import ``myapp`` from that
    test's directory, and a later test that expects ``myapp`` not to import here would
    then depend on the order the tests ran in."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    for name in [m for m in sys.modules if m == USER_APP or m.startswith(USER_APP + ".")]:
        del sys.modules[name]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A flushed database on the private server."""
    if redis_server.proc is None:
        redis_server.start()
    conn = redis_server.client()
    conn.flushall()
    conn.close()
    yield redis_server.url


@pytest.fixture
def conn(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[Process]]:
    """Collects subprocesses started by a test and stops them at the end."""
    started: list[Process] = []
    yield started
    for proc in reversed(started):
        proc.stop()
