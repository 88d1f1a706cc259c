"""Triggers in words for the dashboard: ``30 2 * * 1-5`` → ``at 02:30 on Mon-Fri``.

Covers the shapes people write most (fixed times, steps, ranges and lists of minutes,
hours and weekdays, the ``@`` aliases, intervals); anything else is described by
:func:`scheduler.cron.describe`. The expression as written is always shown beside
these words, so a shape read loosely here can be checked there.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler import cron
from scheduler.durations import format_duration
from scheduler.model import Schedule

_ALIASES = {
    "@yearly": "once a year, on 1 January at 00:00",
    "@annually": "once a year, on 1 January at 00:00",
    "@monthly": "on the 1st of every month at 00:00",
    "@weekly": "every Sunday at 00:00",
    "@daily": "every day at 00:00",
    "@midnight": "every day at 00:00",
    "@hourly": "every hour, on the hour",
}
_DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_MONTHS = ["", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_EVERY_DAY = " every day"
_FIVE = 5
_SIX = 6


def in_words(schedule: Schedule) -> str:
    """The schedule's trigger as a sentence fragment, in its own timezone."""
    if schedule.every_ms is not None:
        return f"every {format_duration(schedule.every_ms)}"
    if len(schedule.crons) > 1:
        return " and ".join(_cron_words(schedule, expr) for expr in schedule.crons)
    return _cron_words(schedule, schedule.crons[0] if schedule.crons else "")


def _cron_words(schedule: Schedule, written: str) -> str:
    """One cron expression of ``schedule`` in words (its own text when unusual)."""
    expr = " ".join(written.split())
    if expr.lower() in _ALIASES:
        return _ALIASES[expr.lower()]
    fields = expr.split(" ")
    if len(fields) not in (_FIVE, _SIX) or "H" in expr.upper():
        return _described(schedule, written)
    second = fields.pop(0) if len(fields) == _SIX else "0"
    minute, hour, dom, month, dow = fields
    when = _time_of_day(second, minute, hour)
    if when is None:
        return _described(schedule, written)
    days = _days(dom, month, dow)
    if days is None:
        return _described(schedule, written)
    return when if days == _EVERY_DAY and when.startswith("every ") else f"{when}{days}"


def _described(schedule: Schedule, written: str) -> str:
    return cron.describe(cron.cron_trigger(written, schedule.timezone, schedule_id=schedule.id))


def _time_of_day(second: str, minute: str, hour: str) -> str | None:
    if second == "0":
        return _minutes_hours(minute, hour)
    every_minute = minute == "*" and hour == "*"
    if second == "*" and every_minute:
        return "every second"
    if second.startswith("*/") and second[2:].isdigit() and every_minute:
        return f"every {second[2:]} seconds"
    return None


def _minutes_hours(minute: str, hour: str) -> str | None:
    shapes: list[tuple[bool, Callable[[], str]]] = [
        (minute.isdigit() and hour.isdigit(), lambda: f"at {int(hour):02d}:{int(minute):02d}"),
        (minute.isdigit() and _listable(hour), lambda: f"at minute {int(minute)} past {_hours(hour)}"),
        (minute == "*" and hour == "*", lambda: "every minute"),
        (
            minute.startswith("*/") and minute[2:].isdigit() and hour == "*",
            lambda: f"every {minute[2:]} minutes",
        ),
        (_listable(minute) and hour == "*", lambda: f"at minutes {minute} of every hour"),
    ]
    return next((say() for fits, say in shapes if fits), None)


def _listable(field: str) -> bool:
    return field == "*" or all(p.replace("-", "").isdigit() for p in field.split(",")) or _step(field)


def _step(field: str) -> bool:
    base, _, step = field.partition("/")
    return step.isdigit() and (base == "*" or base.replace("-", "").isdigit())


def _hours(hour: str) -> str:
    if hour == "*":
        return "every hour"
    if hour.startswith("*/"):
        return f"every {hour[2:]} hours"
    return f"hours {hour}"


def _days(dom: str, month: str, dow: str) -> str | None:
    parts: list[str] = []
    if dow != "*":
        names = _names(dow, _DAYS)
        if names is None:
            return None
        parts.append(f"on {names}")
    if dom != "*":
        if not _listable(dom):
            return None
        parts.append(f"on day {dom} of the month")
    if month != "*":
        names = _names(month, _MONTHS)
        if names is None:
            return None
        parts.append(f"in {names}")
    return " " + " ".join(parts) if parts else _EVERY_DAY


def _names(field: str, names: list[str]) -> str | None:
    """``1-5`` → ``Mon-Fri``, ``0,6`` → ``Sun,Sat``; None for shapes left to the expression."""
    out = []
    for part in field.split(","):
        bounds = part.split("-")
        if not all(b.isdigit() and int(b) < len(names) for b in bounds) or len(bounds) > 2:
            return None
        out.append("-".join(names[int(b)] for b in bounds))
    return ",".join(out)
