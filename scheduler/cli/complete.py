"""Shell completion of schedule ids, read from Redis.

click completes commands and options by itself (``_RQBEAT_COMPLETE=bash_source
rqbeat``); the ``ID`` arguments ask Redis for the ids that start with what was typed,
through the global options in effect (typed before or after the command, or from the
environment). Completion must never get in the way of typing: an unreachable or
misconfigured Redis gives no suggestions, quickly, and no error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis.exceptions
from click.shell_completion import CompletionItem

from scheduler.cli.connopts import global_values, redis_settings
from scheduler.errors import RqbeatError
from scheduler.keys import DEFAULT_NAMESPACE, Keys
from scheduler.records import text

F = TypeVar("F", bound=Callable[..., Any])

#: A Tab press waits at most about this long for Redis (connect, then each reply).
TIMEOUT_S = 1.0
#: Ids offered at most: a shell shows a few screens, not 100k lines.
MAX_ITEMS = 500
#: SSCAN's hint of how many set entries to look at per call.
_SCAN_COUNT = 1000
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def schedule_ids(ctx: click.Context, incomplete: str) -> list[str]:
    """The stored ids starting with ``incomplete``, sorted; [] when Redis cannot say."""
    values = global_values(ctx)
    try:
        settings = redis_settings(values)
        keys = Keys(str(values.get("namespace") or DEFAULT_NAMESPACE))
        conn = settings.connect(socket_timeout_s=TIMEOUT_S, namespace=keys.namespace)
    except (RqbeatError, ValueError):  # a bad --redis-url or --sentinel: nothing to offer
        return []
    conn.connection_pool.connection_kwargs["socket_connect_timeout"] = TIMEOUT_S
    pattern = _GLOB_SPECIAL.sub(r"\\\1", incomplete) + "*"
    found: list[str] = []
    try:
        for member in conn.sscan_iter(keys.ids, match=pattern, count=_SCAN_COUNT):
            found.append(str(text(member)))
            if len(found) >= MAX_ITEMS:
                break
    except (redis.exceptions.RedisError, OSError):  # unreachable, refused, NOPERM, WRONGTYPE
        return []
    finally:
        conn.close()
    return sorted(found)


def _complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(schedule_id) for schedule_id in schedule_ids(ctx, incomplete)]


def id_argument(name: str = "schedule_id", **settings: Any) -> Callable[[F], F]:
    """An ``ID`` argument whose values the shell completes from Redis."""
    settings.setdefault("metavar", "ID")
    return click.argument(name, shell_complete=_complete, **settings)
