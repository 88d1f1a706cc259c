"""``rqbeat run`` and ``rqbeat worker`` started before Redis (as a compose file or a
reboot may start them) wait for it, then schedule and run as usual; neither exits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from devtools.cluster import Cluster, runs_per_key
from devtools.processes import Process, RedisServer, wait_for
from scheduler import Client, Schedule

pytestmark = pytest.mark.integration


@pytest.fixture
def late_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server with a port of its own, not started yet. Requested before
    ``processes``, so it is stopped after them."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def test_replica_and_worker_started_before_redis_wait_for_it(
    late_redis: RedisServer, processes: list[Process], tmp_path: Path
) -> None:
    cluster = Cluster(late_redis.url, tmp_path, processes)
    replica = cluster.replica("a")
    worker = cluster.worker("w0", extra=["--log-level", "info"])
    # both have tried and failed at least twice: they did start before Redis
    wait_for(lambda: "failures=2 " in replica.output(), 20, what="the replica's second failed try")
    wait_for(lambda: "unreachable failures=2 " in worker.output(), 20, what="the worker's second try")
    assert worker.alive(), worker.output()

    late_redis.start()
    conn = Redis.from_url(late_redis.url)
    try:
        wait_for(lambda: conn.scard("rq:workers") >= 1, 20, what="the worker to register with RQ")
        cluster.wait_leader(conn, timeout=20)
        Client(conn).upsert(Schedule(id="late", target="tests.jobs.record", every_ms=1000))
        wait_for(lambda: len(runs_per_key(conn)) >= 2, 20, what="two runs")
    finally:
        conn.close()
    assert replica.alive() and worker.alive()
    assert "reachable after failures=" in worker.output()
