"""When a stall becomes a finding: pure threshold math (no Redis, no clock).

Two per-schedule settings, each with a default that scales with the schedule's
period (the time from one fire to the next), so a minutely job and a nightly one are
both judged sensibly without configuration:

* ``max_queued`` -- a run dispatched but not started by a worker for this long is
  *queued too long* (no worker on its queue, all workers busy or stopped). Default:
  the larger of :data:`MIN_MAX_QUEUED_MS` and one period.
* ``stale_after`` -- a schedule without a successful run for this long is *stale*
  (failures, give-ups, runs that never start or never end all count). Default: the
  larger of :data:`MIN_STALE_AFTER_MS` and :data:`STALE_PERIODS` periods.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler import cron
from scheduler.model import Schedule

MIN_MAX_QUEUED_MS = 60_000
MIN_STALE_AFTER_MS = 5 * 60_000
STALE_PERIODS = 3


@dataclass(frozen=True, slots=True)
class Limits:
    """One schedule's thresholds, whole milliseconds."""

    max_queued_ms: int
    stale_after_ms: int


def period_ms(schedule: Schedule, fire_ms: int) -> int:
    """The time from the fire at ``fire_ms`` to the next one (a cron schedule's period
    varies: a weekday job's Friday fire has a three-day period)."""
    if schedule.every_ms is not None:
        return schedule.every_ms
    return max(0, cron.next_fire_ms(schedule.trigger, fire_ms) - fire_ms)


def limits(schedule: Schedule, period: int) -> Limits:
    """The thresholds of ``schedule`` whose period (at the fire in question) is ``period`` ms."""
    queued = schedule.max_queued_ms
    stale = schedule.stale_after_ms
    return Limits(
        max_queued_ms=queued if queued is not None else max(MIN_MAX_QUEUED_MS, period),
        stale_after_ms=stale if stale is not None else max(MIN_STALE_AFTER_MS, STALE_PERIODS * period),
    )


def limits_at(schedule: Schedule, fire_ms: int) -> Limits:
    """:func:`limits` with the period measured at ``fire_ms``."""
    return limits(schedule, period_ms(schedule, fire_ms))
