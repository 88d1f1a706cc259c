"""Redis connections: URL parsing, password masking, and retries switched off.

redis-py resends a command after a dropped connection by default. A resent EXEC or
RPUSH can enqueue a job twice, so rqbeat's connections never retry at the command
level; the callers retry whole idempotent steps instead (re-read, re-decide).
"""

from __future__ import annotations

import re

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

_PASSWORD = re.compile(r"(?<=://)([^:/@]*):([^@/]*)@")

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def connect(url: str, *, socket_timeout_s: float | None = 5.0) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``) without
    command retries. Bytes replies, as RQ requires."""
    return Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=5.0,
        health_check_interval=0,
    )


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``: safe to log and print."""
    return _PASSWORD.sub(lambda m: f"{m.group(1)}:***@", url)
