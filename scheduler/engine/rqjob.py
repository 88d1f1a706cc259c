"""RQ jobs written the way RQ writes them, without RQ's per-job objects.

``Queue.enqueue_many`` builds a ``Job`` object per job and pipelines three commands for
it; at a burst of 10k fires that was two thirds of the leader's time. Dispatch writes
the same job hash (the fields ``Job.to_dict`` produces for a queued job) and the same
``RPUSH`` from one Lua script per batch (:data:`scheduler.scripts.DISPATCH`), so a job
costs a handful of string operations here.

The format is RQ's, so it is pinned: ``tests/integration/test_rqjob.py`` enqueues the
same job through RQ and through rqbeat and compares every key both wrote. An RQ
upgrade that changes the format fails that test, not production.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq.queue import Queue

from scheduler.model import Schedule

#: RQ's timeout for a job that sets none (``Queue.DEFAULT_TIMEOUT``).
DEFAULT_TIMEOUT_S = Queue.DEFAULT_TIMEOUT
# Fields RQ writes empty for a job that has not run and has no callbacks or group.
_EMPTY = (
    "success_callback_name",
    "failure_callback_name",
    "stopped_callback_name",
    "started_at",
    "ended_at",
    "last_heartbeat",
    "worker_name",
    "group_id",
)


def rq_timestamp(ms: int) -> str:
    """RQ's timestamp format (``rq.utils.utcformat``): UTC, microseconds, ``Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seconds(ms: int | None) -> int | None:
    """RQ takes whole seconds; round up so a 500ms timeout is not 0 (= no timeout)."""
    return None if ms is None else math.ceil(ms / 1000)


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """The part of a schedule's job hash that is the same for every fire."""

    queue: str
    fields: tuple[Any, ...]  # flat field/value pairs
    ttl_s: int  # 0: the job key does not expire

    @classmethod
    def of(cls, schedule: Schedule) -> JobTemplate:
        data = json.dumps([schedule.target, None, list(schedule.args), dict(schedule.kwargs)])
        fields: list[Any] = ["data", zlib.compress(data.encode()), "origin", schedule.queue]
        for name in _EMPTY:
            fields += [name, ""]
        timeout = seconds(schedule.timeout_ms)
        fields += ["timeout", DEFAULT_TIMEOUT_S if timeout is None else timeout, "status", "queued"]
        for name, ms in (("result_ttl", schedule.result_ttl_ms), ("failure_ttl", schedule.failure_ttl_ms)):
            if ms is not None:
                fields += [name, seconds(ms)]
        ttl = seconds(schedule.ttl_ms) or 0
        if ttl:
            fields += ["ttl", ttl]
        return cls(schedule.queue, tuple(fields), ttl)

    def fields_for(self, description: str, meta: Mapping[str, Any]) -> list[Any]:
        """The job hash for one fire but its two timestamps (created_at, enqueued_at),
        which :data:`scheduler.scripts.DISPATCH` sets when it writes the batch."""
        return [*self.fields, "description", description, "meta", json.dumps(meta)]
