"""Commands that change schedules, and show one: add, apply, show, rm, pause, resume,
trigger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scheduler import apply as applying
from scheduler.allow import Verdict
from scheduler.cli.common import (
    Context,
    allow_option,
    echo_json,
    json_option,
    parse_allow,
    pass_context,
    utc_iso,
)
from scheduler.cli.rows import record_json
from scheduler.errors import ScheduleNotFound
from scheduler.model import Misfire, Schedule

_DURATION = "Duration: seconds or 30s, 10m, 2h, 1d."


@click.command()
@click.argument("schedule_id", metavar="ID")
@click.argument("target")
@click.option(
    "--cron", "cron_expr", envvar="RQBEAT_ADD_CRON", help="Cron expression; 6 fields = seconds first."
)
@click.option("--every", help=f"Fixed interval instead of cron. {_DURATION}")
@click.option(
    "--args",
    "args_json",
    envvar="RQBEAT_ADD_ARGS",
    help="Positional arguments as a JSON list, e.g. '[1, \"a\"]'.",
)
@click.option(
    "--kwargs", "kwargs_json", envvar="RQBEAT_ADD_KWARGS", help="Keyword arguments as a JSON object."
)
@click.option(
    "--tz",
    "timezone",
    envvar="RQBEAT_ADD_TZ",
    default="UTC",
    help="IANA timezone the cron expression is read in.",
)
@click.option("--queue", default="default", help="RQ queue the jobs go to.")
@click.option("--timeout", help=f"RQ job timeout. {_DURATION}")
@click.option("--ttl", help=f"How long a job may wait in the queue. {_DURATION}")
@click.option("--result-ttl", help=f"How long RQ keeps a result. {_DURATION}")
@click.option("--failure-ttl", help=f"How long RQ keeps a failed job. {_DURATION}")
@click.option("--description", help="Free text shown by `rqbeat show`.")
@click.option(
    "--misfire",
    type=click.Choice([m.value for m in Misfire]),
    default="coalesce",
    help="Fires missed while down or busy: one run, every one, or none.",
)
@click.option("--catchup-window", help=f"Drop missed fires older than this. {_DURATION}")
@click.option("--jitter", help=f"Random delay up to this, never past the next fire. {_DURATION}")
@click.option("--max-attempts", type=int, help="Give a fire up after this many failed runs.")
@click.option("--pause-on-failure", is_flag=True, help="Pause the schedule when a run fails.")
@allow_option
@json_option
@pass_context
def add(ctx: Context, /, schedule_id: str, target: str, as_json: bool, **options: Any) -> None:
    """Create or update the schedule ID that calls TARGET (pkg.module.func).

    \b
    Examples:
      rqbeat add nightly-report app.jobs.report --cron "30 2 * * *" --tz Europe/Berlin
      rqbeat add heartbeat app.jobs.ping --every 30s --args '["eu-1"]'
      rqbeat add report myapp.jobs.report --cron @daily --allow myapp.jobs
    """
    allow = parse_allow(options.pop("allow"))
    raw: dict[str, Any] = {"id": schedule_id, "target": target}
    renames = {
        "cron_expr": "cron",
        "args_json": "args",
        "kwargs_json": "kwargs",
        "timezone": "timezone",
    }
    for name, value in options.items():
        if value is not None and value is not False:
            raw[renames.get(name, name)] = value
    schedule = Schedule.from_dict(raw, owner="cli")
    if allow is not None:
        verdict = allow.check(schedule.target)
        if not verdict.resolved:
            warn_by_name_only(schedule.id, verdict)
    result = ctx.client.upsert(schedule)
    record = ctx.client.get(schedule.id)
    if as_json:
        echo_json(
            {
                "id": result.id,
                "action": result.action,
                "version": result.version,
                **record_json(record),
            }
        )
        return
    next_text = f", next fire {utc_iso(record.fire_ms)}" if record.fire_ms else ""
    click.echo(f"{result.action} {result.id} (version {result.version}){next_text}")


@click.command(name="apply")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--prune",
    is_flag=True,
    help="Remove schedules this file's group created that it no longer lists.",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--group", help="Owner group of these schedules (default: the file name).")
@allow_option
@json_option
@pass_context
def apply_file(
    ctx: Context,
    file: Path,
    prune: bool,
    dry_run: bool,
    group: str | None,
    allow: str | None,
    as_json: bool,
) -> None:
    """Create, update (and with --prune remove) schedules to match a TOML FILE.

    The whole file is validated first; one invalid schedule means nothing is written.

    \b
    Examples:
      rqbeat apply schedules.toml --dry-run
      rqbeat apply schedules.toml --prune

    \b
    A file:
    [defaults]
    queue = "reports"
    [schedules.nightly-report]
    target = "app.jobs.report"
    cron = "30 2 * * *"
    timezone = "Europe/Berlin"

    Example: rqbeat apply schedules.toml --prune --allow myapp.jobs
    """
    allowed = parse_allow(allow)
    group = group or applying.group_for(file)
    schedules = applying.load_file(file, group=group)
    for schedule_id, verdict in applying.check_allowed(schedules, allowed):
        warn_by_name_only(schedule_id, verdict)
    owner = f"apply:{group}"
    stored = ctx.client.stored([s.id for s in schedules])
    existing = ctx.client.list() if prune else None
    plan = applying.plan(schedules, stored, owner=owner, existing=existing)
    if not dry_run:
        ctx.client.upsert_many(plan.create + plan.update)
        for schedule_id in plan.prune:
            ctx.client.remove(schedule_id)
    summary: dict[str, Any] = {
        "group": group,
        "dry_run": dry_run,
        "created": [s.id for s in plan.create],
        "updated": [s.id for s in plan.update],
        "unchanged": [s.id for s in plan.unchanged],
        "pruned": plan.prune,
    }
    if as_json:
        echo_json(summary)
        return
    verb = "would be " if dry_run else ""
    for key in ("created", "updated", "pruned"):
        for schedule_id in summary[key]:
            click.echo(f"{verb}{key} {schedule_id}")
    counts = ", ".join(f"{len(summary[k])} {verb}{k}" for k in ("created", "updated", "unchanged", "pruned"))
    click.echo(f"{file}: {counts}")


def warn_by_name_only(schedule_id: str, verdict: Verdict) -> None:
    """One stderr line (stdout stays clean for --json): the target was allowed by its
    name alone because it does not import where this command runs."""
    click.echo(
        f"warning: {schedule_id}: target {verdict.target} allowed by name only, it does not import here "
        f"({verdict.reason}); replicas that import it check it in full",
        err=True,
    )


@click.command()
@click.argument("schedule_id", metavar="ID")
@json_option
@pass_context
def show(ctx: Context, schedule_id: str, as_json: bool) -> None:
    """Show one schedule: definition and state.

    \b
    Example:
      rqbeat show nightly-report --json
    """
    record = ctx.client.get(schedule_id)
    data = record_json(record)
    if as_json:
        echo_json(data)
        return
    definition = data.pop("definition") or {}
    for key, value in {**definition, **data}.items():
        if value not in (None, "", [], {}):
            click.echo(f"{key + ':':<16}{value}")


@click.command(name="rm")
@click.argument("schedule_ids", metavar="ID...", nargs=-1, required=True)
@pass_context
def remove(ctx: Context, schedule_ids: tuple[str, ...]) -> None:
    """Remove schedules and their history. A run in flight finishes; nothing re-arms.

    \b
    Example:
      rqbeat rm nightly-report heartbeat
    """
    missing = [s for s in schedule_ids if not ctx.client.remove(s)]
    for schedule_id in schedule_ids:
        if schedule_id not in missing:
            click.echo(f"removed {schedule_id}")
    if missing:
        raise ScheduleNotFound(", ".join(missing))


@click.command()
@click.argument("schedule_id", metavar="ID")
@pass_context
def pause(ctx: Context, schedule_id: str) -> None:
    """Stop firing ID until resumed (a run in flight finishes).

    \b
    Example:
      rqbeat pause nightly-report
    """
    changed = ctx.client.pause(schedule_id)
    click.echo(f"paused {schedule_id}" if changed else f"{schedule_id} was already paused")


@click.command()
@click.argument("schedule_id", metavar="ID")
@pass_context
def resume(ctx: Context, schedule_id: str) -> None:
    """Fire ID again, from its next fire after now (fires missed while paused are not run).

    \b
    Example:
      rqbeat resume nightly-report
    """
    changed = ctx.client.resume(schedule_id)
    click.echo(f"resumed {schedule_id}" if changed else f"{schedule_id} was not paused")


@click.command()
@click.argument("schedule_id", metavar="ID")
@pass_context
def trigger(ctx: Context, schedule_id: str) -> None:
    """Run ID once, now; its regular fires carry on.

    \b
    Example:
      rqbeat trigger nightly-report
    """
    ctx.client.trigger(schedule_id)
    click.echo(f"triggered {schedule_id}")


COMMANDS = [add, apply_file, show, remove, pause, resume, trigger]
