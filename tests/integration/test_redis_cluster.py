"""rqbeat on a real Redis Cluster: three primaries with a replica each, on loopback.

The installation's keys all carry the hash tag ``{rqbeat}`` (namespace ``{rqbeat}``,
``RQ_KEY_PREFIX={rqbeat}:rq``), so one primary serves all of them. Two replicas and two
``rqbeat worker``s run every-second schedules from ``rqbeat apply`` (misfire ``all``:
no fire may be coalesced away) while the primary that serves the slot is failed over
to its replica; afterwards every fire between the first and the last ran exactly once
(counted by idempotency key) and no key was written outside the slot.

Under RQ 2.12 (no RQ_KEY_PREFIX) the cluster is refused at start with "needs RQ 3".
Skipped only when the local server cannot run a cluster node.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import rq
from click.testing import CliRunner
from redis import Redis

from devtools.apps import write_app
from devtools.cluster import Cluster
from devtools.processes import REPO, Process, RedisServer, wait_for
from devtools.rediscluster import RedisCluster, cluster_support
from scheduler.cli.app import cli
from scheduler.records import text
from scheduler.slotowner import SlotConnection, SlotRouter
from scheduler.slots import ClusterUrl, slot_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RQ3 = int(rq.__version__.split(".", maxsplit=1)[0]) >= 3
NAMESPACE = "{rqbeat}"
PREFIX = "{rqbeat}:rq"
SLOT = slot_of(NAMESPACE + ":due")
RUNS = "{rqbeat}:test:runs"  # the jobs' own record, under the tag: the job's connection serves one slot
SCHEDULES = ("eu-daily-summary", "us-daily-summary", "ap-daily-summary")
FIRES_BEFORE = 4
FIRES_AFTER = 4

REPORTS_PY = f'''"""The user's job module."""

from rq import get_current_job

from workers import current_fire


def daily_summary(region: str) -> str:
    fire = current_fire()
    job = get_current_job()
    assert fire is not None and job is not None
    job.connection.hincrby("{RUNS}", fire.key, 1)
    return f"summary for {{region}}"
'''

SCHEDULES_TOML = """
[defaults]
target = "myapp.tasks.reports.daily_summary"
cron = "* * * * * *"
timezone = "Europe/Berlin"
queue = "reports"
misfire = "all"
max_attempts = 5

[schedules.eu-daily-summary]
kwargs = { region = "eu" }

[schedules.us-daily-summary]
kwargs = { region = "us" }

[schedules.ap-daily-summary]  # each fire its own run, its record under the tag too
kwargs = { region = "ap" }
overlap = "allow_all"
max_concurrent = 2
"""


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    reason = cluster_support(tmp_path_factory.mktemp("probe"))
    if reason is not None:
        pytest.skip(reason)
    servers = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def owner(redis_cluster: RedisCluster) -> Iterator[Redis]:
    """A plain client of the primary serving the slot, flushed (the test's view)."""
    conn = redis_cluster.client(redis_cluster.owner(SLOT))
    conn.flushall()
    yield conn
    conn.close()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """``<tmp>/app/myapp/tasks/reports.py``: a user's app, outside the repository."""
    root = write_app(tmp_path / "app", REPORTS_PY)
    (root / "schedules.toml").write_text(SCHEDULES_TOML)
    return root


def env_of(redis_cluster: RedisCluster, prefix: str = PREFIX) -> dict[str, str]:
    return {"RQ_KEY_PREFIX": prefix, "RQBEAT_REDIS_URL": redis_cluster.url, "RQBEAT_NAMESPACE": NAMESPACE}


def rqbeat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", **env}
    command = [sys.executable, "-m", "scheduler", *args]
    return subprocess.run(
        command, cwd=REPO, env=full, capture_output=True, text=True, timeout=120, check=False
    )


def fires(conn: Redis) -> dict[str, dict[int, int]]:
    """Runs per fire (fire epoch ms) of each schedule, from the jobs' own record."""
    found: dict[str, dict[int, int]] = {sid: {} for sid in SCHEDULES}
    for key, count in conn.hgetall(RUNS).items():
        sid, _, fire_ms = str(text(key)).rpartition(":")
        found[sid][int(fire_ms)] = int(count)
    return found


def ran_since(conn: Redis, since_ms: int, n: int) -> bool:
    return all(sum(1 for ms in runs if ms > since_ms) >= n for runs in fires(conn).values())


def wait_runs(conn: Redis, since_ms: int, n: int, what: str) -> None:
    """Wait (60 s) until each schedule ran ``n`` fires after ``since_ms``; the runs so far
    in the failure message."""
    try:
        wait_for(lambda: ran_since(conn, since_ms, n), timeout=60, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; fires run so far: {fires(conn)}") from None


def keys_elsewhere(redis_cluster: RedisCluster) -> list[str]:
    """Keys on any node other than the slot's: none may be outside the tag."""
    found: list[str] = []
    for node in redis_cluster.nodes:
        conn = redis_cluster.client(node.port)
        try:
            if conn.info("replication")["role"] == "master":
                found += [str(text(k)) for k in conn.scan_iter() if slot_of(str(text(k))) != SLOT]
        finally:
            conn.close()
    return found


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

    for sid, runs in fires(after).items():
        first, last = min(runs), max(runs)
        assert sorted(runs) == list(range(first, last + 1000, 1000)), (
            f"{sid}: a fire was lost: {sorted(runs)}"
        )
        assert set(runs.values()) == {1}, f"{sid}: a fire ran twice: {runs}"
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
