"""A run popped by a worker that died before starting it is retried, not waited on.

Found by the chaos run (worker kill -9 landing just after a dequeue): an RQ worker
listening on more than one queue pops a job with BLPOP and only later (in the work
horse) marks it started. Killed in between, the job's hash says ``queued`` while it is
in no queue and no registry. The watchdog looks for a queued job in its queue and the
queue's intermediate list; found in neither on two looks ``ORPHAN_GRACE_MS`` apart, the
run has failed and is retried (at least once: the job never started).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from devtools.cluster import Cluster, runs_per_key
from devtools.processes import Process, wait_for
from scheduler import Client, Schedule, rqkeys
from scheduler.engine import watchdog
from scheduler.keys import Keys

pytestmark = pytest.mark.integration


def test_a_run_popped_by_a_worker_that_died_before_starting_it_is_retried(
    redis_url: str, tmp_path: Path, processes: list[Process], conn: Redis
) -> None:
    cluster = Cluster(redis_url, tmp_path, processes)
    cluster.replica("a")
    cluster.wait_leader(conn)
    Client(conn).upsert(Schedule(id="orphan", target="tests.jobs.record", every_ms=2000, queue="q1"))
    wait_for(lambda: conn.llen("rq:queue:q1") >= 1, timeout=15, what="the first run to be enqueued")

    # Exactly what `rqbeat worker q1 q2` does first (two queues: BLPOP, no intermediate
    # list) -- and then the worker is killed before its horse marks the job started.
    queues = [Queue(name, connection=conn, serializer=JSONSerializer) for name in ("q1", "q2")]
    popped = Queue.dequeue_any(queues, timeout=None, connection=conn, serializer=JSONSerializer)
    assert popped is not None
    job, _ = popped
    fire_key = job.meta["rqbeat"]["key"]
    assert job.get_status() == "queued"

    cluster.worker("w-after", "q1", "q2")  # a healthy worker, ready for the retry
    wait_for(lambda: fire_key in runs_per_key(conn), timeout=20, what=f"fire {fire_key} to run after all")


@pytest.mark.parametrize("looked_for", [1, watchdog.BULK_LOOKUP + 3], ids=["per-run", "bulk"])
def test_a_queued_job_is_found_in_its_queue_or_intermediate_list_whichever_way_it_is_looked_for(
    conn: Redis, looked_for: int
) -> None:
    """The watchdog's two ways of looking (an LPOS per run for a few, one read of the
    lists for many) give the same answer: in the queue, popped (intermediate list),
    in neither, and "may be deeper" once a list outgrows both scanned ends."""
    queue, popped = rqkeys.queue("reports"), rqkeys.intermediate("reports")
    conn.rpush(queue, *[f"q{i}" for i in range(50)])
    conn.rpush(popped, "p0")
    expected = {"q0": True, "q49": True, "q25": True, "p0": True, "gone": False}
    jobs = dict(itertools.islice(itertools.cycle(expected.items()), max(looked_for, 1)))
    if looked_for == 1:
        jobs = {"gone": False}
    dog = watchdog.Watchdog(conn, Keys())
    assert dog._listed(dict.fromkeys(jobs, "reports")) == jobs

    # A backlog longer than both scanned ends: a job not found may be deeper, so counts as listed.
    conn.rpush(queue, *[f"x{i}" for i in range(2 * watchdog.QUEUE_SCAN)])
    assert dog._listed(dict.fromkeys(jobs, "reports")) == dict.fromkeys(jobs, True)
