"""Embed a scheduler replica and an RQ worker in one Python process.

Creates the schedule ``example-embedded`` (every second, calling the demo job
``workers.demo.hello`` that ships with rqbeat), runs :class:`scheduler.Service`
in a thread and rqbeat's :class:`workers.Worker` in the main thread until the first
fire is acknowledged, then stops both and exits 0::

    RQBEAT_REDIS_URL=redis://localhost:6379/0 python examples/embed_service.py

The worker's ack is atomic: RQ marking the job finished and the schedule being
re-armed at its next fire are one Redis transaction.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from redis import Redis

from scheduler import Client, Schedule, Service, ServiceConfig
from workers import Worker

SCHEDULE_ID = "example-embedded"


def wait_until_dispatched(client: Client, timeout_s: float) -> str:
    """The job id of the fire the replica enqueued; polls with a deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = client.get(SCHEDULE_ID)
        if record.state == "running" and record.job_id:
            return record.job_id
        time.sleep(0.05)
    raise TimeoutError(f"{SCHEDULE_ID} was not dispatched within {timeout_s}s")


def main() -> int:
    url = os.environ.get("RQBEAT_REDIS_URL", "redis://localhost:6379/0")
    namespace = os.environ.get("RQBEAT_NAMESPACE", "rqbeat")
    conn = Redis.from_url(url)
    client = Client(conn, namespace)
    client.upsert(
        Schedule(id=SCHEDULE_ID, target="workers.demo.hello", every_ms=1_000, kwargs={"name": "embedded"})
    )
    service = Service(ServiceConfig(redis_url=url, namespace=namespace, node="example-embedded"))
    thread = threading.Thread(target=service.run, name="rqbeat-replica", daemon=True)
    thread.start()
    try:
        job_id = wait_until_dispatched(client, timeout_s=15)
        print(f"dispatched {SCHEDULE_ID} job={job_id} leader={service.is_leader}", flush=True)
        # burst: run what is queued (this fire), then return; signal handlers need the main thread
        Worker(["default"], connection=conn).work(burst=True, logging_level="WARNING", with_scheduler=False)
    finally:
        service.stop()
        thread.join(10)
    acked = [e for e in client.history(SCHEDULE_ID) if e.event == "succeeded"]
    if not acked:
        print(f"no acknowledged run of {SCHEDULE_ID}", file=sys.stderr)
        return 1
    # The ack re-armed the schedule for its next fire (a second later), which the
    # replica may have dispatched before it stopped: the first ack is the one to show.
    first = acked[0].fields
    last_result = client.get(SCHEDULE_ID).last_result
    print(f"acked {SCHEDULE_ID} fire={first['fire_at']} job={first['job_id']}; last_result={last_result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
