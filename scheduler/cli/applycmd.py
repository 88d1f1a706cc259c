"""``rqbeat apply``: make Redis match a TOML file, and say what that changed.

What it prints: a line per changed schedule (``+ id`` created, ``~ id: cron "a" ->
"b"`` updated, field by field, ``- id`` pruned) when there are at most
:data:`LINES_UP_TO` changes or with ``--verbose``, and with ``--dry-run`` always (the
diff is what a dry run is for); then one summary line. A progress bar goes to stderr
while a big file is written, only when stderr is a terminal. ``--quiet`` prints
nothing but errors; ``--json`` prints one object instead.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from scheduler import apply as applying
from scheduler.cli.audited import EditArgs, audit_options, edit_of
from scheduler.cli.common import (
    Context,
    allow_option,
    echo_json,
    json_option,
    parse_allow,
    pass_context,
)
from scheduler.cli.importcheck import Target, check_targets, import_options
from scheduler.cli.render import STYLES
from scheduler.errors import ConfigError
from scheduler.model import Schedule
from scheduler.store import Client, Rows, stored_of

#: Up to this many changes each gets its own line; beyond, only the summary (unless
#: --verbose). Also the size from which a write shows a progress bar on a terminal.
LINES_UP_TO = 20
_OUTCOMES = ("created", "updated", "unchanged", "pruned")
_SIGNS = {"+": "ok", "~": "warn", "-": "bad"}


@click.command(name="apply")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--prune",
    is_flag=True,
    help="Remove schedules this file's group created that it no longer lists.",
)
@click.option("--dry-run", is_flag=True, help="Show what would change, field by field; write nothing.")
@click.option("--group", help="Owner group of these schedules (default: the file name).")
@click.option("--verbose", "-v", is_flag=True, help=f"A line per changed schedule even beyond {LINES_UP_TO}.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@allow_option
@import_options("APPLY")
@audit_options
@json_option
@pass_context
def apply_file(
    ctx: Context,
    file: Path,
    prune: bool,
    dry_run: bool,
    group: str | None,
    verbose: bool,
    quiet: bool,
    allow: str | None,
    paths: tuple[str, ...],
    check_import: bool,
    by: str | None,
    note: str | None,
    as_json: bool,
) -> None:
    """Create, update (and with --prune remove) schedules to match a TOML FILE.

    The whole file is validated first; one invalid schedule means nothing is written.
    A schedule the file lists that another group, `rqbeat add` or the Python API made
    becomes this file's group's (shown as an owner change). Each change is recorded
    with --by and --note (`rqbeat log`). Targets that do not
    import here (from --path) are warned about, or refused with --check-import.

    \b
    Examples:
      rqbeat apply schedules.toml --dry-run
      rqbeat apply schedules.toml --prune
      rqbeat apply big.toml --quiet
      rqbeat apply schedules.toml --json

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
    started = time.monotonic()
    if quiet and (verbose or as_json):
        raise ConfigError("--quiet", True, "prints nothing: drop --verbose and --json")
    allowed = parse_allow(allow)
    edit = edit_of(by, note)
    group = group or applying.group_for(file)
    owner = f"apply:{group}"
    with _without_cycle_collection():
        schedules = applying.load_file(file, group=group)
        targets = [Target(s.id, s.target, f"schedules.{s.id}.target") for s in schedules]
        warnings = check_targets(targets, allowed, paths=paths, strict=check_import)
        rows = ctx.client.read_rows([s.id for s in schedules])
        existing = ctx.client.list() if prune else None
        plan = applying.plan(schedules, stored_of(rows), owner=owner, existing=existing)
        if not dry_run:
            changes = len(plan.create) + len(plan.update) + len(plan.prune)
            with _progress(changes, enabled=not quiet and changes > LINES_UP_TO) as advance:
                _write(ctx.client, plan, advance, edit, rows)
    elapsed_s = time.monotonic() - started
    warnings.echo()
    if quiet:
        return
    if as_json:
        echo_json(summary_json(plan, group=group, dry_run=dry_run, elapsed_s=elapsed_s))
        return
    if dry_run or verbose or _count(plan) <= LINES_UP_TO:
        for line in change_lines(plan):
            click.echo(line)
    click.echo(summary_line(plan, total=len(schedules), dry_run=dry_run, elapsed_s=elapsed_s))


