"""Job code that knows which fire it runs for: :func:`workers.current_fire`.

``show_fire`` prints the schedule, fire time, attempt and idempotency key, and
records the key with ``SET NX`` (the way real job code makes its side effects
idempotent: every retry and every duplicate run of one fire has the same key).
``main`` runs one fire of it through a real replica and a real worker::

    RQBEAT_REDIS_URL=redis://localhost:6379/0 python examples/job_current_fire.py

Run as a script, this directory is on ``sys.path``, so the worker can import the
job as ``job_current_fire.show_fire``.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from redis import Redis
from rq import get_current_job
from rq.job import Job
from rq.serializers import JSONSerializer

from scheduler import Client, Schedule, Service, ServiceConfig
from workers import Worker, current_fire

SCHEDULE_ID = "example-fire"


def show_fire() -> str:
    """The job: report the fire and do its side effect once per fire."""
    fire = current_fire()
    job = get_current_job()
    if fire is None or job is None:
        return "not run by rqbeat"
    first = job.connection.set(f"example:done:{fire.key}", job.id, nx=True, ex=3600)
    line = (
        f"schedule={fire.schedule} fire_at={fire.fire_at.isoformat()} attempt={fire.attempt} "
        f"key={fire.key} epoch={fire.epoch} first_run={bool(first)}"
    )
    print(f"job: {line}", flush=True)
    return line


def run_one_fire(url: str, namespace: str, client: Client) -> str:
    """Trigger the schedule, let an embedded replica dispatch it and a worker run it."""
    service = Service(ServiceConfig(redis_url=url, namespace=namespace, node="example-fire"))
    thread = threading.Thread(target=service.run, name="rqbeat-replica", daemon=True)
    thread.start()
    try:
        client.trigger(SCHEDULE_ID)
        deadline = time.monotonic() + 15
        while (job_id := client.get(SCHEDULE_ID).job_id) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{SCHEDULE_ID} was not dispatched within 15s")
            time.sleep(0.05)
        Worker(["default"], connection=client.conn).work(
            burst=True, logging_level="WARNING", with_scheduler=False
        )
        return job_id
    finally:
        service.stop()
        thread.join(10)


def main() -> int:
    url = os.environ.get("RQBEAT_REDIS_URL", "redis://localhost:6379/0")
    namespace = os.environ.get("RQBEAT_NAMESPACE", "rqbeat")
    client = Client(Redis.from_url(url), namespace)
    # Once a year: it fires now only because it is triggered.
    client.upsert(Schedule(id=SCHEDULE_ID, target="job_current_fire.show_fire", cron="0 0 1 1 *"))
    job_id = run_one_fire(url, namespace, client)
    job = Job.fetch(job_id, connection=client.conn, serializer=JSONSerializer)
    print(f"job {job_id}: status={job.get_status().value} result={job.return_value()!r}", flush=True)
    print(f"meta[rqbeat]={job.meta['rqbeat']}", flush=True)
    return 0 if job.get_status() == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
