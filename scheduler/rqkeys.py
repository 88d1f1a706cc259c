"""RQ's own Redis key names, taken from RQ so they follow its key prefix.

RQ 3 renames every key it uses when ``RQ_KEY_PREFIX`` is set in the environment
before ``rq`` is imported (``myapp:job:<id>`` instead of ``rq:job:<id>``; a Redis
Cluster puts all of them in one slot with a hash tag, ``{rq}``). RQ 2.12 has no such
setting: its prefix is always ``rq``. rqbeat writes RQ's job hash and queue list
itself (:data:`scheduler.scripts.DISPATCH`), its watchdog reads RQ's job, execution
and heartbeat keys, and its ACL rules and ``status`` name them: every one of those
names comes from here, so a replica, its workers and ``rqbeat status`` agree with RQ
on where a job lives. A name spelt by hand once made the watchdog judge healthy runs
lost under another prefix, and re-run them.

The prefix is fixed for the life of the process (RQ reads it once, at import), so
these are module constants, not a configurable object. Every process of one
installation -- replicas, workers, ``rqbeat status`` -- needs the same
``RQ_KEY_PREFIX``; replicas and ``rqbeat`` workers record theirs
(:class:`RqIdentity`) so ``rqbeat status`` and ``check`` can tell when they differ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rq
import rq.defaults
import rq.executions
from rq.command import PUBSUB_CHANNEL_TEMPLATE
from rq.executions import ExecutionRegistry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.worker import Worker
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

#: The environment variable RQ 3 reads its key prefix from (RQ 2.12 ignores it).
PREFIX_ENV = "RQ_KEY_PREFIX"
#: RQ's prefix when none is configured, and always under RQ 2.12.
DEFAULT_PREFIX = "rq"
#: The prefix RQ uses in this process.
PREFIX: str = getattr(rq.defaults, "RQ_KEY_PREFIX", DEFAULT_PREFIX)
#: The installed RQ release.
RQ_VERSION: str = rq.__version__

#: ``rq:job:`` + job id: a job's hash.
JOB_PREFIX: str = Job.redis_job_namespace_prefix
#: ``rq:queue:`` + queue name: a queue's list of job ids.
QUEUE_PREFIX: str = Queue.redis_queue_namespace_prefix
#: ``rq:queues``: the set of every queue's key.
QUEUES: str = Queue.redis_queues_keys
#: ``rq:workers``: the set of every live worker's key.
WORKERS: str = REDIS_WORKER_KEYS
#: Every key RQ writes, as an ACL or SCAN pattern.
KEY_PATTERN = f"{PREFIX}:*"
#: Every channel RQ's workers listen on for commands, as an ACL pattern.
PUBSUB_PATTERN: str = PUBSUB_CHANNEL_TEMPLATE % "*"


def job(job_id: str) -> str:
    """HASH: one RQ job."""
    return JOB_PREFIX + job_id


def queue(name: str) -> str:
    """LIST: the job ids waiting on a queue."""
    return QUEUE_PREFIX + name


def intermediate(name: str) -> str:
    """LIST: jobs a worker has popped from a queue but not yet marked started."""
    return IntermediateQueue.get_intermediate_queue_key(queue(name))


def started(name: str) -> str:
    """ZSET ``rq:wip:<queue>``: ``<job id>:<execution id>`` -> heartbeat expiry (epoch s)."""
    return StartedJobRegistry.key_template.format(name)


def failed(name: str) -> str:
    """ZSET: a queue's failed jobs."""
    return FailedJobRegistry.key_template.format(name)


def executions(job_id: str) -> str:
    """ZSET: the execution ids of one job."""
    return ExecutionRegistry.key_template.format(job_id)


def execution(job_id: str, execution_id: str) -> str:
    """HASH ``rq:execution:<job>:<id>``: one execution, expired by Redis (its ttl is
    renewed by every heartbeat). Derived from RQ's executions template: RQ names no
    template for it, and RQ 3's prefix carries over this way."""
    return executions(job_id).replace(":executions:", ":execution:", 1) + f":{execution_id}"


#: RQ 3 indexes a worker's executions in ``rq:worker:<name>:executions`` (a SET of
#: ``<job>:<execution>``); None with RQ 2, whose worker hash names its ``current_job``.
WORKER_EXECUTIONS_TEMPLATE: str | None = getattr(rq.executions, "WORKER_EXECUTIONS_KEY_TEMPLATE", None)


def workers_of(name: str) -> str:
    """SET: the keys of the workers listening on a queue."""
    return WORKERS_BY_QUEUE_KEY % name


def worker(name: str) -> str:
    """HASH: one RQ worker (expires when the worker stops heartbeating)."""
    return Worker.redis_worker_namespace_prefix + name


#: Where a process records its :class:`RqIdentity`: fields of a replica's node hash,
#: keys of a worker's JSON record in ``<ns>:rq-workers``.
VERSION_FIELD = "rq_version"
PREFIX_FIELD = "rq_prefix"


@dataclass(frozen=True, slots=True)
class RqIdentity:
    """Which RQ a process runs and under which key prefix it finds RQ's keys."""

    version: str
    prefix: str

    @classmethod
    def current(cls) -> RqIdentity:
        return cls(RQ_VERSION, PREFIX)

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> RqIdentity | None:
        """Read from :meth:`fields`; None when they are missing (a process of an
        rqbeat release that did not record them)."""
        version, prefix = fields.get(VERSION_FIELD), fields.get(PREFIX_FIELD)
        if not isinstance(version, str) or not isinstance(prefix, str) or not version or not prefix:
            return None
        return cls(version, prefix)

    def fields(self) -> dict[str, str]:
        return {VERSION_FIELD: self.version, PREFIX_FIELD: self.prefix}

    def label(self) -> str:
        return f"RQ {self.version}, key prefix {self.prefix!r}"


def ignored_prefix() -> str | None:
    """``RQ_KEY_PREFIX`` when it is set but this RQ does not read it (RQ 2.12), else None."""
    wanted = os.environ.get(PREFIX_ENV)
    return wanted if wanted and wanted != PREFIX else None
