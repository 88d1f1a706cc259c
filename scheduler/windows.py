"""Which fires a schedule keeps: several crons, a start/end window, exclusions.

Pure functions of epoch ms, like :mod:`scheduler.cron`; nothing reads a clock.

* **Several crons** fire at the union of their fires; two expressions naming the
  same instant give one fire (the next fire is the smallest of the parts' next).
* **start_at / end_at** (both inclusive) keep only the fires inside the window.
  After ``end_at`` there is no next fire: :data:`NEVER_MS` (the schedule completes).
* **exclude** drops the fires whose local date (in the schedule's zone) is a listed
  date or lies in a listed range, or whose local wall time, cut to the minute (the
  second for a 6-field expression), matches a listed cron expression (a mask:
  ``* 0-6 * * *`` drops every fire between 00:00 and 06:59). Excluded fires are
  skipped, never run late; :meth:`Plan.excluded_between` names them for history.

A plan whose exclusions drop more than :data:`MAX_EXCLUDED_IN_A_ROW` fires in a row
raises :class:`~scheduler.errors.InvalidSchedule`: a schedule that would never fire
again is reported (marked broken by the engine), not spun on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from scheduler import cron
from scheduler.clock import iso
from scheduler.errors import InvalidSchedule

NEVER_MS = cron.NEVER_MS
MAX_EXCLUDES = 1_000
MAX_CRONS = 20
MAX_RUNS_LIMIT = 1_000_000_000
MAX_EXCLUDED_IN_A_ROW = 10_000
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EXCLUDE_HELP = "must be a date (2026-12-25), a date range (2026-12-24..2026-12-26) or a cron expression"


@dataclass(frozen=True, slots=True)
class Exclusion:
    """One ``exclude`` item: a date range (one day: first == last) or a cron mask.

    ``span_s``: how much wall time a match of the mask covers for sure, so the search
    jumps past it at once: a day when the time fields are all ``*``, an hour when the
    fields below the hour are, else the expression's unit (a minute, or a second)."""

    text: str
    first: date | None = None
    last: date | None = None
    mask: cron.CronTrigger | None = None
    span_s: int = 60


def parse_exclusion(item: str, tz: str) -> Exclusion:
    """An ``exclude`` item as written; raises InvalidSchedule naming it."""
    if not isinstance(item, str) or not item.strip():
        raise InvalidSchedule("exclude", item, _EXCLUDE_HELP)
    text = item.strip()
    if " " in text or text.startswith("@"):
        try:
            mask = cron.cron_trigger(text, tz)
        except InvalidSchedule as exc:
            raise InvalidSchedule("exclude", item, f"bad cron expression: {exc.reason}") from None
        return Exclusion(text, mask=mask, span_s=_span_s(mask.expr))
    lo, sep, hi = text.partition("..")
    first, last = _date(item, lo), _date(item, hi if sep else lo)
    if last < first:
        raise InvalidSchedule("exclude", item, "a date range must not end before it starts")
    return Exclusion(text, first, last)


def _span_s(expr: str) -> int:
    fields = expr.split()
    if expr.startswith("@"):
        return 60
    seconds = ["0"] if len(fields) == 5 else fields[:1]
    minute, hour = fields[-5], fields[-4]
    if seconds[0] != "*" and len(fields) == 6:
        return 1
    if minute != "*":
        return 60 if len(fields) == 5 or seconds[0] == "*" else 1
    if len(fields) == 5 or seconds[0] == "*":
        return 86_400 if hour == "*" else 3_600
    return 1


def _date(item: str, text: str) -> date:
    if _DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise InvalidSchedule("exclude", item, _EXCLUDE_HELP)


