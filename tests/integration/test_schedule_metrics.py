"""Per-schedule series against a real Redis: the ACK and RETRY scripts keep the
fields and sets the scrape reads (``metrics = true`` opt-in, the most failing), and
the cluster-wide lateness histogram. Runs are dispatched, started and ended by hand,
through the same scripts a worker and the watchdog call."""

from __future__ import annotations

import pytest
from redis import Redis

from scheduler import scripts
from scheduler.clock import iso, redis_now_ms
from scheduler.engine import runs
from scheduler.engine.dispatch import Dispatcher
from scheduler.engine.metrics import Metrics
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import Client

pytestmark = pytest.mark.integration

K = Keys()
TOKEN = "1:test"


def run_once(conn: Redis, schedule_id: str, *, succeed: bool) -> runs.InFlight:
    """Trigger, dispatch, start (STARTED, as workers.Worker does), then end the run."""
    Client(conn).trigger(schedule_id)
    Dispatcher(conn, K).dispatch(redis_now_ms(conn), TOKEN, 1)
    script_set = scripts.Scripts(conn)
    job_id = conn.hget(K.schedule(schedule_id), "job_id")
    now = iso(redis_now_ms(conn))
    scripts.run(script_set.start, [K.schedule(schedule_id), K.queued], [schedule_id, job_id, now, "w1"])
    run = runs.read_in_flight(conn, K, schedule_id)
    assert run is not None and run.started_ms is not None and run.worker == "w1"
    if succeed:
        runs.prepare_ack(K, run, redis_now_ms(conn)).add_to(conn, script_set)
    else:
        runs.fail(conn, script_set, K, run, now_ms=redis_now_ms(conn), error="boom")
    return run


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_opted_in_and_failing_schedules_have_their_own_series(conn: Redis) -> None:
    client = Client(conn)
    conn.set(K.leader, TOKEN)
    client.upsert(Schedule(id="watched", target="tests.jobs.record", cron="0 0 1 1 *", metrics=True))
    client.upsert(Schedule(id="quiet", target="tests.jobs.record", cron="0 0 1 1 *"))
    client.upsert(Schedule(id="fine", target="tests.jobs.record", cron="0 0 1 1 *"))
    run_once(conn, "watched", succeed=True)
    run_once(conn, "fine", succeed=True)
    run_once(conn, "quiet", succeed=False)
    metrics = Metrics(K, conn)

    assert sample(
        metrics, "rqbeat_schedule_last_success_timestamp_seconds", schedule="watched"
    ) == pytest.approx(redis_now_ms(conn) / 1000, abs=60)
    lateness = sample(metrics, "rqbeat_schedule_lateness_seconds", schedule="watched")
    assert lateness is not None and lateness >= 0
    assert sample(metrics, "rqbeat_schedule_consecutive_failures", schedule="watched") == 0
    # not opted in: named only because it is failing, and only by its failures
    assert sample(metrics, "rqbeat_schedule_consecutive_failures", schedule="quiet") == 1
    assert sample(metrics, "rqbeat_schedule_lateness_seconds", schedule="quiet") is None
    assert sample(metrics, "rqbeat_schedule_consecutive_failures", schedule="fine") is None
    assert sample(metrics, "rqbeat_schedules_failing") == 1
    assert sample(metrics, "rqbeat_lateness_seconds_count") == 2  # both acks; the failure has no ack

    Dispatcher(conn, K).dispatch(redis_now_ms(conn) + 600_000, TOKEN, 1)  # the retry, due after its back-off
    run = runs.read_in_flight(conn, K, "quiet")
    assert run is not None
    runs.fail(conn, scripts.Scripts(conn), K, run, now_ms=redis_now_ms(conn), error="boom")
    assert sample(metrics, "rqbeat_schedule_consecutive_failures", schedule="quiet") == 2

    client.remove("quiet")
    client.upsert(Schedule(id="watched", target="tests.jobs.record", cron="0 0 1 1 *"))  # opted out
    run_once(conn, "watched", succeed=True)
    assert sample(metrics, "rqbeat_schedules_failing") == 0
    assert sample(metrics, "rqbeat_schedule_last_success_timestamp_seconds", schedule="watched") is None
