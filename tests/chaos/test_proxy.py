"""The chaos proxy against a real redis-server: forwards, partitions, delivers late, resets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.exceptions
from redis import Redis

from devtools.chaos.proxy import TcpProxy
from devtools.processes import RedisServer, wait_for
from scheduler.connection import connect

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(redis_server: RedisServer, redis_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(redis_server.port)
    yield proxy
    proxy.close()


def client(proxy: TcpProxy) -> Redis:
    # rqbeat's own connections: retries off, so a retry cannot hide the cut.
    return connect(proxy.url, socket_timeout_s=0.3)


def test_forwards_commands(proxy: TcpProxy, conn: Redis) -> None:
    c = client(proxy)
    assert c.set("k", "v")
    assert conn.get("k") == b"v"
    assert c.get("k") == b"v"
    c.close()


def test_partition_hangs_reads_and_delivers_held_writes_late(proxy: TcpProxy, conn: Redis) -> None:
    c = client(proxy)
    c.ping()
    proxy.partition()
    with pytest.raises(redis.exceptions.TimeoutError):
        c.rpush("late", "sent-during-partition")
    assert conn.llen("late") == 0, "the write crossed a partition"
    proxy.heal()
    wait_for(lambda: conn.llen("late") == 1, timeout=5, what="the held write to arrive after the heal")
    c.close()
    fresh = client(proxy)
    assert fresh.ping()
    fresh.close()


def test_reset_drops_connections_and_refuses_new_ones(proxy: TcpProxy, conn: Redis) -> None:
    c = client(proxy)
    c.ping()
    proxy.reset()
    with pytest.raises(redis.exceptions.ConnectionError):
        c.ping()
    with pytest.raises(redis.exceptions.ConnectionError):
        client(proxy).ping()
    proxy.heal()
    fresh = client(proxy)
    assert fresh.ping()
    fresh.close()
    c.close()
