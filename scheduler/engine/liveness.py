"""Whether the worker of a started run is still alive, by Redis's clock alone.

RQ records a running job three ways. Two are stamped with the *worker's* wall clock:
the score of ``<job>:<execution>`` in ``rq:wip:<queue>`` (``now + ttl`` as the worker
reads now) and the scores in ``rq:executions:<job>``. A worker 300 s behind writes
heartbeats that look 5 minutes expired; one 300 s ahead, heartbeats that outlive it
by 5 minutes. The third is the execution's own hash, ``rq:execution:<job>:<id>``:
RQ gives it ``EXPIRE ttl`` when the execution starts and again at every heartbeat,
and deletes it in the very transaction that marks the job finished or failed. Redis
expires it by *its* clock, so "the key still exists" is "a heartbeat came within
the last ttl", whatever the worker's clock says. That holds for plain ``rq worker``
too: it is RQ's own bookkeeping.

Timeline of one look (no MULTI needed, the order of the reads does it)::

    t0  ZRANGE rq:executions:<job>          -> the job's execution ids
        HGET rq:job:<job> worker_name       -> who took it
    t1  EXISTS rq:execution:<job>:<id>...   -> alive?
        HGET rq:worker:<name> current_job   -> does that worker still say it runs it?
                                               (RQ 3: its rq:worker:<name>:executions)
    t2  HGET rq:job:<job> status            -> RQ's status, read *after* the liveness
    t2' ZRANGE rq:executions:<job>          -> an execution started since t0?

A worker that finished between t0 and t1 deleted its execution in the same EXEC that
set ``finished``, so t2 reads ``finished``, never "started and dead". ``failed`` while
an execution is alive, and whose worker still names it its ``current_job``, is RQ's
registry clean-up (run by any worker, or ``rq``'s own commands, on *their* clocks)
calling a running job abandoned: rqbeat waits for the worker instead of retrying
the fire under it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from scheduler import rqkeys
from scheduler.records import text

#: RQ statuses whose run may still have a live execution.
WATCHED = frozenset({"started", "failed"})


@dataclass(frozen=True, slots=True)
class Liveness:
    """RQ's status of a job (read after the liveness) and whether one of its
    executions is still alive by Redis's clock."""

    status: str | None
    alive: bool


def read(conn: Redis, job_ids: list[str]) -> dict[str, Liveness]:
    """The liveness of each job, in two pipelined round trips. Read-only."""
    pipe = conn.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.zrange(rqkeys.executions(job_id), 0, -1)
        pipe.hget(rqkeys.job(job_id), "worker_name")
    first = iter(pipe.execute())
    seen: dict[str, set[str]] = {}
    workers: dict[str, str | None] = {}
    for job_id in job_ids:
        seen[job_id] = {str(text(e)) for e in next(first)}
        workers[job_id] = text(next(first))
    pipe = conn.pipeline(transaction=False)
    for job_id in job_ids:
        if seen[job_id]:
            pipe.exists(*(rqkeys.execution(job_id, e) for e in sorted(seen[job_id])))
        _ask_holds(pipe, job_id, workers[job_id] or "", seen[job_id])
        pipe.hget(rqkeys.job(job_id), "status")
        pipe.zrange(rqkeys.executions(job_id), 0, -1)
    replies = iter(pipe.execute())
    return {job_id: _liveness(job_id, seen[job_id], replies) for job_id in job_ids}


def _liveness(job_id: str, seen: set[str], replies: Iterator[Any]) -> Liveness:
    live = int(next(replies)) if seen else 0
    holds = _holds(job_id, next(replies))
    status = text(next(replies))
    now_listed = {str(text(e)) for e in next(replies)}
    # An execution that started after the first read was not looked at: call it alive
    # (look again later) rather than judge the run by its predecessors.
    alive = live > 0 or not now_listed <= seen
    if status == "failed":
        # A worker records its own failure and lets go of the job in one EXEC, but may
        # leave the execution to expire (an aborted success transaction): only a worker
        # that still says it runs this job makes a "failed" job alive.
        alive = alive and holds
    return Liveness(status, alive)


def _ask_holds(pipe: Pipeline, job_id: str, worker: str, seen: set[str]) -> None:
    """Queue the read of whether ``worker`` still says it runs ``job_id``."""
    if rqkeys.WORKER_EXECUTIONS_TEMPLATE is None:
        pipe.hget(rqkeys.worker(worker), "current_job")
    else:
        members = [f"{job_id}:{e}" for e in sorted(seen)] or [f"{job_id}:"]
        pipe.smismember(rqkeys.WORKER_EXECUTIONS_TEMPLATE.format(worker), members)


def _holds(job_id: str, reply: Any) -> bool:
    if rqkeys.WORKER_EXECUTIONS_TEMPLATE is None:
        return bool(text(reply) == job_id)
    return any(reply)
