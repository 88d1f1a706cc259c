"""Inside a job: which schedule and which fire is this run?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq import get_current_job

from scheduler.jobmeta import FireMeta


@dataclass(frozen=True, slots=True)
class Fire:
    """The fire a job runs for.

    ``key`` (``<schedule>:<fire epoch ms>``) is the same for every attempt and every
    duplicate run of one fire: use it to make side effects idempotent (a unique
    constraint, ``SET key NX``, an upsert). A backfill's run (``backfill`` true) has
    its own key, ``<schedule>:<fire epoch ms>:backfill``.
    """

    schedule: str
    fire_at: datetime
    fire_ms: int
    attempt: int
    key: str
    epoch: int
    backfill: bool = False

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Fire:
        """From ``job.meta["rqbeat"]``; raises :class:`~scheduler.errors.CorruptJobMeta`."""
        return cls.of(FireMeta.from_dict(meta))

    @classmethod
    def of(cls, fire: FireMeta) -> Fire:
        return cls(
            schedule=fire.schedule,
            fire_at=datetime.fromtimestamp(fire.fire_ms / 1000, UTC),
            fire_ms=fire.fire_ms,
            attempt=fire.attempt,
            key=fire.key,
            epoch=fire.epoch,
            backfill=fire.backfill,
        )


def current_fire() -> Fire | None:
    """The fire of the RQ job running now; None outside a job or for a job rqbeat
    did not enqueue. Raises :class:`~scheduler.errors.CorruptJobMeta` when the job's
    ``meta["rqbeat"]`` is damaged."""
    job = get_current_job()
    fire = FireMeta.from_meta(job.meta) if job is not None else None
    return Fire.of(fire) if fire is not None else None
