"""The next fires of a schedule as ``rqbeat next ID`` shows them: every setting
applied (crons, window, exclusions, runs left), with notes on DST gaps and repeats.

Pure: the caller passes the instant to start after and the runs already counted.
The notes describe what :mod:`scheduler.cron` does, not what one might expect: a
wall time inside a spring-forward gap fires as the gap ends; one inside a fall-back
fold fires once (first pass) unless the hour field is interval-like (both passes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from scheduler import cron, windows
from scheduler.model import Schedule

#: Excluded fires listed between two kept ones, at most (the rest are counted).
MAX_SKIPPED_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Row:
    """One fire in a preview: kept (``skipped`` False) or dropped by an exclusion."""

    fire_ms: int
    skipped: bool
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Preview:
    rows: tuple[Row, ...]
    #: Why no further fire follows the rows ('' = more follow): end_at or max_runs.
    ends: str


def preview(schedule: Schedule, after_ms: int, count: int, runs_done: int = 0) -> Preview:
    """Up to ``count`` kept fires after ``after_ms`` (with the excluded ones between
    them); ``runs_done`` successful runs count towards ``max_runs``."""
    trigger = schedule.trigger
    left = count
    if schedule.max_runs is not None:
        left = min(count, max(0, schedule.max_runs - runs_done))
    rows: list[Row] = []
    cursor, ends = after_ms, ""
    while left > 0:
        fire = cron.next_fire_ms(trigger, cursor)
        if isinstance(trigger, windows.Plan):
            until = fire if fire < windows.NEVER_MS else (trigger.end_ms or cursor) + 1
            for skipped in trigger.excluded_between(cursor, until, MAX_SKIPPED_SHOWN):
                notes = (_excluded_by(trigger, skipped), *dst_notes(trigger, skipped))
                rows.append(Row(skipped, True, notes))
        if fire >= windows.NEVER_MS:
            ends = f"end_at {schedule.end_at} passed: completed"
            break
        rows.append(Row(fire, False, dst_notes(trigger, fire)))
        cursor, left = fire, left - 1
    kept = sum(not r.skipped for r in rows)
    if not ends and schedule.max_runs is not None and runs_done + kept >= schedule.max_runs:
        ends = f"max_runs {schedule.max_runs} reached: completed"
    return Preview(tuple(rows), ends)


def _excluded_by(plan: windows.Plan, fire_ms: int) -> str:
    wall = cron.ms_to_datetime(fire_ms, plan.tz).replace(tzinfo=None)
    for exclusion in plan.excludes:
        one = windows.Plan(plan.parts, plan.tz, excludes=(exclusion,))
        if one.excluded_until_ms(fire_ms) is not None:
            return f"skipped: excluded by {exclusion.text!r} ({wall:%a %Y-%m-%d})"
    return "skipped: excluded"


def dst_notes(trigger: cron.Trigger, fire_ms: int) -> tuple[str, ...]:
    """What a DST transition does to this fire, one note per cron that names it."""
    parts = trigger.parts if isinstance(trigger, windows.Plan) else (trigger,)
    notes: list[str] = []
    for part in parts:
        if isinstance(part, cron.CronTrigger) and cron.next_fire_ms(part, fire_ms - 1) == fire_ms:
            note = _gap_note(part, fire_ms) or _fold_note(part, fire_ms)
            if note and note not in notes:
                notes.append(note)
    return tuple(notes)


def _gap_note(part: cron.CronTrigger, fire_ms: int) -> str | None:
    """A fire at the end of a spring-forward gap that stands for wall times in it."""
    at = cron.ms_to_datetime(fire_ms, part.tz)
    before = cron.ms_to_datetime(fire_ms - 1000, part.tz)
    gap = cast(timedelta, at.utcoffset()) - cast(timedelta, before.utcoffset())
    if gap <= timedelta(0):
        return None
    wall = at.replace(tzinfo=None)
    missing: list[datetime] = []
    probe = wall - gap - timedelta(seconds=1)
    while len(missing) < 1000:
        probe = cron.first_match_after(part, probe)
        if probe >= wall:
            break
        missing.append(probe)
    if not missing:
        return None
    what = f"{missing[0]:%H:%M}" if len(missing) == 1 else f"{missing[0]:%H:%M}-{missing[-1]:%H:%M}"
    verb = "does" if len(missing) == 1 else f"({len(missing)} times) do"
    return f"{what} {verb} not exist on {wall:%Y-%m-%d} (DST gap): fires at {wall:%H:%M} {at.tzname()}"


def _fold_note(part: cron.CronTrigger, fire_ms: int) -> str | None:
    """A fire at a wall time that a fall-back fold repeats."""
    at = cron.ms_to_datetime(fire_ms, part.tz)
    wall = at.replace(tzinfo=None, fold=0)
    zone = cron.load_zone(part.tz)
    first = cast(timedelta, wall.replace(tzinfo=zone).utcoffset())
    second = cast(timedelta, wall.replace(tzinfo=zone, fold=1).utcoffset())
    if first <= second:
        return None
    which = "first" if at.utcoffset() == first else "second"
    head = f"{wall:%H:%M} happens twice on {wall:%Y-%m-%d} (DST repeat)"
    if part.repeats_in_fold:
        return f"{head}: fires in both passes; this is the {which} ({at.tzname()})"
    return f"{head}: fires once, in the first pass ({at.tzname()})"
