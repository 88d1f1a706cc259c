"""RQ's workers as the cluster panel lists them, read without side effects.

RQ's own ``Worker.all()`` removes the registrations of workers whose key expired (a
write), so this reads the registry set and each worker's hash directly, like
:func:`scheduler.ops.status.read_queues` reads the queues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from scheduler import rqkeys
from scheduler.records import text

_FIELDS = ("state", "queues", "current_job", "last_heartbeat", "hostname", "pid")
MAX_WORKERS = 200


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    name: str
    state: str
    queues: str
    current_job: str
    last_heartbeat: str
    host: str
    pid: str


def read_workers(conn: Redis, limit: int = MAX_WORKERS) -> list[WorkerInfo]:
    """Live RQ workers (a registration whose key expired, after ``kill -9``, is skipped)."""
    members: Any = conn.smembers(rqkeys.WORKERS)
    keys = sorted(str(text(m)) for m in members)[:limit]
    pipe = conn.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, _FIELDS)
    out = []
    for key, row in zip(keys, pipe.execute(), strict=True):
        if all(v is None for v in row):
            continue
        state, queues, job, beat, host, pid = (str(text(v) or "") for v in row)
        name = key.removeprefix(rqkeys.worker(""))
        out.append(WorkerInfo(name, state, queues, job, beat, host, pid))
    return out
