"""Commands that write one schedule: ``add`` (a new one, or ``--replace``) and ``set``
(some settings of an existing one). Both take the same setting options, defined once
in :func:`setting_options`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from scheduler.cli.audited import audit_options, edit_of
from scheduler.cli.common import (
    Context,
    allow_option,
    echo_json,
    json_option,
    parse_allow,
    pass_context,
    utc_iso,
)
from scheduler.cli.complete import id_argument
from scheduler.cli.importcheck import Target, check_targets, import_options
from scheduler.cli.rows import record_json
from scheduler.errors import InvalidSchedule, ScheduleExists
from scheduler.model import Misfire, Overlap, Schedule
from scheduler.protocol import ScheduleState
from scheduler.store import UpsertResult

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = "Duration: seconds or 30s, 10m, 2h, 1d."
#: The options' Python names that differ from the settings' keys (Schedule.from_dict).
_KEYS = {"cron_expr": "cron", "args_json": "args", "kwargs_json": "kwargs"}
#: The settings `set --unset` can put back to their defaults, as typed (dashes).
UNSETTABLE = (
    "args",
    "kwargs",
    "timezone",
    "queue",
    "timeout",
    "ttl",
    "result-ttl",
    "failure-ttl",
    "description",
    "misfire",
    "catchup-window",
    "overlap",
    "max-concurrent",
    "jitter",
    "max-attempts",
    "webhook",
    "max-queued",
    "stale-after",
    "start-at",
    "end-at",
    "max-runs",
    "exclude",
)

_SETTINGS = [
    click.option(
        "--cron",
        "cron_expr",
        multiple=True,
        help="Cron expression; 6 fields = seconds first. Repeat for several: their fires' union.",
    ),
    click.option("--every", help=f"Fixed interval instead of cron. {_DURATION}"),
    click.option("--args", "args_json", help="Positional arguments as a JSON list, e.g. '[1, \"a\"]'."),
    click.option("--kwargs", "kwargs_json", help="Keyword arguments as a JSON object."),
    click.option("--tz", "--timezone", "timezone", help="IANA timezone of the cron expression [UTC]."),
    click.option("--queue", help="RQ queue the jobs go to [default]."),
    click.option("--timeout", help=f"RQ job timeout. {_DURATION}"),
    click.option("--ttl", help=f"How long a job may wait in the queue. {_DURATION}"),
    click.option("--result-ttl", help=f"How long RQ keeps a result. {_DURATION}"),
    click.option("--failure-ttl", help=f"How long RQ keeps a failed job. {_DURATION}"),
    click.option("--description", help="Free text shown by `rqbeat show`."),
    click.option(
        "--misfire",
        type=click.Choice([m.value for m in Misfire]),
        help="Fires missed while down or busy: one run, every one, or none [coalesce].",
    ),
    click.option("--catchup-window", help=f"Drop missed fires older than this. {_DURATION}"),
    click.option(
        "--overlap",
        type=click.Choice([o.value for o in Overlap]),
        help="Fires passing during a run: to the misfire policy, the latest waits, each waits, "
        "the newest stops the run and runs, or each runs beside the others [skip].",
    ),
    click.option(
        "--max-concurrent",
        type=int,
        help="With --overlap allow_all (required there): at most this many runs in flight at once.",
    ),
    click.option("--jitter", help=f"Random delay up to this, never past the next fire. {_DURATION}"),
    click.option("--max-attempts", type=int, help="Give a fire up after this many failed runs."),
    click.option(
        "--max-queued",
        help=f"Report a run not started by a worker after this [max(60s, one period)]. {_DURATION}",
    ),
    click.option(
        "--stale-after",
        help=f"Report the schedule when no run succeeded for this [max(5m, 3 periods)]. {_DURATION}",
    ),
    click.option(
        "--pause-on-failure/--no-pause-on-failure",
        default=None,
        show_default=False,
        help="Pause the schedule when a run fails [no].",
    ),
    click.option("--webhook", help="URL the leader POSTs this schedule's alerts to (signed JSON)."),
    click.option(
        "--metrics/--no-metrics",
        default=None,
        show_default=False,
        help="Export this schedule's own Prometheus series [no].",
    ),
    click.option("--start-at", help="No fire before this ISO time (no offset: in --tz)."),
    click.option("--end-at", help="No fire after this ISO time; then the schedule is completed."),
    click.option("--max-runs", type=int, help="Completed after this many successful runs."),
    click.option(
        "--exclude",
        multiple=True,
        help="Skip fires on this date (2026-12-25), date range (2026-12-24..2026-12-26) or "
        "cron mask ('* 0-6 * * *'), in --tz (repeatable; replaces the list).",
    ),
]


def setting_options(func: F) -> F:
    """The schedule's settings as options; one not given is None (``set`` keeps it,
    ``add`` takes the default)."""
    for option in reversed(_SETTINGS):
        func = option(func)
    return func


def settings_given(options: dict[str, Any]) -> dict[str, Any]:
    """The setting options that were given, under the keys of ``Schedule.from_dict``."""
    # a repeatable option not given is an empty tuple
    return {_KEYS.get(name, name): value for name, value in options.items() if value not in (None, ())}


@click.command()
@click.argument("schedule_id", metavar="ID")
@click.argument("target")
@setting_options
@click.option(
    "--replace",
    is_flag=True,
    help="If ID exists, overwrite it with this definition (settings not given go back "
    "to their defaults; `rqbeat set` changes only some).",
)
@allow_option
@import_options("ADD")
@audit_options
@json_option
@pass_context
def add(
    ctx: Context,
    /,
    schedule_id: str,
    target: str,
    replace: bool,
    allow: str | None,
    paths: tuple[str, ...],
    check_import: bool,
    by: str | None,
    note: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Create the schedule ID that calls TARGET (pkg.module.func).

    An existing ID is refused (nothing is written) unless --replace is given. A
    TARGET that does not import here (from --path, default the current directory) is
    written with a warning, or refused with --check-import.

    \b
    Examples:
      rqbeat add nightly-report app.jobs.report --cron "30 2 * * *" --tz Europe/Berlin
      rqbeat add heartbeat app.jobs.ping --every 30s --args '["eu-1"]'
      rqbeat add heartbeat app.jobs.ping --every 20s --replace
      rqbeat add report myapp.jobs.report --cron @daily --allow myapp.jobs
      rqbeat add standup app.jobs.remind --cron "0 9 * * 1-5" --cron "0 12 * * 6" \\
          --tz Europe/Berlin --exclude 2026-12-24..2026-12-26 --end-at 2027-06-30T18:00
    """
    allowed = parse_allow(allow)
    edit = edit_of(by, note)
    raw = {"id": schedule_id, "target": target, **settings_given(options)}
    schedule = Schedule.from_dict(raw, owner="cli")
    warnings = check_targets(
        [Target(schedule.id, schedule.target)], allowed, paths=paths, strict=check_import
    )
    try:
        result = ctx.client.upsert(schedule, version=None if replace else 0, **edit)
    except ScheduleExists as exc:
        raise click.ClickException(
            f"{exc}; nothing written (overwrite it: add --replace; change some settings: "
            f"rqbeat set {schedule_id} ...)"
        ) from None
    _echo_result(ctx, result, as_json)
    warnings.echo()


