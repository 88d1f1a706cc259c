"""Gaps the chaos run found, each as a deterministic repro marked ``xfail(strict)``:
when the gap is closed the test passes, strict xfail turns that into a failure, and
the mark comes off.

Found by ``make chaos`` (worker kill -9 landing just after a dequeue): an RQ worker
listening on more than one queue pops a job with BLPOP and only later (in the work
horse) marks it started. Killed in between, the job's hash says ``queued`` while it
is in no queue and no registry. rqbeat's watchdog reads ``queued`` as healthy and
looks again forever: the schedule stays ``running`` and every later fire is lost.
(With a single queue RQ parks the job in an intermediate list that its own
maintenance cleans up, minutes later.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from scheduler import Client, Schedule
from tests.harness import Process, wait_for
from tests.integration.cluster import Cluster, runs_per_key

pytestmark = pytest.mark.integration


@pytest.mark.xfail(
    strict=True,
    reason="watchdog treats a 'queued' job that is in no queue as healthy (orphaned by a worker "
    "killed between BLPOP and start): the schedule never fires again",
)
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
