"""Commands about one schedule that exists: show, rm, pause, resume, trigger (``add``
and ``set`` are in :mod:`scheduler.cli.edit`, ``apply`` in :mod:`scheduler.cli.applycmd`)."""

from __future__ import annotations

from typing import Any

import click

from scheduler.audit import parse_until
from scheduler.cli.audited import audit_options, edit_of
from scheduler.cli.common import Context, echo_json, json_option, pass_context
from scheduler.cli.complete import id_argument
from scheduler.cli.detail import detail_lines
from scheduler.cli.rows import record_json
from scheduler.clock import iso, redis_now_ms
from scheduler.engine import concurrent
from scheduler.errors import ScheduleNotFound
from scheduler.model import Overlap


@click.command()
@id_argument()
@json_option
@pass_context
def show(ctx: Context, schedule_id: str, as_json: bool) -> None:
    """Show one schedule: definition and state. Times are ISO UTC, with the schedule's
    own wall clock and how far from now; --json gives numbers as numbers.

    \b
    Example:
      rqbeat show nightly-report
      rqbeat show nightly-report --json
    """
    record = ctx.client.get(schedule_id)
    backfill = ctx.client.backfill_status(schedule_id)
    runs = concurrent.read_runs(ctx.conn, ctx.client.keys, schedule_id)
    if as_json:
        extra: dict[str, Any] = {} if backfill is None else {"backfill": backfill.to_json()}
        if runs or (record.schedule is not None and record.schedule.overlap is Overlap.ALLOW_ALL):
            extra["runs_in_flight"] = [_run_json(r) for r in runs]
        echo_json(record_json(record) | extra)
        return
    click.echo("\n".join(detail_lines(record, redis_now_ms(ctx.conn))))
    if runs or (record.schedule is not None and record.schedule.overlap is Overlap.ALLOW_ALL):
        cap = record.schedule.max_concurrent if record.schedule is not None else None
        click.echo(f"runs in flight: {len(runs)}" + (f" of at most {cap}" if cap else ""))
        for r in runs:
            click.echo(f"  fire {iso(r.fire_ms)}  job {r.job_id}  attempt {r.attempt}  {r.state}")
    if backfill is not None:  # its last backfill, running or finished
        click.echo(backfill.line())


def _run_json(run: concurrent.Run) -> dict[str, Any]:
    return {
        "fire_at": iso(run.fire_ms),
        "job_id": run.job_id,
        "attempt": run.attempt,
        "state": str(run.state),
        "epoch": run.epoch,
        "dispatched_at": run.dispatched_at,
        "queue": run.queue,
    }


@click.command(name="rm")
@id_argument("schedule_ids", metavar="ID...", nargs=-1, required=True)
@audit_options
@pass_context
def remove(ctx: Context, schedule_ids: tuple[str, ...], by: str | None, note: str | None) -> None:
    """Remove schedules and their history. A run in flight finishes; nothing re-arms.
    The removal is recorded in `rqbeat log`.

    \b
    Example:
      rqbeat rm nightly-report heartbeat --note "moved to the reports service"
    """
    edit = edit_of(by, note)
    missing = [s for s in schedule_ids if not ctx.client.remove(s, **edit)]
    for schedule_id in schedule_ids:
        if schedule_id not in missing:
            click.echo(f"removed {schedule_id}")
    if missing:
        raise ScheduleNotFound(", ".join(missing))


@click.command()
@id_argument()
@click.option(
    "--until",
    help="Resume by itself then: an ISO time with a timezone, or a duration from now (30m, 2h, 1d).",
)
@audit_options
@pass_context
def pause(ctx: Context, schedule_id: str, until: str | None, by: str | None, note: str | None) -> None:
    """Stop firing ID until resumed (a run in flight finishes). With --until the
    leader resumes it at that time, by itself (recorded as resumed by
    "rqbeat (until)"); fires that pass meanwhile are skipped, as with resume. Pausing
    a paused schedule with --note or --until replaces its note and until.

    \b
    Examples:
      rqbeat pause nightly-report --note "warehouse migration"
      rqbeat pause nightly-report --until 2h --note "deploy of the reports db"
      rqbeat pause nightly-report --until 2027-03-27T18:00:00Z
    """
    edit = edit_of(by, note)
    until_ms = parse_until(until, redis_now_ms(ctx.conn)) if until is not None else None
    changed = ctx.client.pause(schedule_id, until_ms=until_ms, **edit)
    if not changed:
        click.echo(f"{schedule_id} was already paused")
        return
    click.echo(f"paused {schedule_id}" + (f" until {iso(until_ms)}" if until_ms is not None else ""))


@click.command()
@id_argument()
@audit_options
@pass_context
def resume(ctx: Context, schedule_id: str, by: str | None, note: str | None) -> None:
    """Fire ID again, from its next fire after now (fires missed while paused are not run).

    \b
    Example:
      rqbeat resume nightly-report --note "migration done"
    """
    changed = ctx.client.resume(schedule_id, **edit_of(by, note))
    click.echo(f"resumed {schedule_id}" if changed else f"{schedule_id} was not paused")


@click.command()
@id_argument()
@audit_options
@pass_context
def trigger(ctx: Context, schedule_id: str, by: str | None, note: str | None) -> None:
    """Run ID once, now; its regular fires carry on.

    \b
    Example:
      rqbeat trigger nightly-report --note "rerun after the fix"
    """
    ctx.client.trigger(schedule_id, **edit_of(by, note))
    click.echo(f"triggered {schedule_id}")


COMMANDS = [show, remove, pause, resume, trigger]