@click.command(name="set")
@id_argument()
@click.option("--target", help="The function to call: pkg.module.func.")
@setting_options
@click.option(
    "--unset",
    multiple=True,
    type=click.Choice(UNSETTABLE),
    help="Put this setting back to its default (repeatable).",
)
@allow_option
@import_options("SET")
@audit_options
@json_option
@pass_context
def set_settings(
    ctx: Context,
    /,
    schedule_id: str,
    target: str | None,
    unset: tuple[str, ...],
    allow: str | None,
    paths: tuple[str, ...],
    check_import: bool,
    by: str | None,
    note: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Change some settings of the schedule ID; the others (args included) stay.

    Validated like add; nothing is written on an error. Setting --cron drops --every
    and the other way round. The version goes up by one (nothing changes when the
    settings are already so: "unchanged"). A compare-and-set on the version read: an
    edit that someone made meanwhile is read again, never overwritten. A --target
    that does not import here is a warning, or refused with --check-import.

    \b
    Examples:
      rqbeat set heartbeat --every 20s
      rqbeat set nightly-report --cron "0 3 * * *" --queue reports
      rqbeat set nightly-report --unset max-attempts --no-pause-on-failure
    """
    changes = settings_given({"target": target, **options})
    for name in unset:
        key = name.replace("-", "_")
        if key in changes:
            raise InvalidSchedule(key, changes[key], "is both given and --unset")
        changes[key] = None
    if not changes:
        raise click.UsageError("Nothing to change: give at least one setting", click.get_current_context())
    allowed = parse_allow(allow)
    edit = edit_of(by, note)
    # an unchanged target was checked when it was written
    checked = [Target(schedule_id, target)] if target is not None else []
    warnings = check_targets(checked, allowed, paths=paths, strict=check_import)
    result = ctx.client_allowing(allowed).edit(schedule_id, changes, **edit)
    _echo_result(ctx, result, as_json)
    warnings.echo()


def _echo_result(ctx: Context, result: UpsertResult, as_json: bool) -> None:
    record = ctx.client.get(result.id)
    if as_json:
        echo_json(
            {"id": result.id, "action": result.action, "version": result.version, **record_json(record)}
        )
        return
    next_text = f", next fire {utc_iso(record.fire_ms)}" if record.fire_ms else ""
    if record.state is ScheduleState.COMPLETED:
        next_text = ", completed: no fire left (end_at passed or max_runs reached)"
    click.echo(f"{result.action} {result.id} (version {result.version}){next_text}")
    owner = record.schedule.owner if record.schedule else "cli"
    if result.action == "updated" and owner.startswith("apply:"):
        click.echo(
            f"note: {result.id} belongs to the group {owner.removeprefix('apply:')}: "
            "applying its file again puts the file's settings back",
            err=True,
        )


COMMANDS = [add, set_settings]
