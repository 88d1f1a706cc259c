"""Dispatch decodes schedules that share their settings (a file's, through apply) once
per shape and builds their job template once per definition (scheduler.shapes). Each
job must still be its own schedule's, and an edit must never be answered from what was
decoded before it."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from redis import Redis

from scheduler.clock import redis_now_ms
from scheduler.engine.dispatch import Dispatcher
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import Client

pytestmark = pytest.mark.integration

K = Keys()
TOKEN = "1:test"
OWNER = "apply:reports.toml"
#: One shape: what every schedule of an applied file shares but its id.
SHAPE: dict[str, Any] = {
    "target": "tests.jobs.record",
    "every": "1h",
    "timezone": "Europe/Berlin",
    "max_attempts": 3,
}
IDS = [f"report-{i}" for i in range(5)]


def _apply(conn: Redis, ids: list[str], **changes: Any) -> int:
    """The schedules ``ids`` of one shape, as apply writes them; returns a time (ms) by
    which all are due."""
    Client(conn).upsert_many([Schedule.from_dict({"id": i, **SHAPE, **changes}, owner=OWNER) for i in ids])
    conn.set(K.leader, TOKEN)  # as in test_dispatch: the dispatcher's lease
    return redis_now_ms(conn) + 3_600_000


def _job(conn: Redis, job_id: str) -> dict[bytes, bytes]:
    return conn.hgetall(f"rq:job:{job_id}")  # type: ignore[return-value]


def test_each_job_of_a_shared_shape_is_its_own_schedules(conn: Redis) -> None:
    now_ms = _apply(conn, IDS)
    result = Dispatcher(conn, K).dispatch(now_ms, TOKEN, 1)
    assert sorted(d.schedule_id for d in result.runs) == IDS
    for d in result.runs:
        assert d.schedule is not None and d.schedule.id == d.schedule_id
        job = _job(conn, d.job_id)
        meta = json.loads(job[b"meta"])["rqbeat"]
        assert (meta["schedule"], meta["key"]) == (d.schedule_id, f"{d.schedule_id}:{d.fire_ms}")
        assert job[b"description"].decode().startswith(f"rqbeat {d.schedule_id} fire=")
        assert job[b"origin"] == b"default"
    assert sorted(conn.lrange("rq:queue:default", 0, -1)) == sorted(d.job_id.encode() for d in result.runs)


def test_an_edit_after_a_decision_is_dispatched_as_edited(conn: Redis) -> None:
    now_ms = _apply(conn, IDS)
    dispatcher = Dispatcher(conn, K)
    prepared = dispatcher.prepare(now_ms, TOKEN, 1)  # decoded and templated: the shape as applied
    assert prepared is not None
    edited = Schedule.from_dict({"id": IDS[2], **SHAPE, "queue": "urgent", "args": [7]}, owner=OWNER)
    Client(conn).upsert(edited)
    assert dispatcher.send(prepared, now_ms).size == 0  # the edit made the prepared write refuse
    result = dispatcher.dispatch(now_ms, TOKEN, 1)
    by_id = {d.schedule_id: d for d in result.runs}
    assert sorted(by_id) == IDS
    job = _job(conn, by_id[IDS[2]].job_id)
    assert job[b"origin"] == b"urgent"
    assert json.loads(zlib.decompress(job[b"data"]))[2] == [7]
    assert conn.lrange("rq:queue:urgent", 0, -1) == [by_id[IDS[2]].job_id.encode()]
    others = [_job(conn, by_id[i].job_id) for i in IDS if i != IDS[2]]
    assert {j[b"origin"] for j in others} == {b"default"}
    assert {json.loads(zlib.decompress(j[b"data"]))[2] == [] for j in others} == {True}
