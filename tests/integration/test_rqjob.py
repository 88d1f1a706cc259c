"""rqbeat writes RQ jobs itself (one Lua script per batch); they must be RQ's jobs.

Each case dispatches a schedule through :class:`scheduler.engine.dispatch.Dispatcher`, dumps
every ``rq:*`` key it wrote (``<RQ_KEY_PREFIX>:*`` under RQ 3 with a prefix set:
tests/integration/test_rq_key_prefix.py runs this file so), then enqueues the same job through RQ's own
``Queue.enqueue_many`` on a clean database and dumps again. The two must be equal but
for the creation and enqueue timestamps. An RQ upgrade that changes what a queued job
looks like fails here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from scheduler import rqkeys
from scheduler.clock import redis_now_ms
from scheduler.engine.dispatch import Dispatcher
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import Client

pytestmark = pytest.mark.integration

K = Keys()
TOKEN = "1:test"
_STAMP = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

CASES: list[dict[str, Any]] = [
    {"id": "plain", "target": "tests.jobs.record", "every": "1h"},
    {
        "id": "tuned",
        "target": "tests.jobs.record",
        "cron": "0 3 * * *",
        "queue": "reports",
        "args": [1, "zwei", {"drei": [3.0, None, True]}],
        "kwargs": {"ключ": "värde", "n": 10**15},
        "timeout": "1500ms",
        "ttl": "2h",
        "result_ttl": "90s",
        "failure_ttl": "7d",
    },
    {"id": "timeout-only", "target": "tests.jobs.record", "every": "5m", "timeout": 30},
]


def _dump(conn: Redis) -> dict[bytes, Any]:
    """Every key of RQ's (``rq:*``): its type, content and whether it expires."""
    out: dict[bytes, Any] = {}
    for key in sorted(conn.scan_iter(match=rqkeys.KEY_PATTERN)):
        kind = conn.type(key)
        if kind == b"hash":
            value: Any = conn.hgetall(key)
        elif kind == b"list":
            value = conn.lrange(key, 0, -1)
        elif kind == b"set":
            value = conn.smembers(key)
        else:
            value = kind
        out[key] = (kind, value, conn.ttl(key) > 0)
    return out


def _without_stamps(dump: dict[bytes, Any]) -> dict[bytes, Any]:
    out = {}
    for key, (kind, content, expires) in dump.items():
        value = dict(content) if kind == b"hash" else content
        if kind == b"hash":
            for name in (b"created_at", b"enqueued_at"):
                assert _STAMP.match(value.pop(name)), (key, name)
        out[key] = (kind, value, expires)
    return out


@pytest.mark.parametrize("raw", CASES, ids=[c["id"] for c in CASES])
def test_dispatched_jobs_are_written_exactly_as_rq_writes_them(conn: Redis, raw: dict[str, Any]) -> None:
    schedule = Schedule.from_dict(raw)
    Client(conn).upsert(schedule)
    conn.set(K.leader, TOKEN)
    result = Dispatcher(conn, K).dispatch(redis_now_ms(conn) + 10 * 86_400_000, TOKEN, 1)
    assert [d.schedule_id for d in result.runs] == [schedule.id]
    ours = _dump(conn)
    assert rqkeys.job(result.runs[0].job_id).encode() in ours
    assert conn.dbsize() == len(ours) + len(list(conn.scan_iter(match=f"{K.namespace}:*")))
    stored = result.runs[0].schedule  # as decoded from Redis: kwargs in stored order
    assert stored is not None
    job = Job.fetch(result.runs[0].job_id, connection=conn, serializer=JSONSerializer)

    for key in ours:
        conn.delete(key)
    Queue(schedule.queue, connection=conn, serializer=JSONSerializer).enqueue_many(
        [
            Queue.prepare_data(
                stored.target,
                args=list(stored.args),
                kwargs=dict(stored.kwargs),
                timeout=int(job.timeout) if job.timeout and schedule.timeout_ms is not None else None,
                result_ttl=job.result_ttl,
                ttl=job.ttl,
                failure_ttl=job.failure_ttl,
                description=job.description,
                job_id=job.id,
                meta=job.meta,
            )
        ]
    )
    rqs = _dump(conn)
    assert _without_stamps(ours) == _without_stamps(rqs)
    assert job.func_name == schedule.target
    assert list(job.args) == list(schedule.args)
    assert job.kwargs == dict(schedule.kwargs)
