"""Who edits: ``--by`` and ``--note`` on every command that changes a schedule, and
``rqbeat log``, the namespace's edit log (:mod:`scheduler.audit`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict, TypeVar

import click

from scheduler.audit import Edit, cli_user
from scheduler.cli.common import Context, echo_json, json_option, pass_context, table
from scheduler.cli.render import Cell, first_line, toned, wall
from scheduler.clock import parse_iso_ms, redis_now_ms
from scheduler.durations import parse_duration_ms
from scheduler.editlog import LogEntry, read_log
from scheduler.errors import InvalidSchedule

F = TypeVar("F", bound=Callable[..., Any])


def audit_options(func: F) -> F:
    """``--by`` (default ``user@host``; ``RQBEAT_BY`` for every command) and ``--note``:
    who makes the edit and why, recorded with it in the history and ``rqbeat log``."""
    func = click.option("--note", help="Why: free text recorded with the edit (history, rqbeat log).")(func)
    return click.option(
        "--by",
        envvar="RQBEAT_BY",
        show_envvar=True,
        help="Who makes the edit, recorded with it [user@host].",
    )(func)


class EditArgs(TypedDict):
    """The ``by``/``note`` keyword arguments of a store call."""

    by: str
    note: str


def edit_of(by: str | None, note: str | None) -> EditArgs:
    """The ``by``/``note`` keyword arguments of a store call, validated (nothing is
    written when they are not: :class:`InvalidSchedule` exits 2)."""
    edit = Edit(by=cli_user() if by is None else by, note=note or "")
    return EditArgs(by=edit.by, note=edit.note)


@click.command(name="log")
@click.option("--since", help="Only edits after this: an ISO time, or a duration back from now (1h, 2d).")
@click.option("--id", "schedule_id", help="Only edits of this schedule.")
@click.option("--by", "by", help="Only edits by this (exact, as recorded).")
@click.option("-n", "count", default=50, type=click.IntRange(1, 10_000), help="How many edits, newest last.")
@json_option
@pass_context
def edit_log(
    ctx: Context, since: str | None, schedule_id: str | None, by: str | None, count: int, as_json: bool
) -> None:
    """Show the edit log of the namespace: who created, changed, paused, resumed,
    triggered, backfilled or removed which schedule, when, the version after it, what changed and
    the note. The log keeps about the last 10,000 edits.

    \b
    Examples:
      rqbeat log
      rqbeat log --since 2h --by deploy-bot
      rqbeat log --id nightly-report -n 10 --json
    """
    since_ms = _since_ms(since, redis_now_ms(ctx.conn)) if since else None
    entries = read_log(ctx.conn, ctx.client.keys, count, since_ms=since_ms, schedule_id=schedule_id, by=by)
    if as_json:
        echo_json([entry.to_json() for entry in entries])
        return
    table(["AT (UTC)", "ID", "EVENT", "VERSION", "BY", "CHANGED", "NOTE"], [_row(e) for e in entries])


def _row(entry: LogEntry) -> list[Cell | str]:
    return [
        wall(entry.at_ms, "UTC"),
        entry.schedule_id,
        toned(entry.event),
        entry.version,
        entry.by,
        first_line(entry.what(), 80),
        first_line(entry.note, 60),
    ]


def _since_ms(text: str, now_ms: int) -> int:
    value = text.strip()
    if value[:4].isdigit() and "-" in value:
        try:
            return parse_iso_ms(value)
        except ValueError:
            raise InvalidSchedule(
                "since", text, "must be an ISO time with a timezone (2027-03-27T18:00:00Z) or a duration (2h)"
            ) from None
    return now_ms - parse_duration_ms("since", value)


COMMANDS = [edit_log]
