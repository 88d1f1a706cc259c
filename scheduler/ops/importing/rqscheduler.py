"""rq-scheduler: its jobs in Redis (``rq:scheduler:scheduled_jobs`` and the job hashes).

Read-only: the job ids come from the sorted set, each job through RQ's own
``Job.fetch`` (rq-scheduler's ``get_jobs`` would delete ids whose job is gone, and an
import never writes to its source). rq-scheduler stores jobs with RQ's default
serializer, pickle, unless it was set up with another: unpickling runs code, so import
only from a Redis you trust.

Times: rq-scheduler matches a cron string against the host's local wall clock (it
feeds a naive ``datetime.now()`` to the ``crontab`` library; ``use_local_timezone`` only
changes how the result is converted, not the instant). The import writes the host's
IANA zone (``TZ``, else /etc/localtime), UTC when it has no name, unless ``--tz`` says.
"""

from __future__ import annotations

from typing import Any, cast

from redis import Redis
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job
from rq.serializers import resolve_serializer

from scheduler.ops.importing.found import Imported, decoded, seconds_text
from scheduler.ops.importing.rqcron import host_zone

SCHEDULED_JOBS_KEY = "rq:scheduler:scheduled_jobs"


def read(conn: Redis, *, timezone: str | None = None, serializer: str | None = None) -> Imported:
    """Every recurring job rq-scheduler holds; one-off jobs become notes."""
    found = Imported(source="rq-scheduler")
    resolved = resolve_serializer(serializer) if serializer else None
    for raw_id in conn.zrange(SCHEDULED_JOBS_KEY, 0, -1):
        job_id = decoded(cast(bytes, raw_id))  # ZRANGE without scores: members only
        try:
            job = Job.fetch(job_id, connection=conn, serializer=resolved)
            settings, caveats = _settings(job, timezone)
        except NoSuchJobError:
            found.skip(job_id, "its job hash is gone (rq-scheduler would drop it too)")
            continue
        except (DeserializationError, ValueError, TypeError, AttributeError) as exc:
            found.skip(job_id, f"cannot read the job: {exc}")
            continue
        if settings is None:
            found.skip(f"{job_id} ({job.func_name})", caveats[0])
            continue
        found.add(_name(job_id, str(job.func_name)), settings, caveats)
    return found


def _name(job_id: str, func_name: str) -> str:
    """rq-scheduler's ids are random (uuid4) unless given: prefer the function's name."""
    return job_id if not _looks_generated(job_id) else func_name.rsplit(".", 1)[-1]


def _looks_generated(job_id: str) -> bool:
    return len(job_id) == 36 and job_id.count("-") == 4


def _settings(job: Job, timezone: str | None) -> tuple[dict[str, Any] | None, list[str]]:
    meta = job.meta or {}
    settings: dict[str, Any] = {"target": job.func_name, "queue": job.origin}
    caveats: list[str] = []
    if meta.get("cron_string"):
        settings["cron"] = meta["cron_string"]
        zone = timezone or host_zone()
        settings["timezone"] = zone or "UTC"
        if zone is None:
            caveats.append(
                "rq-scheduler read this cron on the host's clock, whose zone has no IANA name: UTC"
            )
    elif meta.get("interval"):
        every = seconds_text(float(meta["interval"]))
        if every is None:
            return None, [f"interval {meta['interval']!r} is not a whole number of milliseconds"]
        settings["every"] = every
        caveats.append("intervals are anchored to the Unix epoch, not to the job's first run time")
    else:
        return None, ["a one-off job (no cron_string or interval): not a recurring schedule"]
    if meta.get("repeat") is not None:
        caveats.append(f"repeat={meta['repeat']} is not carried over: the schedule repeats until removed")
    settings.update(_job_options(job))
    return settings, caveats


def _job_options(job: Job) -> dict[str, Any]:
    """Arguments and RQ options; -1 (RQ's "forever") and unset are left to rqbeat's defaults."""
    options: dict[str, Any] = {}
    if job.args:
        options["args"] = list(job.args)
    if job.kwargs:
        options["kwargs"] = dict(job.kwargs)
    for name, seconds in (("timeout", job.timeout), ("result_ttl", job.result_ttl), ("ttl", job.ttl)):
        if isinstance(seconds, int) and seconds > 0:
            options[name] = f"{seconds}s"
    return options
