"""What the dashboard shows, as plain JSON-able values: list rows, one schedule, the
cluster. The HTML templates and the live-refresh JSON endpoints render the same values,
so a page and its refresh cannot disagree. Times are ISO UTC strings; the browser shows
them in the viewer's zone, the page also prints UTC and the schedule's own wall clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from scheduler import cron
from scheduler.clock import iso, parse_iso_ms
from scheduler.engine.service import HEARTBEAT_S
from scheduler.model import Schedule
from scheduler.ops.status import StatusReport
from scheduler.protocol import ScheduleState
from scheduler.records import ScheduleRecord
from scheduler.store import HistoryEntry
from scheduler.timeline import explain
from scheduler.web.rqworkers import WorkerInfo
from scheduler.web.words import in_words

NEXT_FIRES = 10
#: A replica silent for longer than this has probably died (it reports every HEARTBEAT_S),
#: as `rqbeat status` judges it.
STALE_REPLICA_MS = 2 * HEARTBEAT_S * 1000


def relative(ms: int, now_ms: int) -> str:
    """``in 4m12s`` / ``3s ago`` / ``now`` (the same words as the CLI)."""
    delta = abs(ms - now_ms) // 1000
    if delta == 0:
        return "now"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if delta >= size and len(parts) < 2:
            parts.append(f"{delta // size}{unit}")
            delta %= size
    span = "".join(parts)
    return f"in {span}" if ms > now_ms else f"{span} ago"


def wall(ms: int, tz: str) -> str:
    """``2027-03-28 03:00:00 CEST`` on the wall clock of ``tz``."""
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _when(ms: int | None, now_ms: int) -> dict[str, str] | None:
    if ms is None:
        return None
    return {"iso": iso(ms), "utc": wall(ms, "UTC"), "relative": relative(ms, now_ms)}


def row(record: ScheduleRecord, now_ms: int) -> dict[str, Any]:
    """One line of the list."""
    schedule = record.schedule
    next_ms = record.due_ms if record.state == "due" else record.fire_ms if record.job_id else None
    return {
        "id": record.id,
        "state": record.state,
        "version": record.version,
        "trigger": schedule.trigger_text if schedule else "?",
        "words": in_words(schedule) if schedule else "",
        "timezone": schedule.timezone if schedule else "",
        "queue": schedule.queue if schedule else "",
        "owner": schedule.owner if schedule else "",
        "next": _when(next_ms, now_ms),
        "attempt": record.attempt,
        "last_result": record.last_result,
        "last": _when(record.last_run_ms, now_ms),
        "error": first_line(record.error or (record.last_error if record.last_result != "succeeded" else "")),
    }


def first_line(text: str | None, limit: int = 200) -> str:
    """A traceback's last line names the exception; a one-line error is itself."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def fires(schedule: Schedule, after_ms: int, count: int = NEXT_FIRES) -> list[dict[str, str]]:
    """The next fires after ``after_ms`` with a note where DST moves or doubles one."""
    out = []
    tz = schedule.timezone
    previous = after_ms
    for fire in cron.next_fires(schedule.trigger, after_ms, count):
        out.append(
            {
                "iso": iso(fire),
                "utc": wall(fire, "UTC"),
                "local": wall(fire, tz),
                "relative": relative(fire, after_ms),
                "note": dst_note(fire, previous, tz),
            }
        )
        previous = fire
    return out


def dst_note(fire_ms: int, previous_ms: int, tz: str) -> str:
    """Why a fire's wall time may surprise: it lies at a DST transition (its wall time
    was skipped), in the hour a fall-back repeats, or after an offset change."""
    zone = ZoneInfo(tz)
    here = datetime.fromtimestamp(fire_ms / 1000, zone)
    other = here.replace(fold=1 - here.fold)
    if other.utcoffset() != here.utcoffset():
        return f"in the repeated hour, {'second' if here.fold else 'first'} pass ({_offset(here)})"
    before = datetime.fromtimestamp((fire_ms - 1) / 1000, zone)
    if here.utcoffset() != before.utcoffset():
        return f"at the DST change ({_offset(before)} → {_offset(here)}): a skipped wall time fires here"
    earlier = datetime.fromtimestamp(previous_ms / 1000, zone)
    if earlier.utcoffset() != here.utcoffset():
        return f"after the DST change ({_offset(earlier)} → {_offset(here)})"
    return ""


