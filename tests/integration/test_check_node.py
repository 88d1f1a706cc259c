"""`rqbeat check --node`: the per-replica health check that docker/compose.yaml uses.

The cluster-wide check passes as long as *some* replica leads; a container's health
check must also fail when *its own* replica is gone or stuck.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import Process, wait_for
from scheduler.cli.app import cli
from scheduler.clock import redis_now_ms
from scheduler.ops.status import Node, StatusReport, node_problems

pytestmark = pytest.mark.integration


def rqbeat(redis_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, *args])
    return result.exit_code, result.output


def report(nodes: list[Node], now_ms: int) -> StatusReport:
    return StatusReport("a", 1, {}, None, None, now_ms, nodes)


def test_node_problems_is_pure() -> None:
    fresh = Node("a", "leader", 1, 100_000)
    assert node_problems(report([fresh], 110_000), "a", 45_000) == []
    assert node_problems(report([fresh], 146_000), "a", 45_000) == ["replica a was last seen 46s ago"]
    assert node_problems(report([fresh], 110_000), "b", 45_000) == ["replica b has no heartbeat"]


def test_check_node_per_replica(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    cluster = Cluster(redis_url, tmp_path, processes)
    one = cluster.replica("replica-1")
    cluster.wait_leader(conn)
    two = cluster.replica("replica-2")
    wait_for(lambda: conn.zscore("rqbeat:nodes", "replica-2"), what="the standby's heartbeat")
    leader = cluster.leader(conn)
    for node in ("replica-1", "replica-2"):
        code, output = rqbeat(redis_url, "check", "--node", node)
        assert code == 0, output
        assert f"replica {node} reporting" in output

    # A clean stop removes the replica's heartbeat: its own check fails at once while
    # the cluster-wide check (the other replica leads) still passes.
    standby = two if leader == "replica-1" else one
    standby_name = "replica-2" if leader == "replica-1" else "replica-1"
    standby.stop()
    code, output = rqbeat(redis_url, "check", "--node", standby_name)
    assert code == 1
    assert f"replica {standby_name} has no heartbeat" in output
    code, output = rqbeat(redis_url, "check")
    assert code == 0, output


def test_check_node_stale_heartbeat(redis_url: str, conn: Redis) -> None:
    conn.set("rqbeat:leader", "3:elsewhere", px=10_000)
    conn.set("rqbeat:epoch", 3)  # a lease without its counter reads as data lost
    now_s = redis_now_ms(conn) / 1000
    conn.zadd("rqbeat:nodes", {"stuck": now_s - 120, "fresh": now_s})
    code, output = rqbeat(redis_url, "check", "--node", "stuck")
    assert code == 1
    assert "replica stuck was last seen 12" in output
    code, output = rqbeat(redis_url, "check", "--node", "fresh")
    assert code == 0, output
    code, output = rqbeat(redis_url, "check", "--node", "stuck", "--node-max-age", "10m")
    assert code == 0, output


def test_check_node_max_age_bad_input(redis_url: str, conn: Redis) -> None:
    code, output = rqbeat(redis_url, "check", "--node", "x", "--node-max-age", "soon")
    assert code == 2
    assert output.count("\n") == 1 and "node-max-age" in output
    assert conn.keys("*") == []


def test_check_node_from_environment(redis_url: str, conn: Redis) -> None:
    """The compose file sets RQBEAT_CHECK_NODE; the image's HEALTHCHECK is plain `rqbeat check`."""
    conn.set("rqbeat:leader", "3:elsewhere", px=10_000)
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, "check"], env={"RQBEAT_CHECK_NODE": "absent"})
    assert result.exit_code == 1
    assert "replica absent has no heartbeat" in result.output
