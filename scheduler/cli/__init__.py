"""The ``rqbeat`` command line.

Every option can also be set through an environment variable: ``RQBEAT_`` plus the
option name (``--redis-url`` → ``RQBEAT_REDIS_URL``; command options are prefixed
with the command, ``rqbeat run --lease`` → ``RQBEAT_RUN_LEASE``).

Exit codes: 0 success, 1 operational error (Redis unreachable, schedule not found),
2 bad input (nothing was written).
"""

from __future__ import annotations

from scheduler.cli.app import main

__all__ = ["main"]
