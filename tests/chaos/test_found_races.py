"""Races the chaos run found, replayed deterministically against a real Redis.

The 10-minute ``make chaos`` run broke 20 healthy schedules (``state broken``, "in the
running set without a readable in-flight run"), even after the last fault: the
watchdog reads the running set, then each schedule's in-flight fields; a worker's ack
landing between the two reads (any run slower than the first watchdog look, 1 s)
left the watchdog with no in-flight run and it marked the schedule broken.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from scheduler import scripts
from scheduler.clock import redis_now_ms
from scheduler.engine import runs
from scheduler.engine.dispatch import Dispatcher
from scheduler.engine.watchdog import Watchdog
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.records import text
from scheduler.store import Client

pytestmark = pytest.mark.integration

K = Keys()
TOKEN = "1:test"
SID = "raced"


def dispatch_one(conn: Redis) -> None:
    client = Client(conn)
    client.upsert(Schedule(id=SID, target="tests.jobs.record", every_ms=3_600_000, queue="race"))
    client.trigger(SID)
    conn.set(K.leader, TOKEN)
    result = Dispatcher(conn, K).dispatch(redis_now_ms(conn), TOKEN, 1)
    assert [d.schedule_id for d in result.runs] == [SID]


def test_an_ack_between_the_watchdogs_reads_leaves_the_schedule_healthy(
    conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatch_one(conn)
    now = redis_now_ms(conn)
    conn.zadd(K.running, {SID: now / 1000}, xx=True)  # the watchdog's look is due
    original = Watchdog._read_runs

    def ack_first(self: Watchdog, ids: list[str]) -> Any:
        # The worker's atomic ack lands after the watchdog read the running set.
        run = runs.read_in_flight(conn, K, SID)
        assert run is not None
        runs.prepare_ack(K, run, redis_now_ms(conn)).add_to(conn, scripts.Scripts(conn))
        return original(self, ids)

    monkeypatch.setattr(Watchdog, "_read_runs", ack_first)
    Watchdog(conn, K).check(now)

    assert text(conn.hget(K.schedule(SID), "state")) == "due"
    assert conn.zscore(K.due, SID) is not None
    assert conn.zscore(K.running, SID) is None


def test_a_running_schedule_without_an_in_flight_run_is_still_marked_broken(conn: Redis) -> None:
    dispatch_one(conn)
    conn.hdel(K.schedule(SID), "job_id")  # damaged by hand: running, but no run in flight
    now = redis_now_ms(conn)
    conn.zadd(K.running, {SID: now / 1000}, xx=True)
    Watchdog(conn, K).check(now)
    assert text(conn.hget(K.schedule(SID), "state")) == "broken"
    assert conn.zscore(K.running, SID) is None
