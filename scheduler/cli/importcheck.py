"""Whether a schedule's target imports where ``add``/``set``/``apply`` run.

A target that does not import here is written with a warning: the code may live on
the workers only. ``--check-import`` refuses it instead (exit 2, nothing written),
for a machine that holds the app. The resolution is RQ's, through
:func:`scheduler.allow.resolve` (or, with ``--allow``, the allow-list's verdict, which
resolved it already), after ``--path`` went first on ``sys.path`` as it does for
``rqbeat worker``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
) -> None:
    """Refuse (``InvalidSchedule``) what the allow-list refuses and, with ``strict``,
    a target that does not import; warn (stderr) about the rest that does not import.
    Every target is checked before anything is printed or written."""
    add_import_paths(paths)
    warnings: list[Callable[[], None]] = []
    for item in targets:
        if allowed is not None:
            verdict = allowed.check(item.target, field=item.field)
            reason = None if verdict.resolved else verdict.reason
            warn = _by_name(item.schedule_id, verdict)
        else:
            walk = resolve(item.target)
            reason = walk if isinstance(walk, str) else None
            warn = _not_imported(item, reason or "")
        if reason is None:
            continue
        if strict:
            raise InvalidSchedule(item.field, item.target, f"does not import here: {reason}")
        warnings.append(warn)
    for warn in warnings:
        warn()


def _by_name(schedule_id: str, verdict: Verdict) -> Callable[[], None]:
    return lambda: warn_by_name_only(schedule_id, verdict)


def _not_imported(item: Target, reason: str) -> Callable[[], None]:
    """One stderr line (stdout stays clean for --json)."""
    return lambda: click.echo(
        f"warning: {item.schedule_id}: target {item.target} does not import here ({reason}); "
        "written anyway: workers must import it (rqbeat worker --path), or refuse with --check-import",
        err=True,
    )
