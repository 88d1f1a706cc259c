"""Reading a schedule's hash back: the definition plus its state, tolerant of damage.

A hash edited by hand (garbage JSON, missing fields, an invalid definition) decodes
to a record with ``schedule=None``, ``state='broken'`` and the reason in ``error``:
it is shown, never raised, so one bad schedule cannot break listing the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from scheduler.clock import parse_iso_ms
from scheduler.errors import CorruptDefinition
from scheduler.model import Schedule
from scheduler.protocol import SLOT_WAIT_SCORE, STATES, ScheduleState
from scheduler.stored import definition_text


@dataclass(frozen=True, kw_only=True)
class ScheduleRecord:
    """A stored schedule as read from Redis."""

    id: str
    schedule: Schedule | None
    state: ScheduleState
    version: int
    fire_ms: int | None  # the pending or in-flight fire
    due_ms: int | None  # score in the due set: fire + jitter, or the retry time
    attempt: int
    job_id: str | None = None
    last_result: str | None = None
    last_run_ms: int | None = None
    last_error: str | None = None
    error: str | None = None
    raw: Mapping[str, str] = field(default_factory=dict)


def text(value: bytes | str | None) -> str | None:
    """Redis replies arrive as bytes (RQ needs ``decode_responses=False``)."""
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "replace")


def decode_definition(schedule_id: str, definition: str | None) -> Schedule:
    """The stored definition as a :class:`Schedule`; raises :class:`CorruptDefinition`
    with the reason when it cannot be used."""
    if definition is None:
        raise CorruptDefinition(schedule_id, "the hash has no 'definition' field and no setting fields")
    try:
        raw = json.loads(definition)
    except (ValueError, RecursionError) as exc:
        raise CorruptDefinition(schedule_id, f"definition is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CorruptDefinition(schedule_id, "definition is not a JSON object")
    stored_id = raw.setdefault("id", schedule_id)  # the stored form leaves it to the key
    if stored_id != schedule_id:
        raise CorruptDefinition(schedule_id, f"definition id {stored_id!r} does not match the key")
    try:
        return Schedule.from_dict(raw)
    except ValueError as exc:  # InvalidSchedule: valid once, or written by hand
        raise CorruptDefinition(schedule_id, str(exc)) from exc


def decode_record(
    schedule_id: str,
    raw_hash: Mapping[bytes | str, bytes | str] | Mapping[str, str],
    due_ms: int | None,
    *,
    decode: Callable[[str, str | None], Schedule] | None = None,
) -> ScheduleRecord:
    """Decode HGETALL output; damage yields ``state='broken'`` with the reason.

    ``decode`` replaces :func:`decode_definition` (``rqbeat ls`` passes a memoizing one)."""
    raw = {str(text(k)): str(text(v)) for k, v in raw_hash.items()}
    error = raw.get("error") or None
    schedule: Schedule | None = None
    try:
        schedule = (decode or decode_definition)(schedule_id, definition_text(raw))
    except CorruptDefinition as exc:
        # a recorded error (the leader's, or "key has type ...") says more than "no definition"
        error = error or str(exc)
    stored = raw.get("state", "")
    state = ScheduleState(stored) if stored in STATES else ScheduleState.BROKEN
    if schedule is None or stored not in STATES:
        error = error or f"unknown state {stored!r}"
        state = ScheduleState.BROKEN
    return ScheduleRecord(
        id=schedule_id,
        schedule=schedule,
        state=state,
        version=_int(raw.get("version")) or 0,
        fire_ms=_time(raw.get("fire_at")),
        # an allow_all fire waiting for a slot is due at no time (its run's end wakes it)
        due_ms=None if due_ms is not None and due_ms >= SLOT_WAIT_SCORE * 1000 else due_ms,
        attempt=_int(raw.get("attempt")) or 1,
        job_id=raw.get("job_id") or None,
        last_result=raw.get("last_result") or None,
        last_run_ms=_time(raw.get("last_run_at")),
        last_error=raw.get("last_error") or None,
        error=error if state is ScheduleState.BROKEN else None,
        raw=raw,
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _time(value: str | None) -> int | None:
    try:
        return parse_iso_ms(value) if value else None
    except ValueError:
        return None