@contextlib.contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Python's cycle collector off while a file is loaded and written: 100k schedules
    are millions of live objects that every full collection walks again (measured:
    about a third of apply's time), and apply makes next to no reference cycles, which
    the collector frees once it is back on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _write(
    client: Client, plan: applying.Plan, advance: Callable[[int], None], edit: EditArgs, rows: Rows
) -> None:
    # the rows the plan was made from: the write compares versions, never reads again
    client.upsert_many(plan.create + plan.update, progress=advance, read=rows, **edit)
    for schedule_id in plan.prune:
        client.remove(schedule_id, **edit)
        advance(1)


@contextlib.contextmanager
def _progress(total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A bar on stderr, only when it is a terminal: piped or logged output stays clean."""
    stderr = sys.stderr
    if not (enabled and stderr.isatty()):
        yield lambda _done: None
        return
    with click.progressbar(length=total, label="applying", file=stderr) as bar:
        yield bar.update


def _count(plan: applying.Plan) -> int:
    return len(plan.create) + len(plan.update) + len(plan.prune)


def change_lines(plan: applying.Plan) -> Iterator[str]:
    """``+ id``, ``~ id: key old -> new, ...`` and ``- id``, the sign coloured."""
    for schedule in plan.create:
        yield f"{_sign('+')} {schedule.id}"
    for schedule in plan.update:
        yield f"{_sign('~')} {schedule.id}: {_update_text(schedule, plan.before.get(schedule.id))}"
    for schedule_id in plan.prune:
        yield f"{_sign('-')} {schedule_id}"


def _sign(sign: str) -> str:
    return click.style(sign, **STYLES[_SIGNS[sign]])  # type: ignore[arg-type]


def _update_text(schedule: Schedule, before: str | None) -> str:
    changes = applying.field_changes(before, schedule)
    if changes is None:
        return "replaces a stored definition that cannot be read"
    if not changes:  # the same definition, stored as broken: the write re-arms it
        return "re-armed (it was broken)"
    return ", ".join(f"{c.key} {_value(c.old)} -> {_value(c.new)}" for c in changes)


def _value(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value, ensure_ascii=False)


def summary_line(plan: applying.Plan, *, total: int, dry_run: bool, elapsed_s: float) -> str:
    """``applied 100000 schedules: 99000 created, 1000 updated, 0 unchanged, 0 pruned in 3.4 s``."""
    moved = len(plan.owner_changes())
    taken = f" ({moved} from another owner)" if moved else ""
    created, updated, unchanged, pruned = (
        len(plan.create),
        len(plan.update),
        len(plan.unchanged),
        len(plan.prune),
    )
    schedules = f"{total} schedule{'' if total == 1 else 's'}"
    if dry_run:
        return (
            f"dry run, nothing written: {schedules}: {created} to create, {updated} to update"
            f"{taken}, {unchanged} unchanged, {pruned} to prune"
        )
    return (
        f"applied {schedules}: {created} created, {updated} updated{taken}, {unchanged} unchanged, "
        f"{pruned} pruned in {elapsed_s:.1f} s"
    )


def summary_json(plan: applying.Plan, *, group: str, dry_run: bool, elapsed_s: float) -> dict[str, Any]:
    """The counts, the ids by outcome, the owner changes (and with --dry-run each
    update's field changes)."""
    ids = {
        "created": [s.id for s in plan.create],
        "updated": [s.id for s in plan.update],
        "unchanged": [s.id for s in plan.unchanged],
        "pruned": list(plan.prune),
    }
    out: dict[str, Any] = {
        "group": group,
        "dry_run": dry_run,
        **ids,
        "counts": {k: len(ids[k]) for k in _OUTCOMES},
        "owner_changes": [{"id": c.id, "from": c.old, "to": c.new} for c in plan.owner_changes()],
        "seconds": round(elapsed_s, 3),
    }
    if dry_run:
        out["changes"] = {s.id: _changes_json(s, plan.before.get(s.id)) for s in plan.update}
    return out


def _changes_json(schedule: Schedule, before: str | None) -> dict[str, Any] | None:
    changes = applying.field_changes(before, schedule)
    return None if changes is None else {c.key: {"from": c.old, "to": c.new} for c in changes}


COMMANDS = [apply_file]
