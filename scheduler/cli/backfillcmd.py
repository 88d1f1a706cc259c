"""``rqbeat backfill``: run each fire of a past window once, see how far it got, stop it."""

from __future__ import annotations

import sys
import time

import click

from scheduler.backfill import Plan, parse_time
from scheduler.cli.audited import audit_options, edit_of
from scheduler.cli.common import Context, echo_json, json_option, pass_context
from scheduler.cli.complete import id_argument
from scheduler.cli.render import wall
from scheduler.clock import iso
from scheduler.errors import RqbeatError
from scheduler.protocol import BackfillOverlap, BackfillState

#: How often --wait reads the progress.
POLL_S = 0.5


@click.command(name="backfill")
@id_argument()
@click.option("--from", "start", metavar="ISO", help="Start of the window (inclusive).")
@click.option("--to", "end", metavar="ISO", help="End of the window (exclusive); not after now.")
@click.option(
    "--overlap",
    type=click.Choice([o.value for o in BackfillOverlap]),
    default=BackfillOverlap.ALLOW.value,
    help="skip: run a backfill fire only while the schedule has no live run in flight.",
)
@click.option("--force", is_flag=True, help="Run fires that already ran to success too.")
@click.option("--dry-run", is_flag=True, help="List the fires it would run and skip; write nothing.")
@click.option("--status", "show_status", is_flag=True, help="Show the progress of ID's last backfill.")
@click.option("--cancel", is_flag=True, help="Stop ID's running backfill (a run in flight finishes).")
@click.option(
    "--wait/--no-wait",
    default=None,
    help="Follow the progress until it finishes [--wait on a terminal, else --no-wait].",
)
@audit_options
@json_option
@pass_context
def backfill_cmd(
    ctx: Context,
    schedule_id: str,
    start: str | None,
    end: str | None,
    overlap: str,
    force: bool,
    dry_run: bool,
    show_status: bool,
    cancel: bool,
    wait: bool | None,
    by: str | None,
    note: str | None,
    as_json: bool,
) -> None:
    """Run each fire of ID in [--from, --to) once, oldest first, beside its live fires.

    The leader runs one backfill fire at a time through the same fenced dispatch as
    live fires (history, metrics, an idempotency key of its own per fire:
    <id>:<fire ms>:backfill), and moves on only after the run is acknowledged; a
    leader change neither loses nor repeats a fire. Fires that already ran to success
    are skipped unless --force. A time without an offset is read in ID's timezone.
    At most 10,000 fires per backfill.

    \b
    Example:
      rqbeat backfill nightly-report --from 2026-11-01 --to 2026-12-01 --dry-run
      rqbeat backfill nightly-report --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z
      rqbeat backfill nightly-report --status
      rqbeat backfill nightly-report --cancel --note "upstream is down"

    The start and a --cancel are audited (--by, --note) in ID's history and in
    `rqbeat log`.
    """
    edit = edit_of(by, note)  # validated before anything is read or written
    if show_status or cancel:
        if start is not None or end is not None or dry_run or force:
            raise click.UsageError("--status and --cancel take no window, --dry-run or --force")
        if cancel:
            stopped = ctx.client.cancel_backfill(schedule_id, **edit)
            click.echo(
                f"canceled the backfill of {schedule_id}"
                if stopped
                else f"{schedule_id} has no running backfill"
            )
            return
        _show(ctx, schedule_id, as_json)
        return
    if start is None or end is None:
        raise click.UsageError("--from and --to are required (or --status / --cancel)")
    record = ctx.client.get(schedule_id)
    if record.schedule is None:
        raise RqbeatError(f"schedule {schedule_id!r} is broken ({record.error}); apply a valid definition")
    tz = record.schedule.timezone
    from_ms, to_ms = parse_time("from", start, tz), parse_time("to", end, tz)
    the_plan = ctx.client.backfill(
        schedule_id,
        from_ms,
        to_ms,
        overlap=BackfillOverlap(overlap),
        force=force,
        dry_run=dry_run,
        **edit,
    )
    if dry_run:
        _show_plan(the_plan, tz, as_json)
        return
    if as_json:
        echo_json(_plan_json(the_plan, tz) | {"started": True})
    else:
        skipped = f", {len(the_plan.skipped)} already succeeded (skipped)" if the_plan.skipped else ""
        click.echo(
            f"started backfill of {schedule_id}: {len(the_plan.to_run)} fires to run in "
            f"[{iso(from_ms)}, {iso(to_ms)}){skipped}"
        )
    if wait if wait is not None else (sys.stdout.isatty() and not as_json):
        _follow(ctx, schedule_id)


def _show(ctx: Context, schedule_id: str, as_json: bool) -> None:
    ctx.client.get(schedule_id)  # ScheduleNotFound for an unknown id
    status = ctx.client.backfill_status(schedule_id)
    if as_json:
        echo_json(None if status is None else status.to_json())
    elif status is None:
        click.echo(f"{schedule_id} has no backfill")
    else:
        click.echo(status.line())


def _follow(ctx: Context, schedule_id: str) -> None:
    """Print the progress as it changes (one line rewritten on a terminal) until the
    backfill is no longer active. Ctrl-C stops following, not the backfill."""
    tty = sys.stdout.isatty()
    last = ""
    try:
        while True:
            status = ctx.client.backfill_status(schedule_id)
            if status is None:
                return
            line = status.line()
            if line != last:
                click.echo(f"\r\033[K{line}" if tty else line, nl=not tty)
                last = line
            if status.state is not BackfillState.ACTIVE:
                if tty:
                    click.echo()
                return
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; the backfill goes on (rqbeat backfill {schedule_id} --status)")


def _plan_json(the_plan: Plan, tz: str) -> dict[str, object]:
    return {
        "schedule": the_plan.schedule_id,
        "from": iso(the_plan.from_ms),
        "to": iso(the_plan.to_ms),
        "timezone": tz,
        "fires": len(the_plan.fires),
        "run": [iso(f) for f in the_plan.to_run],
        "skip": [iso(f) for f in the_plan.skipped],
        "force": the_plan.force,
        "overlap": str(the_plan.overlap),
    }


def _show_plan(the_plan: Plan, tz: str, as_json: bool) -> None:
    if as_json:
        echo_json(_plan_json(the_plan, tz))
        return
    skipped = set(the_plan.skipped)
    click.echo(
        f"would run {len(the_plan.to_run)} of {len(the_plan.fires)} fires of {the_plan.schedule_id} "
        f"in [{iso(the_plan.from_ms)}, {iso(the_plan.to_ms)}), oldest first (dry run: nothing written)"
    )
    for fire in the_plan.fires:
        what = "skip (already succeeded)" if fire in skipped else "run"
        click.echo(f"  {iso(fire)}  {wall(fire, tz, zone=True)}  {what}")


COMMANDS = [backfill_cmd]
