"""Reading many schedules for ``rqbeat ls``: in pipelined chunks, each shape validated once.

At 100k schedules the cost of ``ls`` is (1) the round trips, bounded by reading
``scheduler.hashes.CHUNK`` hashes per pipeline, and (2) validating every definition (compiling its
cron expression), which :class:`Definitions` does once per *shape* instead of once per
schedule. A state filter narrows the ids before any hash is read: ``due`` and
``running`` come from their zsets, ``paused`` from the ids in neither zset (one ZDIFF)
plus the running zset (a paused schedule's last run may still be in flight).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Iterator, Sequence
from enum import StrEnum
from typing import Any

from redis import Redis

from scheduler import hashes
from scheduler.clock import iso
from scheduler.errors import CorruptDefinition
from scheduler.keys import Keys
from scheduler.model import ID_PATTERN, Schedule
from scheduler.protocol import ScheduleState
from scheduler.records import ScheduleRecord, decode_definition, text

#: Every ``"cron":"..."`` in a definition's text (cron expressions contain no quotes).
_CRON = re.compile(r'"cron":"([^"\\]*)"')
#: Order of the states that have no next fire, after all those that have one.
_IDLE_ORDER = {ScheduleState.BROKEN: 0, ScheduleState.PAUSED: 1}


class Definitions:
    """:func:`~scheduler.records.decode_definition`, validating each shape once.

    The stored form of a definition leaves the id to the key, so schedules made from
    one template (seeded many times, an apply file's defaults) store the same text:
    the first is fully validated, the others get a copy carrying their own id. Not
    shared: ``H`` cron fields (hashed by id), texts that name an ``"id"`` (written by
    hand, or an older rqbeat; also a kwargs key), and ids that fail their own check.
    """

    def __init__(self) -> None:
        self._shapes: dict[str, Schedule | CorruptDefinition] = {}

    def decode(self, schedule_id: str, definition: str | None) -> Schedule:
        if (
            definition is None
            or not ID_PATTERN.fullmatch(schedule_id)
            or '"id":' in definition
            or any("H" in expr for expr in _CRON.findall(definition))  # hashed by id: may differ
        ):
            return decode_definition(schedule_id, definition)
        known = self._shapes.get(definition)
        if known is None:
            try:
                known = decode_definition(schedule_id, definition)
            except CorruptDefinition as exc:
                known = exc
            self._shapes[definition] = known
        if isinstance(known, CorruptDefinition):
            raise CorruptDefinition(schedule_id, known.reason)  # this schedule's id, not the first's
        if known.id == schedule_id:
            return known
        clone = copy.copy(known)
        object.__setattr__(clone, "id", schedule_id)
        clone.__dict__.pop("trigger", None)  # compiled lazily again, with this id
        return clone


def candidate_ids(conn: Redis, keys: Keys, states: Collection[str]) -> list[str]:
    """Every id that may be in one of ``states`` (all ids when none is given)."""
    if not states or ScheduleState.BROKEN in states:  # a corrupt hash may sit in any set
        return [str(text(m)) for m in conn.smembers(keys.ids)]
    found: set[str] = set()
    if ScheduleState.DUE in states:
        found.update(_zset_members(conn, keys.due))
    if ScheduleState.RUNNING in states or ScheduleState.PAUSED in states:
        found.update(_zset_members(conn, keys.running))
    if ScheduleState.PAUSED in states:
        found.update(_members(conn.zdiff([keys.ids, keys.due, keys.running])))  # a set is a valid input
    return list(found)


def _zset_members(conn: Redis, key: str, chunk: int = 10 * hashes.CHUNK) -> Iterator[str]:
    """ZRANGE in slices: no single command holds the server for the whole set."""
    start = 0
    while True:
        part = _members(conn.zrange(key, start, start + chunk - 1))
        yield from part
        if len(part) < chunk:
            return
        start += chunk


def _members(reply: Any) -> list[str]:
    return [str(text(m)) for m in reply]


def read_records(
    conn: Redis, keys: Keys, ids: Sequence[str], definitions: Definitions | None = None
) -> Iterator[ScheduleRecord]:
    """The schedules ``ids`` (vanished ones skipped), :data:`~scheduler.hashes.CHUNK`
    per round trip, each shape validated once."""
    return hashes.read_records(conn, keys, ids, decode=(definitions or Definitions()).decode)


def matches(
    record: ScheduleRecord, states: Collection[str], queues: Collection[str], owners: Collection[str]
) -> bool:
    """The ``ls`` filters; an empty filter lets everything through."""
    schedule = record.schedule
    return (
        (not states or record.state in states)
        and (not queues or (schedule is not None and schedule.queue in queues))
        and (not owners or (schedule is not None and schedule.owner in owners))
    )


def sort_key(record: ScheduleRecord) -> tuple[Any, ...]:
    """Runs in flight first (oldest fire first), then the soonest due; then broken
    (they need attention), then paused, each by id."""
    if record.state is ScheduleState.RUNNING:
        return (0, record.fire_ms or 0, record.id)
    if record.state is ScheduleState.DUE and record.due_ms is not None:
        return (1, record.due_ms, record.id)
    return (2, _IDLE_ORDER.get(record.state, 2), record.id)


def record_json(record: ScheduleRecord) -> dict[str, Any]:
    """A schedule as ``ls --json`` and ``show --json`` print it: times as ISO UTC,
    counters (``version``, ``attempt``, ``epoch``) as numbers, absent values as null."""
    raw = record.raw
    return {
        "id": record.id,
        "state": record.state,
        "version": record.version,
        "fire_at": _iso(record.fire_ms),
        "due_at": _iso(record.due_ms),
        "attempt": record.attempt,
        "job_id": record.job_id,
        "job_queue": raw.get("job_queue") or None,
        "epoch": number(raw.get("epoch")),
        "dispatched_at": raw.get("dispatched_at") or None,  # written by rqbeat's scripts as ISO UTC
        "run_phase": run_phase(record),
        "started_at": raw.get("started_at") or None,
        "worker": raw.get("worker") or None,
        "last_success_at": raw.get("last_success_at") or None,
        "last_result": record.last_result,
        "last_run_at": _iso(record.last_run_ms),
        "last_error": record.last_error,
        "updated_at": raw.get("updated_at") or None,
        "pause_note": raw.get("pause_note") or None,
        "paused_by": raw.get("paused_by") or None,
        "paused_until": raw.get("paused_until") or None,
        "error": record.error,
        "definition": record.schedule.to_dict() if record.schedule else None,
    }


#: The keys of :func:`record_json` that hold times.
TIME_KEYS = (
    "fire_at",
    "due_at",
    "dispatched_at",
    "started_at",
    "last_run_at",
    "last_success_at",
    "updated_at",
    "paused_until",
)


class RunPhase(StrEnum):
    """A run in flight is queued until a worker starts it (START marks ``started_at``)."""

    QUEUED = "queued"
    RUNNING = "running"


def run_phase(record: ScheduleRecord) -> RunPhase | None:
    """The phase of the schedule's run in flight; None when it has none."""
    if not record.job_id:
        return None
    return RunPhase.RUNNING if record.raw.get("started_at") else RunPhase.QUEUED


def _iso(ms: int | None) -> str | None:
    return iso(ms) if ms else None


def number(value: str | None) -> int | None:
    """A counter stored as text, as a number (None when absent or not a number)."""
    try:
        return int(value) if value else None
    except ValueError:  # edited by hand: shown as missing rather than as a string
        return None
