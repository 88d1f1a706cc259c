"""Dispatch's decision for one due schedule, pure: run it, spawn a run beside its
others (``allow_all``), move it to a later fire, or mark it broken.

:func:`decide` reads the row DUE_READ returned (:data:`~scheduler.protocol.DUE_FIELDS`)
and the time; it writes nothing. A fire that is already a retry, or that a person
asked for (``rqbeat trigger``, the dashboard's Trigger now, ``Client.trigger``: the
pending fire equals the schedule's ``triggered_fire``), runs as it is, however late:
the misfire policy drops only fires nobody asked for. An ``allow_all`` schedule at its
cap still waits for a slot, its triggered fire included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from scheduler import cron, policy, shapes, windows
from scheduler.allow import AllowList, Verdict
from scheduler.clock import parse_iso_ms
from scheduler.errors import CorruptDefinition
from scheduler.model import Overlap, Schedule
from scheduler.protocol import IN_FLIGHT_FIELD, SLOT_WAIT_SCORE, TRIGGERED_FIELD, ScheduleState
from scheduler.records import decode_definition, text
from scheduler.stored import SETTING_FIELDS

log = logging.getLogger(__name__)

#: The order :func:`decide` unpacks a row in; the same as DUE_FIELDS (a test pins it).
DECIDED_FROM = (
    "definition", "version", "state", "fire_at", "attempt", "last_run_at", IN_FLIGHT_FIELD, TRIGGERED_FIELD,
    *SETTING_FIELDS,
)  # fmt: skip
_DECIDED = 5  # the fields unpacked first
_IN_FLIGHT_AT = 6
_TRIGGERED_AT = 7
_SETTINGS_AT = 8  # the settings follow triggered_fire


class Kind(StrEnum):
    """What dispatch does with one due schedule."""

    RUN = "run"  # due -> running: in-flight state, history, the RQ job
    RESCHEDULE = "reschedule"  # due -> due at a later fire (skip policy, too old)
    BROKEN = "broken"  # cannot be decoded or computed: marked broken after the batch
    SPAWN = "spawn"  # allow_all: one more run in flight, the schedule due at its next fire


@dataclass(frozen=True, slots=True)
class Decision:
    """What one due schedule gets in this batch."""

    schedule_id: str
    kind: Kind
    schedule: Schedule | None = None
    fire_ms: int = 0
    attempt: int = 1
    dropped: int = 0
    score_ms: int = 0
    version: str = ""
    error: str = ""
    #: SPAWN: the schedule's next fire (windows.NEVER_MS: none) and its due score
    next_ms: int = 0

    @property
    def job_id(self) -> str:
        return f"{self.schedule_id}-{self.fire_ms}-{self.attempt}"


@lru_cache(maxsize=65_536)
def _decode(schedule_id: str, definition: str | None) -> Schedule:
    """Legacy definitions are immutable values: decode each distinct text once."""
    return decode_definition(schedule_id, definition)


def _check_allowed(schedule_id: str, target: str, allow: AllowList) -> None:
    """Raise unless ``allow`` permits ``target`` (memoized: a dict lookup after the
    first fire). A target this replica cannot import passes by name: warned once."""

    def warn(verdict: Verdict) -> None:
        if verdict.allowed and not verdict.resolved:
            log.warning(
                "schedule=%s target=%s allowed by name only, it does not import on this replica: %s",
                schedule_id,
                target,
                verdict.reason,
            )

    verdict = allow.judge(target, warn)
    if not verdict.allowed:
        detail = allow.explain(verdict).removeprefix("is not in the allow-list")
        raise CorruptDefinition(schedule_id, f"target {target!r} is not in this replica's allow-list{detail}")


def decide(
    schedule_id: str, row: list[Any], score_ms: int, now_ms: int, allow: AllowList | None = None
) -> Decision:
    """Pure decision for one due schedule from its HMGET row (of
    :data:`~scheduler.protocol.DUE_FIELDS`). A target outside ``allow`` (this replica's
    own list, never Redis's word) is broken."""
    # unpacked by position, not through a dict: this runs per fire in a burst
    legacy, version, state, fire_at, attempt = map(text, row[:_DECIDED])
    try:
        if state != ScheduleState.DUE:
            raise CorruptDefinition(schedule_id, f"is in the due set but its state is {state!r}")
        if legacy is None:  # the stored form: one field per setting, decoded once per shape
            schedule = shapes.decode_settings(schedule_id, row[_SETTINGS_AT:])
        else:  # a hash an older rqbeat wrote: one JSON field
            schedule = _decode(schedule_id, legacy)
        if allow is not None:
            _check_allowed(schedule_id, schedule.target, allow)
        pending = parse_iso_ms(fire_at) if fire_at else cron.next_fire_ms(schedule.trigger, score_ms)
        tries = int(attempt or 1)
    except ValueError as exc:  # CorruptDefinition, or a damaged fire_at or attempt
        return Decision(schedule_id, Kind.BROKEN, error=str(exc))
    # asked for by a person: runs as it is (an ISO fire_at names one ms, so equal text is the fire)
    asked = bool(fire_at) and fire_at == text(row[_TRIGGERED_AT])
    if schedule.overlap is Overlap.ALLOW_ALL and tries == 1:
        in_flight = int(text(row[_IN_FLIGHT_AT]) or 0)
        return _decide_concurrent(
            schedule_id, schedule, str(version), pending, now_ms, in_flight=in_flight, asked=asked
        )
    if tries > 1 or asked:  # a retry of a fire that failed, or a trigger: never dropped by policy
        return Decision(schedule_id, Kind.RUN, schedule, pending, tries, version=str(version))
    if schedule.overlap is Overlap.SKIP:  # the default: its cost per fire is unchanged
        res = policy.resolve_misfire(schedule, pending, now_ms)
    else:
        res = policy.resolve_due(schedule, pending, now_ms, _last_run_ms(text(row[5])))
    if not res.run_now:
        score = policy.due_score_ms(schedule, res.fire_ms)
        return Decision(schedule_id, Kind.RESCHEDULE, schedule, res.fire_ms, 1, res.dropped, score)
    return Decision(schedule_id, Kind.RUN, schedule, res.fire_ms, 1, res.dropped, version=str(version))


def _decide_concurrent(
    schedule_id: str,
    schedule: Schedule,
    version: str,
    pending: int,
    now_ms: int,
    *,
    in_flight: int,
    asked: bool,
) -> Decision:
    """``allow_all``: a run of its own while fewer than ``max_concurrent`` are in flight
    (the schedule stays due, at its next fire); at the cap the fire waits for a slot
    (due score SLOT_WAIT_SCORE: a run's end makes it due again). A fire ``asked`` for
    (a trigger) is never dropped: once a slot frees it runs as it is, however late."""
    res = policy.resolve_concurrent(schedule, pending, now_ms, in_flight, asked=asked)
    if res is None:
        wait_ms = SLOT_WAIT_SCORE * 1000
        return Decision(schedule_id, Kind.RESCHEDULE, schedule, pending, 1, 0, wait_ms, version=version)
    if not res.run_now:
        score = policy.due_score_ms(schedule, res.fire_ms)
        return Decision(schedule_id, Kind.RESCHEDULE, schedule, res.fire_ms, 1, res.dropped, score)
    nxt = cron.next_fire_ms(schedule.trigger, res.fire_ms)
    score = nxt if nxt >= windows.NEVER_MS else policy.due_score_ms(schedule, nxt)
    return Decision(
        schedule_id, Kind.SPAWN, schedule, res.fire_ms, 1, res.dropped, score, version=version, next_ms=nxt
    )


def _last_run_ms(last_run_at: str | None) -> int | None:
    """The end of the previous run; None when there was none or it cannot be read (a
    late fire then goes to the misfire policy, as it would without an overlap policy)."""
    try:
        return parse_iso_ms(last_run_at) if last_run_at else None
    except ValueError:
        return None
