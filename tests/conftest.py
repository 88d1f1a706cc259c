"""Fixtures: one private Redis per test session, flushed before every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from devtools.processes import Process, RedisServer


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
