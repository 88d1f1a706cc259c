"""``rqbeat next ID``: the next fires of a stored schedule, every setting applied
(crons, window, exclusions, runs left), with DST gaps and repeats flagged."""

from __future__ import annotations

from typing import Any

import click

from scheduler.cli.common import Context, echo_json, table
from scheduler.cli.render import Cell, local_iso, relative, toned, wall
from scheduler.clock import iso, redis_now_ms
from scheduler.errors import RqbeatError
from scheduler.preview import Preview, preview
from scheduler.protocol import RUNS_DONE_FIELD, ScheduleState


def show_stored(ctx: Context, schedule_id: str, count: int, after_ms: int | None, as_json: bool) -> None:
    """Print the preview of stored schedule ``schedule_id`` (not found → exit 1)."""
    record = ctx.client.get(schedule_id)
    if record.schedule is None:
        raise RqbeatError(f"schedule {schedule_id!r} is broken ({record.error}); nothing to preview")
    schedule = record.schedule
    now_ms = redis_now_ms(ctx.conn)
    runs_done = int(record.raw.get(RUNS_DONE_FIELD) or 0)
    if after_ms is None:
        # the pending fire is the next one (it may be overdue, or waiting for its retry)
        pending = record.fire_ms if record.state is ScheduleState.DUE and not record.job_id else None
        after_ms = now_ms if pending is None else min(now_ms, pending - 1)
    result = preview(schedule, after_ms, count, runs_done)
    tz = schedule.timezone
    if as_json:
        echo_json(_json(schedule_id, record.state, result, tz))
        return
    state = f" ({record.state})" if record.state is not ScheduleState.DUE else ""
    print_header = f"{schedule_id}{state}: {schedule.trigger_text} in {tz}"
    if schedule.max_concurrent is not None:  # overlap = allow_all
        print_header += f", overlap {schedule.overlap} (at most {schedule.max_concurrent} in flight)"
    rows = [
        [
            wall(row.fire_ms, tz, zone=True),
            wall(row.fire_ms, "UTC"),
            relative(row.fire_ms, now_ms),
            _note_cell(row.skipped, row.notes),
        ]
        for row in result.rows
    ]
    click.echo(print_header)
    if rows:
        table([f"LOCAL ({tz})", "UTC", "WHEN", "NOTE"], rows)
    if result.ends:
        click.echo(f"then no more fires: {result.ends}")


def _note_cell(skipped: bool, notes: tuple[str, ...]) -> Cell | str:
    """Skipped fires and DST notes stand out; an ordinary fire has no note."""
    return toned("; ".join(notes), "warn") if skipped or notes else ""


def _json(schedule_id: str, state: str, result: Preview, tz: str) -> dict[str, Any]:
    return {
        "id": schedule_id,
        "state": str(state),
        "fires": [
            {
                "utc": iso(row.fire_ms),
                "local": local_iso(row.fire_ms, tz),
                "skipped": row.skipped,
                "notes": list(row.notes),
            }
            for row in result.rows
        ],
        "ends": result.ends or None,
    }
