"""scheduler.engine.liveness against a real Redis: a run is alive while its RQ
execution key exists, whatever the worker-clock scores around it say."""

from __future__ import annotations

import pytest
from redis import Redis

from scheduler import rqkeys
from scheduler.engine import liveness

pytestmark = pytest.mark.integration

JOB = "s-1-1"


def started(conn: Redis, status: str = "started", *, alive: bool = True, current_job: str = JOB) -> None:
    """A job as RQ records a running one, its worker-clock scores absurd: an hour
    ago in ``rq:wip``, the epoch in ``rq:executions``."""
    conn.hset(rqkeys.job(JOB), mapping={"status": status, "worker_name": "w1", "origin": "default"})
    conn.zadd(rqkeys.executions(JOB), {"e1": 0})
    conn.zadd(rqkeys.started("default"), {f"{JOB}:e1": 1})
    # which job the worker says it runs: RQ 2 names it in the worker's hash, RQ 3 in a set
    conn.hset(rqkeys.worker("w1"), "current_job", current_job)
    if rqkeys.WORKER_EXECUTIONS_TEMPLATE is not None:
        conn.delete(rqkeys.WORKER_EXECUTIONS_TEMPLATE.format("w1"))
        if current_job:
            conn.sadd(rqkeys.WORKER_EXECUTIONS_TEMPLATE.format("w1"), f"{current_job}:e1")
    if alive:
        conn.hset(rqkeys.execution(JOB, "e1"), "worker_name", "w1")
        conn.expire(rqkeys.execution(JOB, "e1"), 5)


def test_a_started_job_is_alive_while_its_execution_key_exists(conn: Redis) -> None:
    started(conn)
    assert liveness.read(conn, [JOB]) == {JOB: liveness.Liveness("started", True)}
    conn.delete(rqkeys.execution(JOB, "e1"))  # expired: no heartbeat within its ttl
    assert liveness.read(conn, [JOB]) == {JOB: liveness.Liveness("started", False)}


def test_a_started_job_without_executions_is_dead(conn: Redis) -> None:
    conn.hset(rqkeys.job(JOB), mapping={"status": "started", "worker_name": "w1"})
    assert liveness.read(conn, [JOB])[JOB].alive is False


def test_failed_is_alive_only_while_its_worker_still_runs_it(conn: Redis) -> None:
    started(conn, "failed")  # RQ's clean-up, on another clock, called it abandoned
    assert liveness.read(conn, [JOB]) == {JOB: liveness.Liveness("failed", True)}
    started(conn, "failed", current_job="")  # the worker's own failure, execution left to expire
    assert liveness.read(conn, [JOB]) == {JOB: liveness.Liveness("failed", False)}


def test_finished_and_gone_jobs_read_as_such(conn: Redis) -> None:
    conn.hset(rqkeys.job(JOB), "status", "finished")
    assert liveness.read(conn, [JOB, "gone"]) == {
        JOB: liveness.Liveness("finished", False),
        "gone": liveness.Liveness(None, False),
    }
