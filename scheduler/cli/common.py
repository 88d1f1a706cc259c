"""What every command shares: the context object, ``--json`` and output helpers."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import click
from redis import Redis

from scheduler.allow import AllowList, Verdict
from scheduler.cli.connopts import redis_settings
from scheduler.cli.render import Cell, local_iso, relative, table_lines
from scheduler.clock import iso
from scheduler.keys import DEFAULT_NAMESPACE
from scheduler.redisconf import RedisSettings
from scheduler.store import Client

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "Context",
    "pass_context",
    "json_option",
    "echo_json",
    "echo_json_array",
    "table",
    "relative",
    "local_iso",
    "utc_iso",
]


@dataclass
class Context:
    """The global options in effect (:mod:`scheduler.cli.connopts`: the group's, then
    the command's over them). Settings are resolved, and Redis connected, on first
    use: by then the command's own options have been read."""

    options: Mapping[str, Any]

    @cached_property
    def redis(self) -> RedisSettings:
        return redis_settings(self.options)

    @property
    def namespace(self) -> str:
        return str(self.options.get("namespace") or DEFAULT_NAMESPACE)

    @cached_property
    def conn(self) -> Redis:
        return self.redis.connect(namespace=self.namespace)

    @cached_property
    def client(self) -> Client:
        return Client(self.conn, self.namespace)

    def client_allowing(self, allow: AllowList | None) -> Client:
        """A client that refuses targets outside ``allow`` (the shared one when None)."""
        return self.client if allow is None else Client(self.conn, self.namespace, allow=allow)

    def close(self) -> None:
        """Close the connection pool if a command opened one."""
        if "conn" in self.__dict__:
            self.conn.close()


pass_context = click.make_pass_decorator(Context)


def json_option(func: F) -> F:
    """``--json``: machine-readable output instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def allow_option(func: F) -> F:
    """``--allow`` / ``RQBEAT_ALLOW``: the module prefixes targets may call."""
    return click.option(
        "--allow",
        envvar="RQBEAT_ALLOW",
        show_envvar=True,
        help="Comma-separated module prefixes that targets may call, e.g. myapp.jobs,reports "
        "(whole dotted segments; unset: any).",
    )(func)


def parse_allow(text: str | None) -> AllowList | None:
    return AllowList.parse(text, setting="--allow")


def warn_by_name_only(schedule_id: str, verdict: Verdict) -> None:
    """One stderr line (stdout stays clean for --json): the target was allowed by its
    name alone because it does not import where this command runs."""
    click.echo(
        f"warning: {schedule_id}: target {verdict.target} allowed by name only, it does not import here "
        f"({verdict.reason}); replicas that import it check it in full",
        err=True,
    )


def path_option(command: str) -> Callable[[F], F]:
    """``--path``/``-P``, as ``rq worker`` has it: where the app's modules are found."""
    return click.option(
        "--path",
        "-P",
        "paths",
        multiple=True,
        default=["."],
        show_default=True,
        envvar=f"RQBEAT_{command}_PATH",
        show_envvar=True,
        help="Directory to import the app's modules from, put first on sys.path (repeatable).",
    )


def add_import_paths(paths: Sequence[str]) -> None:
    """Put ``paths`` first on ``sys.path``, in the order given, as absolute paths (a
    console script's ``sys.path`` does not hold the current directory, where a user's
    app usually is; ``rq worker -P`` appends, rqbeat puts the app first, as ``python``
    does for a script's directory)."""
    for path in reversed(paths):
        absolute = os.path.abspath(path)
        if absolute in sys.path:
            sys.path.remove(absolute)
        sys.path.insert(0, absolute)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def echo_json_array(items: Iterable[Any], chunk: int = 1000) -> None:
    """A JSON array with one compact item per line: still one JSON document, but fast
    for 100k items (``indent=`` falls back to the pure-Python encoder) and greppable."""
    lines: list[str] = []
    opened = False
    for item in items:
        lines.append(json.dumps(item, sort_keys=True, ensure_ascii=False))
        if len(lines) >= chunk:
            click.echo(("[\n" if not opened else ",\n") + ",\n".join(lines), nl=False)
            opened, lines = True, []
    if lines:
        click.echo(("[\n" if not opened else ",\n") + ",\n".join(lines), nl=False)
        opened = True
    click.echo("\n]" if opened else "[]")


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell | str]]) -> None:
    """An aligned table; colours only reach a terminal (and never with NO_COLOR)."""
    click.echo("\n".join(table_lines(headers, rows)))


def utc_iso(ms: int) -> str:
    return iso(ms)
