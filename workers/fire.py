"""Inside a job: which schedule and which fire is this run?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq import get_current_job


@dataclass(frozen=True, slots=True)
class Fire:
    """The fire a job runs for.

    ``key`` (``<schedule>:<fire epoch ms>``) is the same for every attempt and every
    duplicate run of one fire: use it to make side effects idempotent (a unique
    constraint, ``SET key NX``, an upsert).
    """

    schedule: str
    fire_at: datetime
    fire_ms: int
    attempt: int
    key: str
    epoch: int

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Fire:
        fire_ms = int(meta["fire_ms"])
        return cls(
            schedule=str(meta["schedule"]),
            fire_at=datetime.fromtimestamp(fire_ms / 1000, UTC),
            fire_ms=fire_ms,
            attempt=int(meta["attempt"]),
            key=str(meta["key"]),
            epoch=int(meta["epoch"]),
        )


def current_fire() -> Fire | None:
    """The fire of the RQ job running now; None outside a job or for a job rqbeat
    did not enqueue."""
    job = get_current_job()
    meta = job.meta.get("rqbeat") if job is not None else None
    return Fire.from_meta(meta) if isinstance(meta, dict) else None
