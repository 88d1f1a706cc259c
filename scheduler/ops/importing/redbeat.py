"""celery-redbeat: its entries in Redis (``<prefix><name>`` hashes, field ``definition``).

Read-only, and Celery need not be installed: a definition is JSON
(``{"name", "task", "args", "kwargs", "options", "schedule", "enabled"}``, the schedule
tagged by ``__type__``). The target is the Celery task's name, which Celery makes
``module.function`` by default: RQ then calls the task object, which runs the function
in the worker (not through Celery). A task registered under a custom name needs its
target changed by hand.

Time: a Celery ``crontab`` is read in the Celery app's timezone (``timezone``
setting, default UTC): pass ``--timezone`` if the app sets another.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

from scheduler.ops.importing.found import Imported, decoded, seconds_text

DEFAULT_PREFIX = "redbeat:"
_CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
_NOT_ENTRIES = (":schedule", ":statics", ":lock")


def read(conn: Redis, *, prefix: str = DEFAULT_PREFIX, timezone: str = "UTC") -> Imported:
    """Every entry under ``prefix``; a disabled one is imported with a note (a schedule
    file has no paused flag: pause it after applying)."""
    found = Imported(source="redbeat")
    for key in sorted(decoded(k) for k in conn.scan_iter(match=f"{prefix}*", count=1000)):
        if key.removeprefix(prefix) in _NOT_ENTRIES or conn.type(key) not in (b"hash", "hash"):
            continue
        raw = conn.hget(key, "definition")
        if raw is None:
            continue
        name = key.removeprefix(prefix)
        try:
            definition = json.loads(decoded(raw))
            settings, caveats = _settings(definition, timezone)
        except (ValueError, TypeError, KeyError) as exc:
            found.skip(name, f"cannot read its definition: {exc}")
            continue
        if settings is None:
            found.skip(name, caveats[0])
            continue
        found.add(str(definition.get("name") or name), settings, caveats)
    return found


def _settings(definition: dict[str, Any], timezone: str) -> tuple[dict[str, Any] | None, list[str]]:
    schedule = definition["schedule"]
    kind = schedule.get("__type__") if isinstance(schedule, dict) else None
    settings: dict[str, Any] = {"target": str(definition["task"])}
    caveats: list[str] = []
    if kind == "crontab":
        fields = [str(schedule.get(f, "*")) for f in _CRONTAB_FIELDS]
        settings["cron"] = " ".join(fields)
        settings["timezone"] = timezone
        if fields[2] != "*" and fields[4] != "*":
            caveats.append(
                "Celery runs a crontab when day_of_month AND day_of_week match; cron (and rqbeat) "
                "when either does"
            )
    elif kind == "interval":
        every = seconds_text(float(schedule["every"]))
        if every is None:
            return None, [f"interval {schedule['every']!r} is not a whole number of milliseconds"]
        settings["every"] = every
        caveats.append("intervals are anchored to the Unix epoch, not to the entry's last run")
        if schedule.get("relative"):
            caveats.append("relative=True (rounding to the period) is not carried over")
    else:
        return None, [f"a {kind or 'unknown'} schedule has no rqbeat equivalent (cron or every)"]
    options = definition.get("options") or {}
    settings["queue"] = str(options.get("queue") or "default")
    if definition.get("args"):
        settings["args"] = list(definition["args"])
    if definition.get("kwargs"):
        settings["kwargs"] = dict(definition["kwargs"])
    other = sorted(set(options) - {"queue"})
    if other:
        caveats.append(f"Celery options not carried over: {', '.join(other)}")
    if definition.get("enabled") is False:
        caveats.append("disabled in redbeat: run `rqbeat pause` on it after applying")
    return settings, caveats
