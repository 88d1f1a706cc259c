"""What ``workers.Worker`` costs per job next to a stock RQ worker (issue #14).

The cost of a worker that runs no-op jobs is its Redis round trips: each is a wait
for a reply. These tests count them (every write to a socket of this process, while
an in-process ``--mode simple`` worker drains its queue in burst mode) per job, as the
difference between draining three jobs and draining one, so the worker's start and
stop cancel out:

- a plain RQ job costs an rqbeat worker no more round trips than RQ's own worker;
- an rqbeat run costs at most :data:`RUN_EXTRA_ROUND_TRIPS` more: the START mark
  and one read before the success transaction; the ACK rides in RQ's MULTI/EXEC;
- a ``SCRIPT FLUSH`` between that read and the EXEC still acks the run, once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.connection
from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq import SimpleWorker as RQSimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

import workers.worker
from scheduler import scripts
from scheduler.clock import iso, redis_now_ms
from scheduler.engine.dispatch import Dispatcher
from scheduler.keys import Keys
from scheduler.lua.common import ISO_NOW_LUA
from scheduler.model import Schedule
from scheduler.records import text
from scheduler.store import Client
from workers import modes
from workers.worker import AckingWorker

pytestmark = pytest.mark.integration

K = Keys()
TOKEN = "1:test"
QUEUE = "cost"
TARGET = "os.getpid"
#: The round trips an rqbeat run may add to a plain job's: START, and the one read
#: (the run, Redis TIME, SCRIPT EXISTS) its ack is computed from.
RUN_EXTRA_ROUND_TRIPS = 2


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A counter of the commands (or pipelines) this process writes to Redis."""
    count = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        count[0] += 1
        original(self, command, check_health)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    yield count


def drain(conn: Redis, make: Callable[[], Any], count: list[int]) -> int:
    """Round trips of one burst drain by the worker ``make()`` builds."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker = make()
    before = count[0]
    try:
        worker.work(burst=True, logging_level="WARNING")
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return count[0] - before


def per_job(
    conn: Redis, queue_jobs: Callable[[int], None], make: Callable[[], Any], count: list[int]
) -> float:
    queue_jobs(1)
    one = drain(conn, make, count)
    queue_jobs(3)
    three = drain(conn, make, count)
    return (three - one) / 2


def rq_jobs(conn: Redis) -> Callable[[int], None]:
    def queue(n: int) -> None:
        q = Queue(QUEUE, connection=conn, serializer=JSONSerializer)
        q.enqueue_many([Queue.prepare_data(TARGET) for _ in range(n)])

    return queue


def rqbeat_runs(conn: Redis) -> Callable[[int], None]:
    """``n`` schedules made due now and dispatched, as the leader would."""
    client = Client(conn)
    made = [0]

    def queue(n: int) -> None:
        for _ in range(n):
            made[0] += 1
            sid = f"cost-{made[0]}"
            client.upsert(Schedule(id=sid, target=TARGET, every_ms=3_600_000, queue=QUEUE))
            client.trigger(sid)
        conn.set(K.leader, TOKEN)
        assert len(Dispatcher(conn, K).dispatch(redis_now_ms(conn), TOKEN, n).runs) == n

    return queue


def stock(conn: Redis) -> Callable[[], Any]:
    return lambda: RQSimpleWorker([QUEUE], connection=conn, serializer=JSONSerializer)


def rqbeat(conn: Redis) -> Callable[[], Any]:
    settings = modes.WorkerSettings(namespace=K.namespace)
    return lambda: modes.build(modes.Mode.SIMPLE, [QUEUE], conn, settings)


def test_a_plain_rq_job_costs_no_more_round_trips_than_on_a_stock_rq_worker(
    conn: Redis, round_trips: list[int]
) -> None:
    baseline = per_job(conn, rq_jobs(conn), stock(conn), round_trips)
    ours = per_job(conn, rq_jobs(conn), rqbeat(conn), round_trips)
    assert ours <= baseline, f"rqbeat worker {ours} round trips per plain job, stock RQ {baseline}"


def test_an_rqbeat_run_adds_only_the_start_mark_and_one_read(conn: Redis, round_trips: list[int]) -> None:
    baseline = per_job(conn, rq_jobs(conn), stock(conn), round_trips)
    ours = per_job(conn, rqbeat_runs(conn), rqbeat(conn), round_trips)
    assert ours <= baseline + RUN_EXTRA_ROUND_TRIPS, f"rqbeat run {ours} round trips, stock RQ job {baseline}"
    assert not conn.zcard(K.running)  # every run was acked (by the worker: no leader runs)


@pytest.mark.parametrize("mode", [modes.Mode.SIMPLE, modes.Mode.FORK], ids=lambda m: f"mode={m}")
def test_a_script_flush_before_the_exec_still_acks_the_run_once(
    conn: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch, mode: modes.Mode
) -> None:
    """The ACK joins RQ's transaction as a bare EVALSHA once the read before it saw
    the script cached; flushed in between, its NOSCRIPT must not undo RQ's success
    (RQ's writes applied) nor lose the ack: the worker acks by itself."""
    original = workers.worker.AckingWorker.cleanup_execution

    def flush_after_the_ack_is_queued(
        self: AckingWorker, job: Job, pipeline: Pipeline, **rq_args: Any
    ) -> None:
        original(self, job, pipeline, **rq_args)
        if self._rqbeat_ack is not None:
            other = Redis.from_url(redis_url)
            other.script_flush()
            other.close()

    monkeypatch.setattr(workers.worker.AckingWorker, "cleanup_execution", flush_after_the_ack_is_queued)
    conn.script_load(scripts.Scripts(conn).ack.script)  # cached: the ack goes in bare
    rqbeat_runs(conn)(1)
    job_id = str(text(conn.hget(K.schedule("cost-1"), "job_id")))
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    settings = modes.WorkerSettings(namespace=K.namespace)
    try:
        modes.work(modes.build(mode, [QUEUE], conn, settings), settings, burst=True)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

    job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    assert str(getattr(job.get_status(), "value", job.get_status())) == "finished"
    history = [e.event for e in Client(conn).history("cost-1", count=100)]
    assert history.count("succeeded") == 1
    assert conn.zscore(K.due, "cost-1") is not None
    assert conn.zscore(K.running, "cost-1") is None


@pytest.mark.parametrize(
    "ms",
    [
        0,
        951_782_400_000,  # 2000-02-29 (a leap day of a century divisible by 400)
        4_107_542_399_999,  # 2100-02-28T23:59:59.999 (2100 is no leap year)
        4_107_542_400_000,  # 2100-03-01
        1_798_761_599_123,  # 2026-12-31T23:59:59.123
        1_798_761_600_000,  # 2027-01-01
        4_102_444_800_000,  # 2100-01-01
    ],
)
def test_starts_marked_in_lua_read_as_python_writes_them(conn: Redis, ms: int) -> None:
    """START writes its own Redis time (no TIME round trip first) in the very format
    scheduler.clock.iso writes and parse_iso_ms reads."""
    assert conn.eval(ISO_NOW_LUA + "return iso_ms(tonumber(ARGV[1]))", 0, ms).decode() == iso(ms)


def test_iso_now_is_redis_time(conn: Redis) -> None:
    before = redis_now_ms(conn)
    stamped = conn.eval(ISO_NOW_LUA + "return iso_now()", 0).decode()
    after = redis_now_ms(conn)
    assert iso(before) <= stamped <= iso(after)
