"""What every command shares: the context object, ``--json`` and output helpers."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
from redis import Redis

from scheduler.allow import AllowList
from scheduler.clock import iso
from scheduler.redisconf import RedisSettings
from scheduler.store import Client

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    """Where Redis is and which namespace to use; connects on first use."""

    redis: RedisSettings
    namespace: str

    @cached_property
    def conn(self) -> Redis:
        return self.redis.connect()

    @cached_property
    def client(self) -> Client:
        return Client(self.conn, self.namespace)

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


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """An aligned plain-text table; the header is bold on a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    click.echo(click.style(line, bold=True))
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def relative(ms: int, now_ms: int) -> str:
    """``in 4m12s`` / ``3s ago``, rounded to the two largest units."""
    delta = abs(ms - now_ms) // 1000
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if delta >= size or (unit == "s" and not parts):
            parts.append(f"{delta // size}{unit}")
            delta %= size
        if len(parts) == 2:
            break
    text = "".join(parts)
    return f"in {text}" if ms >= now_ms else f"{text} ago"


def local_iso(ms: int, tz: str) -> str:
    """The instant in ``tz`` with its offset, to the second."""
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(tz))
    return moment.isoformat(timespec="seconds")


def utc_iso(ms: int) -> str:
    return iso(ms)
