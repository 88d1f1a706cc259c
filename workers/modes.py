"""How an rqbeat worker runs jobs: ``fork``, ``simple`` or ``pool``, each with the
atomic ack of :class:`workers.worker.AckingWorker`.

- ``fork`` (:class:`workers.Worker`, RQ's ``Worker``): a work horse is forked per job.
  A crashing or leaking job cannot take the worker down; the fork costs a few ms.
- ``simple`` (:class:`SimpleWorker`, RQ's ``SimpleWorker``): the job runs in the
  worker's own process. No fork, so cheaper per job, but a job that crashes the
  interpreter takes the worker with it, and no heartbeat is written while a job
  runs: RQ's ``rq:wip`` entry is made to last the job's whole timeout (+60 s), so a
  killed simple worker's run is judged abandoned only after that.
- ``pool`` (:func:`run_pool`, RQ's ``WorkerPool``, RQ 2.x and 3.x): N forking
  workers under one supervisor process that restarts any that die.

RQ's ``WorkerPool`` builds its workers itself, from a class and a fixed set of
arguments, so rqbeat's settings reach them as class attributes of a subclass made
for the pool (:func:`pool_class`); the pool forks, so that class need not be
importable by name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import SimpleWorker as RQSimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerPool

from workers.worker import DEFAULT_HEARTBEAT_GRACE_S, AckingWorker, Worker


class Mode(enum.StrEnum):
    """``rqbeat worker --mode``."""

    FORK = "fork"
    SIMPLE = "simple"
    POOL = "pool"


class SimpleWorker(AckingWorker, RQSimpleWorker):
    """RQ's non-forking worker with rqbeat's atomic ack."""

    def get_heartbeat_ttl(self, job: Job, working_time: float | None = None) -> int:
        # nothing heartbeats while the job runs in this very process: RQ's TTL spans
        # the job's timeout (2.12 takes only the job, 3.x a working time it ignores)
        return int(RQSimpleWorker.get_heartbeat_ttl(self, job))


#: The class each mode's workers are (a pool's are forking workers).
CLASSES: dict[Mode, type[AckingWorker]] = {Mode.FORK: Worker, Mode.SIMPLE: SimpleWorker, Mode.POOL: Worker}


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """What ``rqbeat worker`` gives every worker, whichever the mode."""

    namespace: str
    job_monitoring_interval_s: int = 5
    heartbeat_grace_s: int = DEFAULT_HEARTBEAT_GRACE_S
    max_jobs: int | None = None
    with_scheduler: bool = False
    logging_level: str = "INFO"


def build(
    mode: Mode, queues: list[str], conn: Redis, settings: WorkerSettings, name: str | None = None
) -> AckingWorker:
    """One worker of ``mode`` (fork or simple) on ``queues``."""
    worker = CLASSES[mode](
        queues, connection=conn, name=name, job_monitoring_interval=settings.job_monitoring_interval_s
    )
    worker.heartbeat_grace_s = settings.heartbeat_grace_s
    worker.rqbeat_namespace = settings.namespace
    return worker


def work(worker: AckingWorker, settings: WorkerSettings, *, burst: bool) -> None:
    worker.work(
        burst=burst,
        logging_level=settings.logging_level,
        max_jobs=settings.max_jobs,
        with_scheduler=settings.with_scheduler,
    )


def pool_class(settings: WorkerSettings) -> type[Worker]:
    """A :class:`workers.Worker` subclass carrying ``settings`` for RQ's pool, which
    constructs and starts its workers itself (``rq.worker_pool.run_worker``: RQ's
    default monitoring interval, ``with_scheduler=True``, no ``max_jobs``)."""

    class PoolWorker(Worker):
        heartbeat_grace_s = settings.heartbeat_grace_s
        rqbeat_namespace = settings.namespace

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("job_monitoring_interval", settings.job_monitoring_interval_s)
            super().__init__(*args, **kwargs)

        def work(self, *args: Any, **kwargs: Any) -> bool:
            kwargs.update(with_scheduler=settings.with_scheduler, max_jobs=settings.max_jobs)
            return bool(super().work(*args, **kwargs))

    return PoolWorker


def run_pool(
    queues: list[str], conn: Redis, settings: WorkerSettings, *, processes: int, burst: bool
) -> None:
    """RQ's ``WorkerPool`` of ``processes`` rqbeat workers; returns when it stops
    (SIGINT/SIGTERM, or with ``burst`` when every worker found its queues empty)."""
    pool = WorkerPool(
        queues,
        connection=conn,
        num_workers=processes,
        worker_class=pool_class(settings),
        serializer=JSONSerializer,
    )
    pool.start(burst=burst, logging_level=settings.logging_level)
