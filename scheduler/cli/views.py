"""Commands that show schedules to people: ls, history, next."""

from __future__ import annotations

import time
from operator import attrgetter
from typing import Any

import click

from scheduler import cron
from scheduler.cli.common import Context, echo_json, echo_json_array, json_option, pass_context, table
from scheduler.cli.complete import id_argument
from scheduler.cli.render import Cell, age, duration, first_line, local_iso, relative, toned, wall
from scheduler.cli.rows import (
    RunPhase,
    candidate_ids,
    matches,
    number,
    read_records,
    record_json,
    run_phase,
    sort_key,
)
from scheduler.clock import iso, parse_iso_ms, redis_now_ms
from scheduler.errors import InvalidSchedule
from scheduler.keys import Keys
from scheduler.protocol import STATES, ScheduleState
from scheduler.records import ScheduleRecord
from scheduler.timeline import Line, explain

LS_HEADERS = ["ID", "TRIGGER", "TZ", "STATE", "NEXT", "LAST"]
#: History fields that are counters: numbers in --json, as in ``show --json``.
_NUMBERS = ("epoch", "count", "version")
#: Extra history entries read so that the first runs shown still find their dispatch.
_PAIRING_SLACK = 20


@click.command(name="ls")
@click.option(
    "--state", "states", multiple=True, type=click.Choice(STATES), help="Only this state (repeatable)."
)
@click.option(
    "--queue", "queues", multiple=True, help="Only schedules enqueuing onto this RQ queue (repeatable)."
)
@click.option(
    "--owner", "owners", multiple=True, help="Only schedules made by api, cli or apply:GROUP (repeatable)."
)
@click.option("--group", "groups", multiple=True, help="Only schedules of this apply group (repeatable).")
@click.option("--sort", type=click.Choice(["next", "id"]), default="next", help="Soonest first, or by id.")
@json_option
@pass_context
def list_schedules(
    ctx: Context,
    states: tuple[str, ...],
    queues: tuple[str, ...],
    owners: tuple[str, ...],
    groups: tuple[str, ...],
    sort: str,
    as_json: bool,
) -> None:
    """List schedules: trigger, timezone, state, next fire on the schedule's own wall
    clock (and how soon), last result (and how long ago).

    Runs in flight come first, then the soonest fire; paused and broken schedules last.

    \b
    Examples:
      rqbeat ls
      rqbeat ls --state broken --state paused
      rqbeat ls --queue reports --group jobs --json
    """
    keys = Keys(ctx.namespace)
    owner_set = {*owners, *(f"apply:{g}" for g in groups)}
    ids = candidate_ids(ctx.conn, keys, states)
    records = [r for r in read_records(ctx.conn, keys, ids) if matches(r, states, queues, owner_set)]
    records.sort(key=sort_key if sort == "next" else attrgetter("id"))
    if as_json:
        echo_json_array(record_json(r) for r in records)
        return
    now = redis_now_ms(ctx.conn)
    table(LS_HEADERS, [_ls_row(r, now) for r in records])


def _ls_row(record: ScheduleRecord, now_ms: int) -> list[Cell | str]:
    schedule = record.schedule
    tz = schedule.timezone if schedule else "UTC"
    return [
        record.id,
        schedule.trigger_text if schedule else "?",
        schedule.timezone if schedule else "?",
        toned(record.state),
        _next_cell(record, tz, now_ms),
        _last_cell(record, now_ms),
    ]


def _next_cell(record: ScheduleRecord, tz: str, now_ms: int) -> Cell:
    if record.state is ScheduleState.DUE and record.due_ms is not None:
        retry = f", retry {record.attempt}" if record.attempt > 1 else ""
        overdue = "warn" if record.due_ms < now_ms - 1000 else None
        return Cell(f"{wall(record.due_ms, tz)} ({relative(record.due_ms, now_ms)}{retry})", overdue)
    if record.job_id:  # running, or paused with its last run still in flight
        fire = wall(record.fire_ms, tz) if record.fire_ms else "?"
        return Cell(f"{fire} ({_phase_text(record, now_ms)})", "busy")
    if record.state is ScheduleState.PAUSED:
        return Cell(_pause_text(record, tz, now_ms), "warn")
    return Cell("-")


def _pause_text(record: ScheduleRecord, tz: str, now_ms: int) -> str:
    """``resumes 18:00 (in 2h): "db migration"``, or ``-`` for a pause without an end
    or a note."""
    until = _time(record.raw.get("paused_until"))
    note = record.raw.get("pause_note", "")
    parts = [f"resumes {wall(until, tz)} ({relative(until, now_ms)})" if until is not None else ""]
    parts.append(f'"{first_line(note, 40)}"' if note else "")
    return ": ".join(p for p in parts if p) or "-"


def _phase_text(record: ScheduleRecord, now_ms: int) -> str:
    """``queued 12s`` (dispatched, no worker started it) or ``running 3s on w1``."""
    raw = record.raw
    if run_phase(record) is RunPhase.QUEUED:
        since = _time(raw.get("dispatched_at"))
        return f"queued {age(now_ms - since)}" if since else "queued"
    since = _time(raw.get("started_at"))
    took = f"running {age(now_ms - since)}" if since else "running"
    return f"{took} on {raw['worker']}" if raw.get("worker") else took


