"""``rqbeat show``: one schedule as readable lines, ``key: value``.

Values read as a person would write them, not as Python: lists and objects as JSON,
true/false, times as ISO UTC with the schedule's own wall clock and how far from
now. A multi-line value (a traceback in ``last_error``) keeps its lines, indented.
"""

from __future__ import annotations

import json
from typing import Any

from scheduler.cli.render import relative, wall
from scheduler.cli.rows import TIME_KEYS, record_json
from scheduler.clock import parse_iso_ms
from scheduler.records import ScheduleRecord


def detail_lines(record: ScheduleRecord, now_ms: int) -> list[str]:
    """The definition's settings, then the state, one ``key: value`` line each."""
    data = record_json(record)
    definition = data.pop("definition") or {}
    tz = record.schedule.timezone if record.schedule else "UTC"
    items = [(k, v) for k, v in {**definition, **data}.items() if not _empty(v)]
    width = max(len(key) for key, _ in items) + 2
    lines = []
    for key, value in items:
        text = time_text(value, tz, now_ms) if key in TIME_KEYS else readable(value)
        first, *rest = text.splitlines() or [""]
        lines.append(f"{key + ':':<{width}}{first}")
        lines.extend(" " * width + line for line in rest)
    return lines


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def readable(value: Any) -> str:
    """Text as is; everything else as JSON (``[1, "a"]``, ``true``, ``{"k": 1}``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def time_text(value: str, tz: str, now_ms: int) -> str:
    """``2027-03-28T01:00:00.000Z (2027-03-28 03:00:00 CEST, in 4h2m)``; the wall clock
    only when the schedule's timezone is not UTC."""
    try:
        ms = parse_iso_ms(value)
    except ValueError:
        return value
    local = f"{wall(ms, tz, zone=True)}, " if tz != "UTC" else ""
    return f"{value} ({local}{relative(ms, now_ms)})"
