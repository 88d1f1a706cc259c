"""Races the chaos run found, replayed deterministically against a real Redis.

The 10-minute ``make chaos`` run broke 20 healthy schedules (``state broken``, "in the
running set without a readable in-flight run"), even after the last fault: the
watchdog reads the running set, then each schedule's in-flight fields; a worker's ack
landing between the two reads (any run slower than the first watchdog look, 1 s)
left the watchdog with no in-flight run and it marked the schedule broken.

The edit storm lost a fire: ``rqbeat trigger`` on a schedule whose failed fire waited
for its retry (state ``due``, score in the future) replaced that fire with a new one
at the trigger's time and reset the attempts: the failed fire was never retried nor
recorded. TRIGGER now runs the pending fire when it is due already.

The run with Redis wiped (``redis-wipe``) found live ``rqbeat worker`` processes gone
from RQ's worker registry for good: Redis lost their registration with its data, a
worker only registers at its start, so ``rqbeat check`` reported ``no_worker`` for
queues they kept serving (and ``rq info`` showed no worker) until they restarted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from devtools.cluster import Cluster
from devtools.processes import Process, wait_for
from scheduler import rqkeys, scripts
from scheduler.clock import parse_iso_ms, redis_now_ms
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


def test_a_worker_registers_again_after_redis_lost_its_data(
    conn: Redis, redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    Cluster(redis_url, tmp_path, processes).worker("survivor", "lost")
    key = rqkeys.worker("survivor")

    def registered() -> bool:
        return bool(conn.sismember(rqkeys.WORKERS, key) and conn.sismember(rqkeys.workers_of("lost"), key))

    wait_for(registered, timeout=30, what="the worker's registration")
    conn.flushall()  # Redis lost its data, the worker's registration with it
    job = Queue("lost", connection=conn, serializer=JSONSerializer).enqueue("os.getpid")
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=30, what="the job run")
    # Back at its queues after the job, the worker heartbeats: it finds itself gone.
    wait_for(registered, timeout=10, what="the worker to register again")


def test_a_trigger_during_a_retry_back_off_runs_the_failed_fire(conn: Redis) -> None:
    dispatch_one(conn)
    run = runs.read_in_flight(conn, K, SID)
    assert run is not None
    outcome = runs.fail(conn, scripts.Scripts(conn), K, run, now_ms=redis_now_ms(conn), error="boom")
    assert outcome.value == "retry"
    Client(conn).trigger(SID)  # during the back-off
    assert parse_iso_ms(str(text(conn.hget(K.schedule(SID), "fire_at")))) == run.fire_ms
    assert text(conn.hget(K.schedule(SID), "attempt")) == "2"
    result = Dispatcher(conn, K).dispatch(redis_now_ms(conn), TOKEN, 1)
    assert [d.job_id for d in result.runs] == [f"{SID}-{run.fire_ms}-2"]