def _offset(moment: datetime) -> str:
    return f"UTC{moment.strftime('%z')[:3]}:{moment.strftime('%z')[3:]}"


def history(
    entries: Sequence[HistoryEntry], record: ScheduleRecord, job_link: Callable[[str], str | None]
) -> list[dict[str, Any]]:
    """The history as runs (newest first): each entry with its outcome and duration."""
    tz = record.schedule.timezone if record.schedule else "UTC"
    lines = explain(entries, record.job_id, lambda ms: wall(ms, tz))
    out = []
    for line in reversed(lines):
        entry = line.entry
        out.append(
            {
                "at": iso(entry.at_ms),
                "at_utc": wall(entry.at_ms, "UTC"),
                "event": entry.event,
                "fire": wall(line.fire_ms, tz) if line.fire_ms is not None else "",
                "attempt": line.attempt,
                "job_id": line.job_id or "",
                "job_url": job_link(line.job_id) if line.job_id else None,
                "duration_ms": line.duration_ms,
                "outcome": line.outcome,
                "by": line.by,  # an edit: who made it (the page marks edits by it)
                "note": entry.fields.get("note") or None,
                "error": first_line(entry.fields.get("error")),
            }
        )
    return out


def schedule(record: ScheduleRecord, now_ms: int) -> dict[str, Any]:
    """One schedule's page: its row, definition, in-flight run and next fires."""
    definition = record.schedule
    return {
        **row(record, now_ms),
        "definition": definition.to_dict() if definition else None,
        "description": definition.description if definition else None,
        "target": definition.target if definition else None,
        "job_id": record.job_id,
        "fire": _when(record.fire_ms, now_ms),
        "broken_error": record.error,
        "last_error": record.last_error,
        "fires": fires(definition, now_ms) if definition else [],
        "pause": _pause(record, now_ms),
    }


def _pause(record: ScheduleRecord, now_ms: int) -> dict[str, Any] | None:
    """Who paused the schedule, why and until when (None unless it is paused)."""
    if record.state is not ScheduleState.PAUSED:
        return None
    raw = record.raw
    until = raw.get("paused_until") or None
    until_ms = _ms(until)
    return {
        "by": raw.get("paused_by") or None,
        "note": raw.get("pause_note") or None,
        "until": until,
        "until_utc": wall(until_ms, "UTC") if until_ms is not None else None,
        "until_relative": relative(until_ms, now_ms) if until_ms is not None else None,
    }


def _ms(value: str | None) -> int | None:
    try:
        return parse_iso_ms(value) if value else None
    except ValueError:
        return None


def cluster(report: StatusReport, workers: Sequence[WorkerInfo], redis_where: str) -> dict[str, Any]:
    """The cluster panel: leader, replicas and their heartbeats, queues and workers."""
    data = report.to_json()
    offsets = {w["name"]: w["clock_offset_s"] for w in data.get("workers", [])}
    data["worker_rows"] = [
        {
            "name": w.name,
            "state": w.state,
            "queues": w.queues,
            "job": w.current_job,
            "heartbeat": _heartbeat(w.last_heartbeat, report.now_ms),
            "host": w.host,
            "pid": w.pid,
            "clock": _clock(offsets.get(w.name)),
        }
        for w in workers
    ]
    now = report.now_ms
    for replica, node in zip(data["replicas"], report.nodes, strict=True):
        replica["heartbeat"] = relative(node.seen_ms, now)
        replica["stale"] = now - node.seen_ms > STALE_REPLICA_MS
    data["redis"] = redis_where
    data["now_utc"] = wall(now, "UTC")
    return data


def _clock(offset_s: float | None) -> str:
    """A worker's clock against Redis time, as `rqbeat status` measured it."""
    return "" if offset_s is None else f"{offset_s:+.3f}s"


def _heartbeat(stamp: str, now_ms: int) -> str:
    """RQ writes a worker's heartbeat with the worker's clock (no timezone, UTC): shown
    as an age, never used for a decision."""
    try:
        return relative(parse_iso_ms(stamp if stamp.endswith("Z") else stamp + "Z"), now_ms) if stamp else ""
    except ValueError:
        return stamp[:40]
