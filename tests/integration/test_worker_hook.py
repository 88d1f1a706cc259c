"""The RQ internals ``workers.Worker`` relies on, and the atomic ack they give.

``workers.Worker`` adds rqbeat's ACK script to the MULTI/EXEC in which RQ marks a job
finished, through the ``cleanup_execution(job, pipeline)`` hook that
``rq.Worker.handle_job_success`` calls inside that transaction. If a new RQ release
moves the call out of the transaction (or renames it), the first test here fails
loudly, before any ack silently stops being atomic. CI runs this file under the
lowest and the highest RQ that pyproject allows (2.12 and 3.x).

The functional tests run a real worker of each mode ``rqbeat worker --mode`` offers
(RQ's forking Worker, its non-forking SimpleWorker, its WorkerPool of forking workers)
in burst mode, from this process, on a job dispatched by
:class:`scheduler.engine.dispatch.Dispatcher` under a lease token set by hand.
"""

from __future__ import annotations

import inspect
import re
import signal
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import rq.worker
from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

import workers.worker
from devtools.cluster import runs_per_key
from scheduler import cron, rqkeys
from scheduler.clock import iso, redis_now_ms
from scheduler.engine.decide import Decision
from scheduler.engine.dispatch import Dispatcher
from scheduler.engine.watchdog import Watchdog
from scheduler.jobmeta import META_KEY
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.records import text
from scheduler.store import Client
from workers import Worker, modes, rqcompat
from workers.worker import AckingWorker

pytestmark = pytest.mark.integration

K = Keys()
TOKEN = "1:test"
QUEUE = "hook"
SID = "hooked"


# -- the hook itself, read from RQ's source -------------------------------------------


def test_rq_calls_cleanup_execution_inside_the_success_transaction() -> None:
    """``handle_job_success`` must call ``self.cleanup_execution(job, pipeline=pipeline)``
    (RQ 3: ``..., execution=execution)``) after ``pipeline.multi()`` and before the one
    ``pipeline.execute()``: that is the only place workers.Worker can join RQ's "job
    finished" transaction."""
    source = textwrap.dedent(inspect.getsource(rq.worker.Worker.handle_job_success))
    execution = ", execution=execution" if rqcompat.PASSES_EXECUTION else ""
    call = f"self.cleanup_execution(job, pipeline=pipeline{execution})"
    assert source.count(call) == 1, f"RQ changed the hook workers.Worker relies on:\n{source}"
    assert source.count("pipeline.execute()") == 1, source
    assert source.count("pipeline.multi()") >= 1, source
    multi = source.index("pipeline.multi()")
    hook = source.index(call)
    execute = source.index("pipeline.execute()")
    assert multi < hook < execute, f"cleanup_execution is no longer inside RQ's transaction:\n{source}"
    # the transaction is re-run on WatchError: the ack must then be added again
    assert "except redis.exceptions.WatchError" in source, source


def test_rq_signatures_match_the_overrides() -> None:
    """RQ calls these with keyword arguments: the overrides must take RQ's names in
    RQ's order, whatever RQ has beyond them (RQ 3's ``execution``) through
    ``**rq_args``, which they pass on, and nothing RQ would not pass without a default
    (2.12 calls ``get_heartbeat_ttl(job)``)."""
    for name in ("handle_job_success", "handle_job_failure", "cleanup_execution", "get_heartbeat_ttl"):
        ours = inspect.signature(getattr(Worker, name)).parameters
        theirs = list(inspect.signature(getattr(rq.worker.Worker, name)).parameters)
        named = [p for p, v in ours.items() if v.kind != inspect.Parameter.VAR_KEYWORD]
        common = min(len(named), len(theirs))
        assert theirs[:common] == named[:common], f"{name}: rq has {theirs}, workers.Worker has {list(ours)}"
        if len(theirs) > common:
            assert "rq_args" in ours, f"{name}: rq has {theirs}, workers.Worker drops {theirs[common:]}"
        assert all(ours[p].default is not inspect.Parameter.empty for p in named[common:]), name
    # the seam's detection agrees with the two releases it was written for
    rq3 = int(rq.__version__.split(".")[0]) >= 3
    assert (rq3, rq3) == (rqcompat.PASSES_EXECUTION, rqcompat.HEARTBEAT_GETS_WORKING_TIME)
    module = inspect.getmodule(rq.worker.Worker.handle_job_success)
    calls = re.sub(r"\s+", "", inspect.getsource(module))  # type: ignore[arg-type]
    assert "self.handle_job_success(job=job,queue=queue,started_job_registry=" in calls


