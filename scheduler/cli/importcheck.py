"""Whether a schedule's target imports where ``add``/``set``/``apply`` run.

A target that does not import here is written with a warning: the code may live on
the workers only. ``--check-import`` refuses it instead (exit 2, nothing written),
for a machine that holds the app. The resolution is RQ's, through
:func:`scheduler.allow.resolve` (or, with ``--allow``, the allow-list's verdict, which
resolved it already), after ``--path`` went first on ``sys.path`` as it does for
``rqbeat worker``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from scheduler.allow import AllowList, Verdict, resolve
from scheduler.cli.common import add_import_paths, path_option, warn_by_name_only
from scheduler.errors import InvalidSchedule

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Target:
    """One schedule's target, and the input field to name when it is refused."""

    schedule_id: str
    target: str
    field: str = "target"


def import_options(command: str) -> Callable[[F], F]:
    """``--path``/``-P`` (as ``rqbeat worker``) and ``--check-import``."""

    def decorate(func: F) -> F:
        func = click.option(
            "--check-import",
            is_flag=True,
            envvar=f"RQBEAT_{command}_CHECK_IMPORT",
            show_envvar=True,
            help="Refuse a target that does not import here (exit 2, nothing written); "
            "without it, a warning.",
        )(func)
        return path_option(command)(func)

    return decorate


def check_targets(
    targets: Sequence[Target], allowed: AllowList | None, *, paths: Sequence[str], strict: bool
) -> Warnings:
    """Refuse (``InvalidSchedule``) what the allow-list refuses and, with ``strict``,
    a target that does not import. Returns the warnings about the rest that does not
    import, for the caller to print once it has written (a refused write warns of
    nothing)."""
    add_import_paths(paths)
    warnings = Warnings()
    # per target, not per schedule: a file of 100k schedules names a few functions, and
    # a failed import is retried (searched on disk) every time it is asked for
    reasons: dict[str, str | None] = {}
    for item in targets:
        verdict = allowed.check(item.target, field=item.field) if allowed is not None else None
        if verdict is not None:
            reason = None if verdict.resolved else verdict.reason
        else:
            if item.target not in reasons:
                walk = resolve(item.target)
                reasons[item.target] = walk if isinstance(walk, str) else None
            reason = reasons[item.target]
        if reason is None:
            continue
        if strict:
            raise InvalidSchedule(item.field, item.target, f"does not import here: {reason}")
        if verdict is not None:
            warnings.by_name.append((item.schedule_id, verdict))
        else:
            warnings.unimported.setdefault(reason, []).append(item)
    return warnings


@dataclass
class Warnings:
    """Deferred stderr lines (stdout stays clean for --json): one per schedule allowed
    by name only, one per reason a target does not import (a file of 500 schedules
    whose app is not here is one line, not 500)."""

    by_name: list[tuple[str, Verdict]] = field(default_factory=list)
    unimported: dict[str, list[Target]] = field(default_factory=dict)

    def echo(self) -> None:
        for schedule_id, verdict in self.by_name:
            warn_by_name_only(schedule_id, verdict)
        for reason, items in self.unimported.items():
            click.echo(f"warning: {_who(items)} not import here ({reason}); {_ANYWAY}", err=True)


_ANYWAY = "written anyway: workers must import it (rqbeat worker --path), or refuse with --check-import"
#: Schedules named in one warning line before "and N more".
NAMED = 3


def _who(items: list[Target]) -> str:
    if len(items) == 1:
        return f"{items[0].schedule_id}: target {items[0].target} does"
    named = ", ".join(i.schedule_id for i in items[:NAMED])
    more = f" and {len(items) - NAMED} more" if len(items) > NAMED else ""
    return f"{len(items)} schedules ({named}{more}): their targets do"
