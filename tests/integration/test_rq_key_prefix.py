"""RQ 3's ``RQ_KEY_PREFIX``: every process of the installation renames RQ's keys, and
rqbeat follows (scheduler.rqkeys).

A replica, a stock ``rq worker`` and an ``rqbeat worker`` all run with the prefix
``{rqb}`` (a hash tag, as on a Redis Cluster; braces also test RQ's escaping of its
``str.format`` templates). Each fire must run exactly once: the stock worker's runs are
acknowledged by the leader's watchdog, which reads the job's state under the prefix --
with ``rq:`` spelt by hand it found no job, judged the run lost and ran it again.
Nothing may be written under ``rq:``.

This process imported RQ without the prefix, so it names the prefixed keys itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rq
from click.testing import CliRunner
from redis import Redis

from devtools.cluster import Cluster, runs_per_key
from devtools.processes import REPO, Process, wait_for
from scheduler.cli.app import cli
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import Client

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        int(rq.__version__.split(".")[0]) < 3, reason="RQ 2.12 has no RQ_KEY_PREFIX (its prefix is always rq)"
    ),
]

K = Keys()
PREFIX = "{rqb}"
ENV = {"RQ_KEY_PREFIX": PREFIX}
HOUR_MS = 3_600_000
FIRES = 3


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path, processes: list[Process]) -> Cluster:
    return Cluster(redis_url, tmp_path, processes, env=ENV)


def succeeded(conn: Redis, sid: str) -> int:
    return sum(1 for e in Client(conn).history(sid, count=1000) if e.event == "succeeded")


def run_fires(conn: Redis, sid: str) -> None:
    """Trigger ``FIRES`` fires of ``sid`` one after the other, each to success."""
    client = Client(conn)
    for n in range(1, FIRES + 1):
        client.trigger(sid)
        wait_for(lambda: succeeded(conn, sid) >= n, timeout=30, what=f"{sid}: fire {n} succeeded")  # noqa: B023


def test_each_fire_runs_once_under_a_key_prefix(conn: Redis, cluster: Cluster) -> None:
    client = Client(conn)
    for sid, queue in (("stock", "stock"), ("beat", "beat")):
        client.upsert(Schedule(id=sid, target="tests.jobs.record", every_ms=HOUR_MS, queue=queue))
    cluster.replica("r1")
    cluster.wait_leader(conn)
    cluster.plain_rq_worker("p1", "stock")
    cluster.worker("w1", "beat")

    run_fires(conn, "stock")
    run_fires(conn, "beat")

    runs = runs_per_key(conn)
    for sid in ("stock", "beat"):
        mine = {key: n for key, n in runs.items() if key.startswith(f"{sid}:")}
        assert sorted(mine.values()) == [1] * FIRES, (sid, mine)
        events = {e.event for e in client.history(sid, count=1000)}
        assert events == {"triggered", "dispatched", "succeeded"}, (sid, events)
    assert list(conn.scan_iter(match="rq:*")) == []
    assert conn.sismember(f"{PREFIX}:queues", f"{PREFIX}:queue:stock")
    assert conn.scard(f"{PREFIX}:workers") == 2


def test_rqbeat_writes_rqs_job_format_under_the_prefix() -> None:
    """tests/integration/test_rqjob.py (rqbeat's job hash == RQ's, key by key) with
    the prefix set, in a pytest of its own: RQ reads the prefix at import."""
    env = {**os.environ, **ENV, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/integration/test_rqjob.py"]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-1000:]


def status_json(cluster: Cluster) -> dict[str, object]:
    args = [sys.executable, "-m", "scheduler", "--redis-url", cluster.redis_url, "status", "--json"]
    env = {**os.environ, **ENV, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True)
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_status_warns_when_replicas_and_workers_use_other_prefixes(
    conn: Redis, cluster: Cluster, redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    cluster.replica("r1")
    cluster.wait_leader(conn)
    Cluster(redis_url, tmp_path, processes).worker("bare", "default")  # RQ_KEY_PREFIX forgotten
    wait_for(lambda: conn.hlen(K.rq_workers) == 1, timeout=30, what="worker bare to record its RQ")
    wait_for(lambda: conn.hget(K.node("r1"), "rq_prefix"), what="replica r1 to record its RQ")

    apart = "replica r1 uses RQ key prefix '{rqb}' but worker bare 'rq': they never see its jobs"
    report = status_json(cluster)  # run with the replica's prefix
    assert report["rq"] == {"version": rq.__version__, "prefix": PREFIX}
    assert report["rq_warnings"] == [apart]
    # this process runs without the prefix, like the worker
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, "status", "--json"])
    assert json.loads(result.stdout)["rq_warnings"] == [
        "replica r1 uses RQ key prefix '{rqb}', this rqbeat 'rq': run it with RQ_KEY_PREFIX={rqb}",
        apart,
    ]
