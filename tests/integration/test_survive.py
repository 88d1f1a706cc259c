"""``rqbeat worker`` outlives a Redis restart: idle, and with a job that ends while
Redis is away. Real redis-server (AOF, so the data survives the restart), a real
replica and a real worker; the outage lasts 3 s, as a short restart or failover does.

Each run's side effect is a line in a file (``tests.jobs.touch``), outside Redis, so a
job can finish while Redis is down; the run must then be acknowledged exactly once
(one ``succeeded`` entry, acked by the worker) and run exactly once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import Process, RedisServer, wait_for
from scheduler import Client, Schedule
from scheduler.keys import Keys
from scheduler.records import text

pytestmark = pytest.mark.integration

SID = "survivor"
OUTAGE_S = 3.0
K = Keys("rqbeat")


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server with AOF that the test restarts (requested before
    ``processes``, so it is stopped after them)."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    server.stop()


def restart(server: RedisServer) -> None:
    """Redis away for :data:`OUTAGE_S` (the scenario's length, not a synchronisation)."""
    server.stop()
    time.sleep(OUTAGE_S)
    server.start()


def start(aof_redis: RedisServer, tmp_path: Path, processes: list[Process], seconds: float) -> Cluster:
    cluster = Cluster(aof_redis.url, tmp_path, processes)
    conn = aof_redis.client()
    kwargs = {"path": str(tmp_path / "runs.txt"), "seconds": seconds}
    Client(conn).upsert(Schedule(id=SID, target="tests.jobs.touch", kwargs=kwargs, every_ms=3_600_000))
    cluster.replica("r1")
    cluster.wait_leader(conn)
    # a grace far above the outage: the run must not be judged abandoned meanwhile
    cluster.worker("w1", grace=30)
    wait_for(lambda: conn.scard("rq:workers"), what="the worker to register")
    conn.close()
    return cluster


def lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def succeeded(conn: Redis) -> list[dict[str, str]]:
    return [e.fields for e in Client(conn).history(SID) if e.event == "succeeded"]


def assert_acked_once(conn: Redis, tmp_path: Path, worker: Process) -> None:
    wait_for(lambda: succeeded(conn), timeout=30, what="the run's ack")
    wait_for(lambda: text(conn.hget(K.schedule(SID), "state")) == "due", what="the schedule re-armed")
    done = [line for line in lines(tmp_path) if line.startswith("done ")]
    assert len(done) == 1, lines(tmp_path)  # ran once
    assert len(succeeded(conn)) == 1, succeeded(conn)  # acked once
    assert conn.hget(K.stats, "acks_total:worker") == b"1"  # in RQ's transaction, not by the watchdog
    assert [e.event for e in Client(conn).history(SID)].count("failed") == 0
    assert worker.alive(), worker.output()


def test_idle_worker_survives_a_redis_restart(
    aof_redis: RedisServer, processes: list[Process], tmp_path: Path
) -> None:
    cluster = start(aof_redis, tmp_path, processes, seconds=0)
    worker = processes[-1]
    restart(aof_redis)
    back = time.monotonic()

    conn = aof_redis.client()
    assert worker.alive(), worker.output()
    Client(conn).trigger(SID)
    wait_for(lambda: any(line.startswith("done ") for line in lines(tmp_path)), what="the run")
    print(f"restart: a run triggered after the restart done {time.monotonic() - back:.3f}s after it")
    assert_acked_once(conn, tmp_path, worker)
    log = worker.output()
    # thinned: a warning when the wait starts (a second only if a stale pooled
    # connection fails once more after it), not one per try
    assert 1 <= log.count("redis unavailable worker=w1") <= 2, log
    tries = [int(n) for n in re.findall(r"redis back worker=w1 after_s=[\d.]+ tries=(\d+)", log)]
    assert tries and max(tries) >= 3, log
    conn.close()
    assert cluster.keys.namespace == "rqbeat"


def test_job_ending_while_redis_is_away_is_acked_once(
    aof_redis: RedisServer, processes: list[Process], tmp_path: Path
) -> None:
    start(aof_redis, tmp_path, processes, seconds=1.0)
    worker = processes[-1]
    conn = aof_redis.client()
    Client(conn).trigger(SID)
    wait_for(lambda: any(line.startswith("started ") for line in lines(tmp_path)), what="the job to start")
    conn.close()
    restart(aof_redis)  # the job ends 1 s into the 3 s outage
    back = time.monotonic()

    conn = aof_redis.client()
    wait_for(lambda: succeeded(conn), timeout=30, what="the run's ack")
    print(f"restart: the run that ended during the outage acked {time.monotonic() - back:.3f}s after it")
    assert_acked_once(conn, tmp_path, worker)
    assert "redis back worker=w1" in worker.output()
    conn.close()
