"""Redis losing rqbeat's data is a finding, not a healthy empty namespace.

Two real replicas run against a private server; the namespace has seen 53 elections,
so they lead at epoch 54 and remember it. Then the data goes: a restart of a server
without persistence, or a FLUSHALL. ``rqbeat check`` must exit 1 naming the loss and
``rqbeat status`` must show it, until a person re-applies the schedules and clears it
with ``check --repair``. A restart that keeps the data (AOF) is no finding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import Process, RedisServer, wait_for
from scheduler import dataloss
from scheduler.cli.app import cli
from scheduler.engine.counters import CounterWatch
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.records import text
from scheduler.store import Client

pytestmark = pytest.mark.integration

K = Keys()
EPOCHS_BEFORE = 53
LOST = re.compile(
    r"data_lost: epoch went from 54 to [01] \(Redis lost rqbeat's data: re-apply your schedule files\)"
)
SCHEDULE = Schedule(id="nightly", target="tests.jobs.record", cron="0 3 * * *")


def rqbeat(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--redis-url", url, *args])


def lost_reported(url: str) -> Result | None:
    result = rqbeat(url, "check")
    return result if result.exit_code == 1 and LOST.search(result.output) else None


@pytest.fixture
def private(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")  # no AOF, no RDB: a restart loses everything
    server.start()
    yield server
    server.stop()


def run_namespace(url: str, conn: Redis, tmp_path: Path, processes: list[Process]) -> Cluster:
    """Two replicas leading and standing by at epoch 54, one schedule; check is ok."""
    conn.set(K.epoch, EPOCHS_BEFORE)
    Client(conn).upsert(SCHEDULE)
    cluster = Cluster(url, tmp_path, processes)
    cluster.replica("r1")
    cluster.wait_leader(conn)
    cluster.replica("r2")
    wait_for(lambda: conn.zscore(K.nodes, "r2"), 10, what="the standby's first heartbeat")
    result = rqbeat(url, "check")
    assert result.exit_code == 0, result.output
    return cluster


def assert_reported_until_cleared(url: str, conn: Redis, cluster: Cluster) -> None:
    result = wait_for(lambda: lost_reported(url), 20, what="check to report the loss")
    assert result.output.startswith("Error: data_lost: "), result.output
    status = rqbeat(url, "status")
    assert status.exit_code == 0
    assert status.output.startswith("data lost:"), status.output
    assert "re-apply your schedule files" in status.output
    loss = json.loads(rqbeat(url, "status", "--json").output)["data_lost"]
    assert re.fullmatch(r"epoch went from 54 to [01]", loss["what"]) and loss["node"] in ("r1", "r2")
    errors = [p.output() for p in cluster.processes]
    assert any(" ERROR " in out and "data lost" in out for out in errors), errors
    # the counters are back up to what the replicas saw: they keep growing across the
    # loss, and the replica that has not looked yet will not report it again
    assert int(conn.get(K.epoch) or 0) >= EPOCHS_BEFORE + 1
    # what a person does: re-apply the schedule files, then acknowledge the loss
    Client(conn).upsert(SCHEDULE)
    repaired = rqbeat(url, "check", "--repair", "--yes")
    assert "cleared the data_lost marker" in repaired.output, repaired.output
    wait_for(lambda: rqbeat(url, "check").exit_code == 0, 20, what="check to pass again")


def test_a_restart_without_persistence_is_reported(
    private: RedisServer, tmp_path: Path, processes: list[Process]
) -> None:
    conn = private.client()
    cluster = run_namespace(private.url, conn, tmp_path, processes)
    private.restart()
    assert_reported_until_cleared(private.url, private.client(), cluster)


def test_a_flushall_is_reported(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    cluster = run_namespace(redis_url, conn, tmp_path, processes)
    conn.flushall()
    assert_reported_until_cleared(redis_url, conn, cluster)


def test_a_restart_that_keeps_the_data_is_no_finding(tmp_path: Path, processes: list[Process]) -> None:
    server = RedisServer(tmp_path / "aof", appendonly=True)
    server.start()
    try:
        conn = server.client()
        cluster = run_namespace(server.url, conn, tmp_path, processes)
        server.restart()
        conn = server.client()
        conn.delete(K.leader)  # as if the lease expired during a longer outage: an election
        wait_for(lambda: int(conn.get(K.epoch) or 0) > EPOCHS_BEFORE + 1, 20, what="a new election")
        wait_for(lambda: cluster.leader(conn), 10, what="a leader")
        result = rqbeat(server.url, "check")
        assert result.exit_code == 0 and "data_lost" not in result.output, result.output
        assert conn.exists(K.data_lost) == 0
    finally:
        for proc in processes:
            proc.stop()
        server.stop()


def test_a_loss_is_reported_once_not_again_by_each_replica(conn: Redis) -> None:
    a, b = CounterWatch(conn, K, "a"), CounterWatch(conn, K, "b")
    conn.set(K.epoch, 54)
    conn.set(K.revision, 7)
    for watch in (a, b):
        watch.observe(conn.get(K.epoch), conn.get(K.revision))
    conn.flushall()
    a.acquired(int(conn.incr(K.epoch)))  # the first replica re-takes the lease: epoch 1
    assert text(conn.hget(K.data_lost, "what")) == "epoch went from 54 to 1"
    assert (int(conn.get(K.epoch) or 0), int(conn.get(K.revision) or 0)) == (54, 7)  # put back up
    dataloss.clear(conn, K)  # a person re-applied the schedules
    b.observe(conn.get(K.epoch), conn.get(K.revision))  # the other replica's next heartbeat
    assert conn.exists(K.data_lost) == 0
    conn.set(K.revision, 3)  # a later loss is a loss again
    b.observe(conn.get(K.epoch), conn.get(K.revision))
    assert text(conn.hget(K.data_lost, "what")) == "revision went from 7 to 3"
