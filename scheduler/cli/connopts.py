"""The global options that say where Redis is: Sentinel and TLS, beside --redis-url.

Each has an environment variable (``RQBEAT_SENTINEL``, ``RQBEAT_TLS_CA_CERT``, ...).
Passwords belong in the environment, not on a command line that ``ps`` shows:
``RQBEAT_REDIS_URL=redis://user:secret@host/0``, ``RQBEAT_SENTINEL_PASSWORD``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from scheduler.redisconf import RedisSettings, parse_sentinels

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option(
        "--sentinel",
        default=None,
        show_envvar=True,
        metavar="HOST:PORT,...",
        help="Find the master through these Sentinels (then --redis-url gives only "
        "credentials, database and redis:// or rediss://).",
    ),
    click.option("--sentinel-master", default=None, show_envvar=True, help="Sentinel's name of the master."),
    click.option(
        "--sentinel-username", default=None, show_envvar=True, help="ACL user for the Sentinels themselves."
    ),
    click.option(
        "--sentinel-password",
        default=None,
        show_envvar=True,
        help="Password of the Sentinels themselves (prefer the environment variable).",
    ),
    click.option(
        "--tls-ca-cert", default=None, show_envvar=True, help="CA bundle (PEM) to verify Redis with."
    ),
    click.option(
        "--tls-cert", default=None, show_envvar=True, help="Client certificate (PEM) for mutual TLS."
    ),
    click.option("--tls-key", default=None, show_envvar=True, help="Private key (PEM) of --tls-cert."),
]


def connection_options(func: F) -> F:
    """Adds the Sentinel and TLS options to the group."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def redis_settings(
    redis_url: str,
    *,
    sentinel: str | None,
    sentinel_master: str | None,
    sentinel_username: str | None,
    sentinel_password: str | None,
    tls_ca_cert: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> RedisSettings:
    """The settings from the option values; :class:`ConfigError` (exit 2) when invalid."""
    return RedisSettings(
        url=redis_url,
        sentinels=parse_sentinels(sentinel) if sentinel else (),
        sentinel_master=sentinel_master or "",
        sentinel_username=sentinel_username or None,
        sentinel_password=sentinel_password or None,
        tls_ca_cert=tls_ca_cert or None,
        tls_cert=tls_cert or None,
        tls_key=tls_key or None,
    )
