"""The global options, which say where Redis is and which namespace to use.

Each is defined once here and accepted both before the command (``rqbeat -u URL ls``,
on the group) and after it (``rqbeat ls -u URL``, added to every command by
:func:`add_to_command`), with one environment variable (``RQBEAT_REDIS_URL``,
``RQBEAT_SENTINEL``, ``RQBEAT_TLS_CA_CERT``, ...). The group's values (given, from
the environment, or the default) are the defaults of the command's; a value typed
after the command wins over one typed before it, and any typed value over the
environment. The values meet in ``ctx.meta`` (shared by the group's and the
command's contexts), so shell completion, which runs no command, sees them too.

Passwords belong in the environment, not on a command line that ``ps`` shows:
``RQBEAT_REDIS_URL=redis://user:secret@host/0``, ``RQBEAT_SENTINEL_PASSWORD``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from scheduler.connection import DEFAULT_REDIS_URL
from scheduler.keys import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from scheduler.redisconf import RedisSettings

F = TypeVar("F", bound=Callable[..., Any])

#: Where the global options' values are kept in ``click.Context.meta``.
META_KEY = "rqbeat.global_options"


@dataclass(frozen=True, slots=True)
class GlobalOption:
    """One global option: its Python name, its flags, its default and its help."""

    name: str
    flags: tuple[str, ...]
    help: str
    default: str | None = None
    metavar: str | None = None

    @property
    def envvar(self) -> str:
        return f"RQBEAT_{self.name.upper()}"


GLOBAL_OPTIONS = (
    GlobalOption(
        "redis_url",
        ("-u", "--redis-url"),
        "Redis to keep schedules in: redis://, rediss:// (TLS), unix:// or a Redis Cluster's "
        "redis+cluster://host:port[,host:port...] (rediss+cluster:// with TLS).",
        default=DEFAULT_REDIS_URL,
    ),
    GlobalOption("namespace", ("--namespace",), "Prefix of every key rqbeat writes.", DEFAULT_NAMESPACE),
    GlobalOption(
        "sentinel",
        ("--sentinel",),
        "Find the master through these Sentinels (then --redis-url gives only "
        "credentials, database and redis:// or rediss://).",
        metavar="HOST:PORT,...",
    ),
    GlobalOption("sentinel_master", ("--sentinel-master",), "Sentinel's name of the master."),
    GlobalOption("sentinel_username", ("--sentinel-username",), "ACL user for the Sentinels themselves."),
    GlobalOption(
        "sentinel_password",
        ("--sentinel-password",),
        "Password of the Sentinels themselves (prefer the environment variable).",
    ),
    GlobalOption("tls_ca_cert", ("--tls-ca-cert",), "CA bundle (PEM) to verify Redis with."),
    GlobalOption("tls_cert", ("--tls-cert",), "Client certificate (PEM) for mutual TLS."),
    GlobalOption("tls_key", ("--tls-key",), "Private key (PEM) of --tls-cert."),
)


def _remember_group_value(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(META_KEY, {})[param.name] = value
    return value


def _remember_command_value(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # Only a value typed after the command overrides the group's: the environment and
    # the defaults were already applied there, and must not undo `rqbeat -u URL ls`.
    if value is not None and ctx.get_parameter_source(str(param.name)) is ParameterSource.COMMANDLINE:
        ctx.meta.setdefault(META_KEY, {})[param.name] = value
    return value


def _option_settings(spec: GlobalOption, *, on_group: bool) -> dict[str, Any]:
    return {
        "default": spec.default if on_group else None,
        "show_default": on_group and spec.default is not None,
        "envvar": spec.envvar,
        "show_envvar": True,
        "metavar": spec.metavar,
        "help": spec.help,
        "expose_value": False,  # read through ctx.meta: see global_values()
        "callback": _remember_group_value if on_group else _remember_command_value,
    }


def group_options(func: F) -> F:
    """Adds the global options to the ``rqbeat`` group."""
    for spec in reversed(GLOBAL_OPTIONS):
        func = click.option(*spec.flags, spec.name, **_option_settings(spec, on_group=True))(func)
    return func


def add_to_command(command: click.Command) -> None:
    """Adds the global options to one command, after its own."""
    names = {p.name for p in command.params}
    command.params.extend(
        click.Option([*s.flags, s.name], **_option_settings(s, on_group=False))
        for s in GLOBAL_OPTIONS
        if s.name not in names
    )


def global_values(ctx: click.Context) -> dict[str, Any]:
    """The global options in effect: the group's, overridden by the command's."""
    values: dict[str, Any] = ctx.meta.setdefault(META_KEY, {})
    return values


def redis_settings(values: Mapping[str, Any]) -> RedisSettings:
    """The settings from the option values; :class:`ConfigError` (exit 2) when invalid."""
    from scheduler.redisconf import RedisSettings, parse_sentinels  # noqa: PLC0415 - `--help` needs no redis

    sentinel = values.get("sentinel")
    return RedisSettings(
        url=values.get("redis_url") or DEFAULT_REDIS_URL,
        sentinels=parse_sentinels(sentinel) if sentinel else (),
        sentinel_master=values.get("sentinel_master") or "",
        sentinel_username=values.get("sentinel_username") or None,
        sentinel_password=values.get("sentinel_password") or None,
        tls_ca_cert=values.get("tls_ca_cert") or None,
        tls_cert=values.get("tls_cert") or None,
        tls_key=values.get("tls_key") or None,
    )
