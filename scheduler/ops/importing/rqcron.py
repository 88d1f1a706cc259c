"""RQ's own cron: a config module of ``rq.cron.register(...)`` calls (``rq cron CONFIG``).

The module is loaded the way ``rq cron`` loads it (``CronScheduler.load_config_from_file``),
so it imports the user's job functions: run the import where the app imports. Nothing
is written to Redis.

Time: RQ 2.x reads cron expressions in UTC; RQ 3 reads them in the host's local zone.
The import writes the zone that the installed RQ uses (the host's IANA zone under RQ 3,
when it can be named), unless ``--timezone`` says otherwise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import rq
from redis import Redis
from rq.cron import CronJob, CronScheduler
from rq.defaults import DEFAULT_RESULT_TTL

from scheduler.errors import ConfigError
from scheduler.ops.importing.found import Imported, seconds_text

CRON_LOGGER = "rq.cron"
_TTL_OPTIONS = (("job_timeout", "timeout"), ("ttl", "ttl"), ("failure_ttl", "failure_ttl"))


def rq_reads_local_time() -> bool:
    """RQ 3's cron matches the host's wall clock; RQ 2's matches UTC."""
    return int(rq.__version__.split(".")[0]) >= 3


def host_zone() -> str | None:
    """The host's IANA zone name (``TZ``, else where /etc/localtime points), or None."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return None
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else None


def read(config: Path, *, timezone: str | None = None) -> Imported:
    """Every job the config module registers, as rqbeat settings."""
    found = Imported(source=f"rq-cron {config}")
    zone, zone_note = _zone(timezone)
    rq_log = logging.getLogger(CRON_LOGGER)
    was_disabled, rq_log.disabled = rq_log.disabled, True  # its errors reach the caller as ours
    try:
        scheduler = CronScheduler(connection=Redis())  # never connects: nothing is read or written
        scheduler.load_config_from_file(str(config.resolve()))
    except Exception as exc:
        raise ConfigError("CONFIG", str(config), f"cannot load it: {exc}") from exc
    finally:
        rq_log.disabled = was_disabled
    for job in scheduler.get_jobs():
        settings, caveats = _settings(job, zone)
        if settings is None:
            found.skip(job.name, caveats[0])
            continue
        # RQ names a job after its function's dotted path unless given a name: keep the last part
        name = job.func_name.rsplit(".", 1)[-1] if job.name == job.func_name else job.name
        found.add(name, settings, caveats + ([zone_note] if zone_note and job.cron else []))
    return found


def _zone(timezone: str | None) -> tuple[str, str | None]:
    if timezone:
        return timezone, None
    if not rq_reads_local_time():
        return "UTC", None
    local = host_zone()
    if local is None:
        return "UTC", "RQ 3 read this cron in the host's local zone, which has no IANA name here: UTC assumed"
    return local, f"RQ 3 read this cron in the host's local zone: timezone = {local!r}"


def _settings(job: CronJob, zone: str) -> tuple[dict[str, Any] | None, list[str]]:
    settings: dict[str, Any] = {"target": job.func_name, "queue": job.queue_name}
    caveats: list[str] = []
    if job.cron:
        settings["cron"] = job.cron
        settings["timezone"] = zone
    else:
        every = seconds_text(float(job.interval or 0))
        if every is None:
            return None, [f"interval {job.interval!r} is not a whole number of milliseconds"]
        settings["every"] = every
        caveats.append("intervals are anchored to the Unix epoch, not to when the scheduler started")
    if job.args:
        settings["args"] = list(job.args)
    if job.kwargs:
        settings["kwargs"] = dict(job.kwargs)
    options = job.job_options
    for rq_name, ours in _TTL_OPTIONS:
        if isinstance(options.get(rq_name), int) and options[rq_name] > 0:
            settings[ours] = f"{options[rq_name]}s"
    result_ttl = options.get("result_ttl", DEFAULT_RESULT_TTL)
    if isinstance(result_ttl, int) and result_ttl > 0 and result_ttl != DEFAULT_RESULT_TTL:
        settings["result_ttl"] = f"{result_ttl}s"
    caveats.extend(f"{name} is not carried over" for name in ("meta", "webhooks") if options.get(name))
    return settings, caveats
