"""rqbeat: distributed cron for RQ.

Python API::

    from redis import Redis
    from scheduler import Client, Schedule

    client = Client(Redis.from_url("redis://localhost:6379/0"))
    client.upsert(Schedule(id="nightly-report", target="app.jobs.report",
                           cron="30 2 * * *", timezone="Europe/Berlin"))

To embed the scheduler itself, see :class:`scheduler.engine.service.Service`.
"""

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