@dataclass(frozen=True, slots=True)
class Plan:
    """A schedule's fires: the union of ``parts`` inside the window, less exclusions.
    Hashable, so :func:`scheduler.cron.next_fire_ms` callers can memoize on it."""

    parts: tuple[cron.CronTrigger | cron.IntervalTrigger, ...]
    tz: str
    start_ms: int | None = None
    end_ms: int | None = None
    excludes: tuple[Exclusion, ...] = ()

    def next_after_ms(self, after_ms: int) -> int:
        """The first kept fire strictly after ``after_ms``, or :data:`NEVER_MS`."""
        if self.start_ms is not None:
            after_ms = max(after_ms, self.start_ms - 1)
        for _ in range(MAX_EXCLUDED_IN_A_ROW):
            fire = min(cron.next_fire_ms(part, after_ms) for part in self.parts)
            if fire >= NEVER_MS or (self.end_ms is not None and fire > self.end_ms):
                return NEVER_MS
            skip_to = self.excluded_until_ms(fire)
            if skip_to is None:
                return fire
            after_ms = max(fire, skip_to)
        raise InvalidSchedule(
            "exclude",
            [e.text for e in self.excludes],
            f"drops more than {MAX_EXCLUDED_IN_A_ROW} fires in a row after {iso(after_ms)}",
        )

    def excluded_until_ms(self, fire_ms: int) -> int | None:
        """None when ``fire_ms`` is kept; else the last instant the exclusion that
        drops it covers (the search for the next fire resumes after it)."""
        if not self.excludes:
            return None
        zone = cron.load_zone(self.tz)
        wall = cron.ms_to_datetime(fire_ms, self.tz).replace(tzinfo=None)
        day = wall.date()
        for exclusion in self.excludes:
            if exclusion.first is not None and exclusion.last is not None:
                if exclusion.first <= day <= exclusion.last:
                    next_day = datetime.combine(exclusion.last + timedelta(days=1), time(0), tzinfo=zone)
                    return cron.datetime_to_ms(next_day) - 1
            elif exclusion.mask is not None and cron.wall_matches(exclusion.mask, wall):
                return _span_end_ms(fire_ms, wall, exclusion.span_s, zone)
        return None

    def excluded_between(self, after_ms: int, until_ms: int, limit: int) -> list[int]:
        """The fires in ``(after_ms, until_ms)`` that exclusions dropped (inside the
        window), ascending, at most ``limit``: what history records as skipped."""
        if not self.excludes:
            return []
        unfiltered = Plan(self.parts, self.tz, self.start_ms, self.end_ms)
        out: list[int] = []
        cursor = after_ms
        while len(out) < limit:
            cursor = unfiltered.next_after_ms(cursor)
            if cursor >= until_ms:
                break
            if self.excluded_until_ms(cursor) is not None:
                out.append(cursor)
        return out

    def describe(self) -> str:
        text = " + ".join(cron.describe(part) for part in self.parts)
        if self.start_ms is not None:
            text += f" from {iso(self.start_ms)}"
        if self.end_ms is not None:
            text += f" until {iso(self.end_ms)}"
        if self.excludes:
            text += f" except {', '.join(e.text for e in self.excludes)}"
        return text


def _span_end_ms(fire_ms: int, wall: datetime, span_s: int, zone: tzinfo) -> int:
    """The last instant of the wall-time span (second, minute, hour, day) ``fire_ms``
    is in. Approximate where a DST shift cuts the span: the caller only moves forward
    and checks the fire it then finds again."""
    if span_s == 86_400:
        next_day = datetime.combine(wall.date() + timedelta(days=1), time(0), tzinfo=zone)
        return cron.datetime_to_ms(next_day) - 1
    into_s = (wall.hour * 3600 + wall.minute * 60 + wall.second) % span_s
    return fire_ms - fire_ms % 1000 - into_s * 1000 + span_s * 1000 - 1


def plan(
    parts: Sequence[cron.CronTrigger | cron.IntervalTrigger],
    tz: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    exclude: Sequence[str] = (),
) -> Plan:
    """A validated plan; raises InvalidSchedule naming the field at fault."""
    if start_ms is not None and end_ms is not None and end_ms < start_ms:
        raise InvalidSchedule("end_at", iso(end_ms), f"must not be before start_at {iso(start_ms)}")
    if len(exclude) > MAX_EXCLUDES:
        raise InvalidSchedule("exclude", f"<{len(exclude)} items>", f"at most {MAX_EXCLUDES} items")
    excludes = tuple(parse_exclusion(item, tz) for item in exclude)
    return Plan(tuple(parts), tz, start_ms, end_ms, excludes)


