"""scheduler.engine.liveness against a real Redis: a run is alive while its RQ
execution key exists, whatever the worker-clock scores around it say."""

from __future__ import annotations

import pytest
from redis import Redis

from scheduler.engine import liveness

pytestmark = pytest.mark.integration

JOB = "s-1-1"


def started(conn: Redis, status: str = "started", *, alive: bool = True, current_job: str = JOB) -> None:
    """A job as RQ records a running one, its worker-clock scores absurd: an hour
    ago in ``rq:wip``, the epoch in ``rq:executions``."""
    conn.hset(f"rq:job:{JOB}", mapping={"status": status, "worker_name": "w1", "origin": "default"})
    conn.zadd(liveness.EXECUTIONS_KEY.format(JOB), {"e1": 0})
    conn.zadd("rq:wip:default", {f"{JOB}:e1": 1})
    conn.hset("rq:worker:w1", "current_job", current_job)
    if alive:
        conn.hset(liveness.EXECUTION_KEY.format(JOB, "e1"), "worker_name", "w1")
        conn.expire(liveness.EXECUTION_KEY.format(JOB, "e1"), 5)


def test_a_started_job_is_alive_while_its_execution_key_exists(conn: Redis) -> None:
    started(conn)
    assert liveness.read(conn, [JOB]) == {JOB: liveness.Liveness("started", True)}
    conn.delete(liveness.EXECUTION_KEY.format(JOB, "e1"))  # expired: no heartbeat within its ttl
    assert liveness.read(conn, [JOB]) == {JOB: liveness.Liveness("started", False)}


def test_a_started_job_without_executions_is_dead(conn: Redis) -> None:
    conn.hset(f"rq:job:{JOB}", mapping={"status": "started", "worker_name": "w1"})
    assert liveness.read(conn, [JOB])[JOB].alive is False


def test_failed_is_alive_only_while_its_worker_still_runs_it(conn: Redis) -> None:
    started(conn, "failed")  # RQ's clean-up, on another clock, called it abandoned
    assert liveness.read(conn, [JOB]) == {JOB: liveness.Liveness("failed", True)}
    started(conn, "failed", current_job="")  # the worker's own failure, execution left to expire
    assert liveness.read(conn, [JOB]) == {JOB: liveness.Liveness("failed", False)}


def test_finished_and_gone_jobs_read_as_such(conn: Redis) -> None:
    conn.hset(f"rq:job:{JOB}", "status", "finished")
    assert liveness.read(conn, [JOB, "gone"]) == {
        JOB: liveness.Liveness("finished", False),
        "gone": liveness.Liveness(None, False),
    }
