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
    t1  EXISTS rq:execution:<job>:<id>...   -> alive?
    t2  HGET rq:job:<job> status            -> RQ's status, read *after* the liveness
    t2' ZRANGE rq:executions:<job>          -> an execution started since t0?

A worker that finished between t0 and t1 deleted its execution in the same EXEC that
set ``finished``, so t2 reads ``finished``, never "started and dead". ``failed`` while
an execution is alive is RQ's registry clean-up (run by any worker, or ``rq``'s own
commands, on *their* clocks) calling a running job abandoned: rqbeat waits for the
worker instead of retrying the fire under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq.executions import ExecutionRegistry

from scheduler.records import text

#: ``rq:executions:<job>``: the ids of a job's executions (scores: the worker's clock).
EXECUTIONS_KEY = ExecutionRegistry.key_template
#: ``rq:execution:<job>:<execution id>``: one execution's hash, expired by Redis.
EXECUTION_KEY = "rq:execution:{0}:{1}"
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
        pipe.zrange(EXECUTIONS_KEY.format(job_id), 0, -1)
    seen = {j: {str(text(e)) for e in ids} for j, ids in zip(job_ids, pipe.execute(), strict=True)}
    pipe = conn.pipeline(transaction=False)
    for job_id in job_ids:
        if seen[job_id]:
            pipe.exists(*(EXECUTION_KEY.format(job_id, e) for e in sorted(seen[job_id])))
        pipe.hget(f"rq:job:{job_id}", "status")
        pipe.zrange(EXECUTIONS_KEY.format(job_id), 0, -1)
    replies = iter(pipe.execute())
    return {job_id: _liveness(seen[job_id], replies) for job_id in job_ids}


def _liveness(seen: set[str], replies: Any) -> Liveness:
    live = int(next(replies)) if seen else 0
    status = text(next(replies))
    now_listed = {str(text(e)) for e in next(replies)}
    # An execution that started after the first read was not looked at: call it alive
    # (look again later) rather than judge the run by its predecessors.
    return Liveness(status, live > 0 or not now_listed <= seen)