# -- the settings as people write them (Schedule.from_dict's converters and checks) --


def as_crons(key: str, value: Any) -> str | tuple[str, ...]:
    """One expression, or a list of them (one item stays a plain string)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidSchedule(key, value, "must be a cron expression or a non-empty list of them")
    return value[0] if len(value) == 1 else tuple(value)


def as_time(key: str, value: Any) -> str:
    """An ISO time as text (TOML gives a datetime): checked in ``__post_init__``."""
    if isinstance(value, datetime):
        return value.isoformat()
    if not isinstance(value, str):
        raise InvalidSchedule(key, value, "must be an ISO time, e.g. 2027-01-01T09:00:00+01:00")
    return value


def as_excludes(key: str, value: Any) -> tuple[str, ...]:
    """A list of dates (TOML gives dates), ranges or cron masks; one item may stand alone."""
    items = [value] if isinstance(value, str | date) else value
    if not isinstance(items, list | tuple):
        raise InvalidSchedule(key, value, "must be a list of dates, date ranges or cron expressions")
    out = []
    for item in items:
        if isinstance(item, datetime) or not isinstance(item, str | date):
            raise InvalidSchedule(key, item, "must be a date (2026-12-25), a range or a cron expression")
        out.append(item.isoformat() if isinstance(item, date) else item.strip())
    return tuple(out)


def check_max_runs(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RUNS_LIMIT:
        raise InvalidSchedule("max_runs", value, f"must be a whole number from 1 to {MAX_RUNS_LIMIT}")


def check_crons(value: str | tuple[str, ...]) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, tuple) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidSchedule("cron", value, "must be a cron expression or a non-empty list of them")
    if len(value) > MAX_CRONS:
        raise InvalidSchedule("cron", f"<{len(value)} expressions>", f"at most {MAX_CRONS} expressions")
    normal = [" ".join(v.split()) for v in value]
    if len(set(normal)) != len(normal):
        raise InvalidSchedule("cron", list(value), "lists the same expression twice")


def normal_time(name: str, value: Any, tz: Any) -> str | None:
    """``start_at``/``end_at`` as ISO UTC text; one without an offset is read in ``tz``
    (a wall time a DST gap skips is read as the gap ends, as zoneinfo does)."""
    if value is None:
        return None
    text = value.isoformat() if isinstance(value, datetime) else value
    try:
        if not isinstance(text, str):
            raise ValueError
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidSchedule(name, value, "must be an ISO time, e.g. 2027-01-01T09:00:00+01:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=cron.load_zone(tz))
    ms = cron.datetime_to_ms(moment)
    if not 0 <= ms < NEVER_MS:
        raise InvalidSchedule(name, value, "must be between 1970 and 9999")
    utc = cron.ms_to_datetime(ms).isoformat(timespec="milliseconds" if ms % 1000 else "seconds")
    return utc.replace("+00:00", "Z")


def time_ms(value: str | None) -> int | None:
    return None if value is None else cron.datetime_to_ms(datetime.fromisoformat(value))


def skipped_before(trigger: cron.Trigger, after_ms: int, next_ms: int, limit: int) -> list[int]:
    """The fires exclusions dropped after ``after_ms`` and before ``next_ms`` (the next
    kept fire, or :data:`NEVER_MS`: up to the window's end), at most ``limit``."""
    if not isinstance(trigger, Plan) or not trigger.excludes:
        return []
    if next_ms >= NEVER_MS:
        if trigger.end_ms is None:
            return []
        next_ms = trigger.end_ms + 1
    return trigger.excluded_between(after_ms, next_ms, limit)
