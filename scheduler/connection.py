"""Redis connections: URL parsing, password masking, and retries switched off.

redis-py resends a command after a dropped connection by default. A resent EXEC or
RPUSH can enqueue a job twice, so rqbeat's connections never retry at the command
level; the callers retry whole idempotent steps instead (re-read, re-decide).

Where Redis is (URL, Sentinel, TLS files) is a :class:`scheduler.redisconf.RedisSettings`;
this module holds the options every client shares and the masking of secrets.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis import Redis

# redis is imported by the functions that use it, not here: `rqbeat --help` reads
# DEFAULT_REDIS_URL, and `import redis` (which brings redis.asyncio) is most of its start-up

# user:password@ or :password@ right after the scheme; the user part is kept.
_PASSWORD = re.compile(r"(?<=://)([^:/@]*):([^@/]*)@")

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0


def client_options(socket_timeout_s: float | None = DEFAULT_SOCKET_TIMEOUT_S) -> dict[str, Any]:
    """Keyword arguments every rqbeat client gets: no command retries (see above),
    bounded socket waits, no background health checks."""
    from redis import backoff, retry  # noqa: PLC0415 - see the imports at the top

    return {
        "retry": retry.Retry(backoff.NoBackoff(), 0),
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": 0,
    }


def connect(url: str, *, socket_timeout_s: float | None = DEFAULT_SOCKET_TIMEOUT_S) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``) without
    command retries. Bytes replies, as RQ requires."""
    from redis import Redis  # noqa: PLC0415 - see the imports at the top

    return Redis.from_url(url, **client_options(socket_timeout_s))


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``: safe to log and print."""
    return _PASSWORD.sub(lambda m: f"{m.group(1)}:***@", url)


def mask_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with URL passwords and each of ``secrets`` replaced by ``***``.
    For messages that may quote a URL or a server's reply (redis-py's exceptions)."""
    masked = mask_url(text)
    for secret in secrets:
        if secret:
            masked = masked.replace(secret, "***")
    return masked