def test_the_heartbeat_ttl_counts_down_the_job_timeout(conn: Redis) -> None:
    """RQ 2.12 keeps the job's working time on the worker, RQ 3 passes it in: either
    way the heartbeat never outlives the job's timeout by more than the grace."""
    worker = Worker([QUEUE], connection=conn, job_monitoring_interval=30)
    job = Job.create("tests.jobs.record", connection=conn, timeout=100, serializer=JSONSerializer)
    assert worker.get_heartbeat_ttl(job) == 30 + worker.heartbeat_grace_s
    if rqcompat.HEARTBEAT_GETS_WORKING_TIME:
        assert worker.get_heartbeat_ttl(job, working_time=90.0) == 10 + worker.heartbeat_grace_s
    else:
        worker.current_job_working_time = 90.0
        assert worker.get_heartbeat_ttl(job) == 10 + worker.heartbeat_grace_s


# -- functional: a real worker, a real dispatch ---------------------------------------


def dispatch_one(conn: Redis, **changes: Any) -> Decision:
    """Create an hourly schedule, make it due now and dispatch it as leader ``TOKEN``."""
    values: dict[str, Any] = {
        "id": SID,
        "target": "tests.jobs.record",
        "every_ms": 3_600_000,
        "queue": QUEUE,
        **changes,
    }
    client = Client(conn)
    client.upsert(Schedule(**values))
    client.trigger(SID)
    conn.set(K.leader, TOKEN)
    result = Dispatcher(conn, K).dispatch(redis_now_ms(conn), TOKEN, 1)
    assert [d.schedule_id for d in result.runs] == [SID]
    return result.runs[0]


@pytest.fixture(params=list(modes.Mode), ids=lambda m: f"mode={m}")
def mode(request: pytest.FixtureRequest) -> modes.Mode:
    """Each test that takes it runs once per ``rqbeat worker --mode``."""
    chosen: modes.Mode = request.param
    return chosen


def work(conn: Redis, mode: modes.Mode = modes.Mode.FORK) -> None:
    """Run a worker of ``mode`` in burst mode (a pool of one process); restore the
    signal handlers RQ installs in this (pytest's) process."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    settings = modes.WorkerSettings(namespace=K.namespace)
    try:
        if mode is modes.Mode.POOL:
            modes.run_pool([QUEUE], conn, settings, processes=1, burst=True)
        else:
            modes.work(modes.build(mode, [QUEUE], conn, settings), settings, burst=True)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def rq_status(conn: Redis, job_id: str) -> str:
    status = Job.fetch(job_id, connection=conn, serializer=JSONSerializer).get_status(refresh=True)
    return str(getattr(status, "value", status))


def schedule_hash(conn: Redis) -> dict[str, str]:
    return {str(text(k)): str(text(v)) for k, v in conn.hgetall(K.schedule(SID)).items()}


def events(conn: Redis) -> list[str]:
    return [entry.event for entry in Client(conn).history(SID, count=100)]


def wrap_success_transaction(
    monkeypatch: pytest.MonkeyPatch, after: Callable[[Job, Pipeline, int], None]
) -> None:
    """Run ``after(job, pipeline, call_number)`` right after workers.Worker has added its
    ack to RQ's success transaction (RQ's failure transaction, which also calls
    ``cleanup_execution``, is left alone). The patch is inherited by the forked horse
    and by every mode's class."""
    original = workers.worker.AckingWorker.cleanup_execution
    calls = [0]

    def cleanup_execution(self: AckingWorker, job: Job, pipeline: Pipeline, **rq_args: Any) -> None:
        original(self, job, pipeline, **rq_args)
        if self._rqbeat_ack is not None:
            calls[0] += 1
            after(job, pipeline, calls[0])

    monkeypatch.setattr(workers.worker.AckingWorker, "cleanup_execution", cleanup_execution)


def test_success_rearms_in_rqs_own_transaction(conn: Redis, mode: modes.Mode) -> None:
    d = dispatch_one(conn)
    assert conn.zscore(K.running, SID) is not None
    work(conn, mode)

    assert rq_status(conn, d.job_id) == "finished"
    assert runs_per_key(conn) == {f"{SID}:{d.fire_ms}": 1}
    assert d.schedule is not None
    next_fire = cron.next_fire_ms(d.schedule.trigger, d.fire_ms)
    assert conn.zscore(K.due, SID) == next_fire / 1000
    assert conn.zscore(K.running, SID) is None
    state = schedule_hash(conn)
    assert (state["state"], state["fire_at"], state.get("attempt")) == ("due", iso(next_fire), None)
    assert state["last_result"] == "succeeded"
    assert "job_id" not in state
    last = Client(conn).history(SID)[-1]
    assert (last.event, last.fields["job_id"], last.fields["fire_at"]) == (
        "succeeded",
        d.job_id,
        iso(d.fire_ms),
    )
    # RQ's own cleanup ran too (RQ 3 needs the execution passed on for it): no execution
    # is left in the queue's wip registry or the job's execution registry
    assert conn.zcard(rqkeys.started(QUEUE)) == 0
    assert not conn.exists(rqkeys.executions(d.job_id))


