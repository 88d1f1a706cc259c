"""``rqbeat status`` and ``check`` show which RQ (release, key prefix) the replicas
and the rqbeat workers run, and warn where they disagree (scheduler.ops.rqinfo)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rq
from click.testing import CliRunner, Result
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import wait_for
from scheduler import rqkeys
from scheduler.cli.app import cli
from scheduler.keys import Keys

pytestmark = pytest.mark.integration

K = Keys()
HERE = {"version": rq.__version__, "prefix": rqkeys.PREFIX}


def rqbeat(redis_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--redis-url", redis_url, *args])


def status(redis_url: str) -> dict[str, Any]:
    result = rqbeat(redis_url, "status", "--json")
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def recorded(conn: Redis) -> set[str]:
    """The workers with a record in <ns>:rq-workers, live or not."""
    return {json.loads(v)["name"] for v in conn.hvals(K.rq_workers)}


def test_status_and_check_show_the_rq_in_use(conn: Redis, redis_url: str, cluster: Cluster) -> None:
    cluster.replica("r1")
    cluster.wait_leader(conn)
    worker = cluster.worker("w1", "default")
    wait_for(lambda: "w1" in recorded(conn), timeout=30, what="worker w1 to record its RQ")
    wait_for(lambda: conn.hget(K.node("r1"), rqkeys.VERSION_FIELD), what="replica r1 to record its RQ")

    report = status(redis_url)
    assert report["rq"] == HERE
    assert [(r["node"], r["rq"]) for r in report["replicas"]] == [("r1", HERE)]
    assert report["rq_workers"] == [{"name": "w1", "queues": ["default"], "rq": HERE}]
    assert report["rq_warnings"] == []
    text = rqbeat(redis_url, "status").output
    label = f"RQ {rq.__version__}, key prefix {rqkeys.PREFIX!r}"
    assert f"{label}; the same on 1 of 1 replica(s), 1 of 1 rqbeat worker(s)" in text
    healthy = rqbeat(redis_url, "check", "--health-only")
    assert healthy.exit_code == 0, healthy.output
    assert healthy.stdout.strip().endswith(f"; {label}")
    assert healthy.stderr == ""

    # a worker of another RQ release (as another venv's worker would record itself)
    conn.hset(rqkeys.worker("other"), "state", "idle")
    other = {"name": "other", "queues": ["default"], "rq_version": "9.0.0", "rq_prefix": rqkeys.PREFIX}
    conn.hset(K.rq_workers, rqkeys.worker("other"), json.dumps(other))
    warning = f"replica r1 runs RQ {rq.__version__} but worker other RQ 9.0.0"
    assert status(redis_url)["rq_warnings"] == [warning]
    assert f"warning: {warning}" in rqbeat(redis_url, "status").output
    warned = rqbeat(redis_url, "check", "--health-only")
    assert warned.exit_code == 0, warned.output  # a warning, not a failed health check
    assert warned.stderr == f"warning: {warning}\n"
    as_json = json.loads(rqbeat(redis_url, "check", "--health-only", "--json").stdout)
    assert (as_json["rq"], as_json["rq_warnings"]) == (HERE, [warning])

    # a worker whose RQ key is gone (killed; RQ's key expired) is not listed, and the
    # next worker's birth forgets it; a clean stop removes the worker's own record
    conn.delete(rqkeys.worker("other"))
    assert [w["name"] for w in status(redis_url)["rq_workers"]] == ["w1"]
    cluster.worker("w2", "default")
    wait_for(lambda: recorded(conn) == {"w1", "w2"}, timeout=30, what="w2 recorded, other pruned")
    worker.stop()
    wait_for(lambda: recorded(conn) == {"w2"}, timeout=30, what="w1's record removed at its stop")