def _last_cell(record: ScheduleRecord, now_ms: int) -> Cell:
    if record.state is ScheduleState.BROKEN:
        return Cell(f"broken: {first_line(record.error or '?', 80)}", "bad")
    if record.last_result is None or record.last_run_ms is None:
        return Cell("-")
    text = f"{record.last_result} {relative(record.last_run_ms, now_ms)}"
    if record.last_result != "succeeded" and record.last_error:
        text += f": {first_line(_last_line(record.last_error), 60)}"
    return toned(text, "ok" if record.last_result == "succeeded" else "bad")


@click.command()
@id_argument()
@click.option(
    "-n", "count", default=20, type=click.IntRange(1, 10_000), help="How many entries, newest last."
)
@json_option
@pass_context
def history(ctx: Context, schedule_id: str, count: int, as_json: bool) -> None:
    """Show the history of ID: each dispatch with its attempt, job id, outcome, lateness
    (fire to start on a worker) and duration (start to end; dispatch to acknowledgement
    when a plain rq worker ran it); failures, give-ups, missed fires, alerts; and the
    edits (updated, paused, resumed, triggered), each with who made it (BY), what
    changed and its note.

    Times are on the schedule's own wall clock.

    \b
    Examples:
      rqbeat history nightly-report
      rqbeat history nightly-report -n 100 --json
    """
    record = ctx.client.get(schedule_id)  # not found → exit 1
    tz = record.schedule.timezone if record.schedule else "UTC"
    entries = ctx.client.history(schedule_id, count + _PAIRING_SLACK)
    lines = explain(entries, record.job_id, lambda ms: wall(ms, tz))[-count:]
    if as_json:
        echo_json([_history_json(line) for line in lines])
        return
    headers = [f"AT ({tz})", "EVENT", "BY", "FIRE", "ATTEMPT", "JOB", "LATE", "DURATION", "OUTCOME"]
    table(headers, [_history_row(line, tz) for line in lines])


def _history_row(line: Line, tz: str) -> list[Cell | str]:
    entry = line.entry
    return [
        wall(entry.at_ms, tz),
        toned(entry.event),
        line.by or "",  # filled for edits only: the column marks them beside the runs
        wall(line.fire_ms, tz) if line.fire_ms is not None else "",
        str(line.attempt) if line.attempt is not None else "",
        line.job_id or "",
        duration(max(0, line.lateness_ms)) if line.lateness_ms is not None else "",
        duration(max(0, line.duration_ms)) if line.duration_ms is not None else "",
        toned(
            first_line(line.outcome, 100),
            "bad" if entry.event in ("failed", "gave_up", "broken", "alert_failed") else None,
        ),
    ]


def _history_json(line: Line) -> dict[str, Any]:
    entry = line.entry
    return {
        "id": entry.entry_id,
        "at": iso(entry.at_ms),
        "event": entry.event,
        **entry.fields,
        **{k: number(entry.fields[k]) for k in _NUMBERS if k in entry.fields},
        "attempt": line.attempt,
        "duration_ms": line.duration_ms,
        "lateness_ms": line.lateness_ms,
        "run_outcome": line.run_outcome,
    }


@click.command(name="next")
@click.argument("expr")
@click.option("--tz", "timezone", default="UTC", help="IANA timezone the expression is read in.")
@click.option("-n", "count", default=5, type=click.IntRange(1, 10_000), help="How many fires.")
@click.option("--after", help="Start from this ISO time (default: now).")
@click.option("--id", "schedule_id", default="", help="Schedule id that H fields hash.")
@json_option
def next_fires(
    expr: str, timezone: str, count: int, after: str | None, schedule_id: str, as_json: bool
) -> None:
    """Preview the next fires of a cron EXPR: on the wall clock of --tz, in UTC, and
    how far from now (works without Redis).

    \b
    Example:
      rqbeat next "30 2 * * *" --tz Europe/Berlin -n 3 --after 2027-03-27T00:00:00Z
    """
    trigger = cron.cron_trigger(expr, timezone, schedule_id=schedule_id)
    now_ms = int(time.time() * 1000)
    fires = cron.next_fires(trigger, _parse_after(after, now_ms), count)
    if as_json:
        echo_json([{"utc": iso(f), "local": local_iso(f, timezone)} for f in fires])
        return
    rows = [[wall(f, timezone, zone=True), wall(f, "UTC"), relative(f, now_ms)] for f in fires]
    table([f"LOCAL ({timezone})", "UTC", "WHEN"], rows)


def _parse_after(after: str | None, now_ms: int) -> int:
    if after is None:
        return now_ms
    try:
        return parse_iso_ms(after)
    except ValueError:
        raise InvalidSchedule(
            "after", after, "must be an ISO time with a timezone, e.g. 2027-03-27T00:00:00Z"
        ) from None


def _last_line(error: str) -> str:
    """A traceback's last line names the exception; a one-line error is itself."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else error


def _time(value: str | None) -> int | None:
    try:
        return parse_iso_ms(value) if value else None
    except ValueError:
        return None


COMMANDS = [list_schedules, history, next_fires]
