"""rqbeat: distributed cron for RQ.

Python API::

    from redis import Redis
    from scheduler import Client, Schedule

    client = Client(Redis.from_url("redis://localhost:6379/0"))
    client.upsert(Schedule(id="nightly-report", target="app.jobs.report",
                           cron="30 2 * * *", timezone="Europe/Berlin"))

To embed the scheduler itself, see :class:`scheduler.engine.service.Service`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.backfill import BackfillActive, BadWindow
    from scheduler.engine.service import Service, ServiceConfig
    from scheduler.errors import (
        ConfigError,
        CorruptDefinition,
        InvalidSchedule,
        LeadershipLost,
        RqbeatError,
        ScheduleConflict,
        ScheduleNotFound,
    )
    from scheduler.model import Misfire, Schedule
    from scheduler.protocol import BackfillOverlap
    from scheduler.records import ScheduleRecord
    from scheduler.redisconf import RedisSettings
    from scheduler.store import Client, HistoryEntry, UpsertResult

#: Where each public name is defined. Imported on first use (PEP 562): ``import
#: scheduler.cli`` for ``rqbeat ls`` must not pay for the engine, RQ's worker and
#: redis.asyncio, which ``Service`` brings.
_HOMES = {
    "BackfillActive": "scheduler.backfill",
    "BadWindow": "scheduler.backfill",
    "Service": "scheduler.engine.service",
    "ServiceConfig": "scheduler.engine.service",
    "ConfigError": "scheduler.errors",
    "CorruptDefinition": "scheduler.errors",
    "InvalidSchedule": "scheduler.errors",
    "LeadershipLost": "scheduler.errors",
    "RqbeatError": "scheduler.errors",
    "ScheduleConflict": "scheduler.errors",
    "ScheduleNotFound": "scheduler.errors",
    "Misfire": "scheduler.model",
    "Schedule": "scheduler.model",
    "BackfillOverlap": "scheduler.protocol",
    "ScheduleRecord": "scheduler.records",
    "RedisSettings": "scheduler.redisconf",
    "Client": "scheduler.store",
    "HistoryEntry": "scheduler.store",
    "UpsertResult": "scheduler.store",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "Client",
    "Schedule",
    "Misfire",
    "ScheduleRecord",
    "UpsertResult",
    "HistoryEntry",
    "Service",
    "ServiceConfig",
    "RedisSettings",
    "RqbeatError",
    "InvalidSchedule",
    "ScheduleNotFound",
    "ConfigError",
    "LeadershipLost",
    "ScheduleConflict",
    "CorruptDefinition",
    "BackfillOverlap",
    "BadWindow",
    "BackfillActive",
]
