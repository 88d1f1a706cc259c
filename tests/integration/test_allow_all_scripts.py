"""``allow_all``'s scripts against a real server: the races a run's end can meet.

Schedules are created through the API; the leader's steps are :class:`Dispatcher`'s
and :class:`Concurrent`'s own, the worker's ack is the one it adds to RQ's transaction.
"""

from __future__ import annotations

import pytest
from redis import Redis

from scheduler import scripts
from scheduler.clock import redis_now_ms
from scheduler.engine import concurrent
from scheduler.engine.decide import Kind
from scheduler.engine.dispatch import Dispatcher
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.ops.repair_io import examine
from scheduler.protocol import SLOT_WAIT_SCORE, ConcurrentReply
from scheduler.store import Client
from tests.integration.test_web import web

pytestmark = pytest.mark.integration

K = Keys()
TOKEN = "1:test"
SID = "hourly-export"
HOUR_MS = 3_600_000


def seed(conn: Redis) -> Schedule:
    schedule = Schedule.from_dict(
        {"id": SID, "target": "tests.jobs.record", "every": "1h", "overlap": "allow_all", "max_concurrent": 1}
    )
    Client(conn).upsert(schedule)
    conn.set(K.leader, TOKEN)
    return schedule


def ack(conn: Redis, schedule: Schedule, run: concurrent.Run, by: str = "worker") -> ConcurrentReply:
    end = concurrent.prepare_ack(K, schedule, SID, run.job_id, run.fire_ms, now_ms=redis_now_ms(conn), by=by)
    return ConcurrentReply(scripts.run(scripts.Scripts(conn).conc_ack, end.keys, end.args))


def test_a_run_ending_between_the_read_and_the_write_leaves_no_fire_waiting(conn: Redis) -> None:
    schedule = seed(conn)
    dispatcher = Dispatcher(conn, K)
    first = Client(conn).get(SID).fire_ms
    assert first is not None
    spawned = dispatcher.dispatch(first, TOKEN, 1).spawned
    assert [d.fire_ms for d in spawned] == [first]
    (run,) = concurrent.read_runs(conn, K, SID)
    # the next fire is decided while the run fills the cap: it is to wait for a slot ...
    prepared = dispatcher.prepare(first + HOUR_MS, TOKEN, 1)
    assert prepared is not None
    (part, _), *_ = prepared.batches
    assert [d.kind for d in part.rescheduled] == [Kind.RESCHEDULE]
    assert part.rescheduled[0].score_ms == SLOT_WAIT_SCORE * 1000
    # ... but the run ends before that is written: its ack finds no waiting fire to wake
    assert ack(conn, schedule, run) is ConcurrentReply.DONE
    now_ms = first + HOUR_MS
    dispatcher.send(prepared, now_ms)
    score = conn.zscore(K.due, SID)
    assert score is not None and round(score * 1000) == now_ms  # due now, not waiting
    assert [d.fire_ms for d in dispatcher.dispatch(now_ms, TOKEN, 1).spawned] == [first + HOUR_MS]


def test_late_and_duplicate_ends_of_a_run_write_nothing(conn: Redis) -> None:
    schedule = seed(conn)
    first = Client(conn).get(SID).fire_ms
    assert first is not None
    Dispatcher(conn, K).dispatch(first, TOKEN, 1)
    (run,) = concurrent.read_runs(conn, K, SID)
    assert ack(conn, schedule, run) is ConcurrentReply.DONE
    history = conn.xlen(K.history(SID))
    assert ack(conn, schedule, run) is ConcurrentReply.STALE  # a duplicate
    assert ack(conn, schedule, run, by="watchdog") is ConcurrentReply.STALE  # the leader's, late
    nudged = scripts.run(
        scripts.Scripts(conn).conc_nudge,
        [K.runs(SID), K.concurrent, K.events],
        [SID, run.fire_ms, run.job_id, 0],
    )
    assert ConcurrentReply(nudged) is ConcurrentReply.STALE
    assert conn.xlen(K.history(SID)) == history
    assert conn.hget(K.schedule(SID), "runs_in_flight") == b"0"
    assert conn.zcard(K.concurrent) == 0


def test_the_dashboard_lists_the_runs_in_flight(conn: Redis, redis_url: str) -> None:
    seed(conn)
    first = Client(conn).get(SID).fire_ms
    assert first is not None
    Dispatcher(conn, K).dispatch(first, TOKEN, 1)
    (run,) = concurrent.read_runs(conn, K, SID)
    client = web(redis_url)
    data = client.get(f"/api/schedule/{SID}").get_json()
    assert [(r["job_id"], r["attempt"], r["state"]) for r in data["runs_in_flight"]] == [
        (run.job_id, 1, "running")
    ]
    html = client.get(f"/schedule/{SID}").get_data(as_text=True)
    assert 'id="runs-in-flight"' in html and run.job_id in html


def test_the_stored_state_scan_finds_nothing_wrong_with_runs_in_flight_or_a_waiting_fire(conn: Redis) -> None:
    seed(conn)
    dispatcher = Dispatcher(conn, K)
    first = Client(conn).get(SID).fire_ms
    assert first is not None
    dispatcher.dispatch(first, TOKEN, 1)
    dispatcher.dispatch(first + HOUR_MS, TOKEN, 1)  # at the cap: the next fire waits
    score = conn.zscore(K.due, SID)
    assert score is not None and score >= SLOT_WAIT_SCORE
    found = examine(conn, K)
    assert [f.line() for f in found.findings] == []