def test_a_failed_exec_writes_neither_rqs_success_nor_the_rearm(
    conn: Redis, monkeypatch: pytest.MonkeyPatch, mode: modes.Mode
) -> None:
    """Force RQ's success transaction to abort (a command refused at queue time makes
    EXEC fail with EXECABORT, discarding every queued command): RQ must not record the
    job as finished and the schedule must not be re-armed; the run stays in flight
    for the watchdog, which then retries the same fire."""

    def abort(job: Job, pipeline: Pipeline, call: int) -> None:
        # wrong arity: refused when queued, so the EXEC aborts the whole transaction
        pipeline.execute_command("SET", "only-a-key")  # type: ignore[no-untyped-call]

    wrap_success_transaction(monkeypatch, abort)
    d = dispatch_one(conn)
    work(conn, mode)

    # the job ran (at least once) but neither half of the success transaction landed
    assert runs_per_key(conn) == {f"{SID}:{d.fire_ms}": 1}
    assert rq_status(conn, d.job_id) != "finished"
    assert d.job_id not in FinishedJobRegistry(QUEUE, connection=conn).get_job_ids()
    assert conn.zscore(K.due, SID) is None
    assert conn.zscore(K.running, SID) is not None
    state = schedule_hash(conn)
    assert (state["state"], state["job_id"], state["fire_at"]) == ("running", d.job_id, iso(d.fire_ms))
    assert "last_result" not in state
    assert "succeeded" not in events(conn)

    # RQ ran its failure path instead; the worker nudged the watchdog to look now
    assert rq_status(conn, d.job_id) == "failed"
    now = redis_now_ms(conn)
    score = conn.zscore(K.running, SID)
    assert score is not None and score * 1000 <= now
    assert Watchdog(conn, K).check(now) == 1
    state = schedule_hash(conn)
    assert (state["state"], state["attempt"], state["fire_at"]) == ("due", "2", iso(d.fire_ms))
    assert events(conn)[-1] == "failed"


def test_a_watch_retry_in_rq_still_acks_once(
    conn: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch, mode: modes.Mode
) -> None:
    """RQ re-runs its success transaction on WatchError; the ack must be added to the
    re-run (and is a compare-and-set, so it lands once)."""

    def touch_watched_key(job: Job, pipeline: Pipeline, call: int) -> None:
        other = Redis.from_url(redis_url)
        other.incr("test:success-transactions")
        if call == 1:  # another client writes the key RQ WATCHes: this EXEC fails
            other.sadd(job.dependents_key, "nobody")
            other.srem(job.dependents_key, "nobody")
        other.close()

    wrap_success_transaction(monkeypatch, touch_watched_key)
    d = dispatch_one(conn)
    work(conn, mode)

    assert conn.get("test:success-transactions") == b"2"  # the EXEC did fail once
    assert rq_status(conn, d.job_id) == "finished"
    assert events(conn).count("succeeded") == 1
    assert conn.zscore(K.due, SID) is not None
    assert conn.zscore(K.running, SID) is None


def test_a_stale_job_is_not_acked(conn: Redis, mode: modes.Mode) -> None:
    """A job whose run is no longer the schedule's in-flight run (removed, or
    re-dispatched) finishes in RQ without touching the schedule."""
    d = dispatch_one(conn)
    Client(conn).remove(SID)
    work(conn, mode)
    assert rq_status(conn, d.job_id) == "finished"
    assert not conn.exists(K.schedule(SID), K.history(SID))
    assert conn.zscore(K.due, SID) is None
    assert conn.zscore(K.running, SID) is None


def test_a_job_with_a_damaged_rqbeat_meta_finishes_and_is_left_to_the_watchdog(
    conn: Redis, mode: modes.Mode
) -> None:
    """A ``meta["rqbeat"]`` that lacks fields (written by hand, or by another tool)
    must not break RQ's success path: the job finishes, nothing is acked."""
    queue = Queue(QUEUE, connection=conn, serializer=JSONSerializer)
    job = queue.enqueue("time.sleep", 0, meta={META_KEY: {"fire_at": "soon"}})
    work(conn, mode)
    assert rq_status(conn, job.id) == "finished"
    assert not conn.exists(K.schedule(SID))
