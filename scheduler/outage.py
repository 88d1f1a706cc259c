"""Riding out a Redis outage: the tenacity policy shared by the service loop and by
the start-up of ``rqbeat run`` and ``rqbeat worker``.

Processes outlive Redis blips: they wait and reconnect through a restart, a failover or
a Redis still loading its data, and never exit because Redis went away for a while.
The pause between tries grows exponentially from :data:`FIRST_PAUSE_S` to
:data:`MAX_PAUSE_S`, plus up to :data:`JITTER_S` at random so that replicas and
workers that lost the same server do not all come back in the same millisecond. Only
the 1st, 2nd, 4th, 8th, ... failure in a row gets a log line (:func:`worth_logging`):
an hour-long outage logs a dozen lines, not thousands.

What is retried is always a whole idempotent step, never a single write: redis-py's
own command retries are off (:mod:`scheduler.connection`), since a resent EXEC or
RPUSH can run a job twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.exceptions
from redis import Redis
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential, wait_random
from tenacity.wait import wait_base

from scheduler.logs import worth_logging
from scheduler.slotowner import SlotRedirect

log = logging.getLogger(__name__)

#: The first pause after a failure; it doubles with every failure in a row ...
FIRST_PAUSE_S = 0.1
#: ... up to this (so a recovered Redis is noticed within about a second) ...
MAX_PAUSE_S = 1.0
#: ... plus up to this much at random.
JITTER_S = 0.1
#: The pause after a try that met a Redis Cluster redirect (a resharding).
REDIRECT_PAUSE_S = 0.05


def outage_wait() -> wait_base:
    """The pause before the next try: ``min(FIRST_PAUSE_S * 2**(n-1), MAX_PAUSE_S)``
    after the n-th failure in a row, plus up to :data:`JITTER_S` of jitter
    (:data:`REDIRECT_PAUSE_S` after a try that met a Redis Cluster redirect)."""
    return WaitThroughMigration(
        wait_exponential(multiplier=FIRST_PAUSE_S, max=MAX_PAUSE_S) + wait_random(0, JITTER_S)
    )


class WaitThroughMigration(wait_base):
    """``otherwise``'s pause, except after a try that met a Redis Cluster redirect
    (:class:`~scheduler.slotowner.SlotRedirect`: the slot half moved by a resharding,
    or moved): then a short, steady one. A resharding is not an outage: the node
    answers at once, and the move ends with a ``SETSLOT NODE`` after which the next
    try (one ``MOVED`` later) runs; growing pauses would add up to a second of lag
    after it, twice (redis-py's ``RedisCluster`` pauses 50 ms after a ``TRYAGAIN``
    too). Each try is one refused command, cheap for the node."""

    def __init__(self, otherwise: wait_base) -> None:
        self.otherwise = otherwise

    def __call__(self, retry_state: RetryCallState) -> float:
        if isinstance(failure(retry_state), SlotRedirect):
            return REDIRECT_PAUSE_S
        return float(self.otherwise(retry_state))


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis cannot be reached *yet*: refused or dropped
    connections, timeouts, a server still loading its data, a Sentinel that knows no
    master. Refused credentials and missing permissions are not: waiting will not
    fix them, so they surface at once."""
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
        return False
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OSError)


def wait_until_reachable(conn: Redis, *, where: str, sleep: Callable[[float], None] = time.sleep) -> None:
    """Block until Redis answers PING, however long that takes (a process started
    beside Redis, as in a compose file, must not exit because it came up first).
    Raises at once on errors that waiting cannot fix (:func:`unreachable`).

    ``where`` names the server in the log (never with its password); ``sleep`` is
    injected so tests do not wait in real time."""
    # PING reads and writes nothing: trying it again and again is always safe.
    retrying = Retrying(
        retry=retry_if_exception(unreachable),
        wait=outage_wait(),
        sleep=sleep,
        before_sleep=_log_waiting(where),
        reraise=True,
    )
    retrying(conn.ping)
    failures = retrying.statistics.get("attempt_number", 1) - 1
    if failures:
        log.info("redis=%s reachable after failures=%d", where, failures)


def _log_waiting(where: str) -> Callable[[RetryCallState], None]:
    def log_waiting(state: RetryCallState) -> None:
        if worth_logging(state.attempt_number):
            log.warning(
                "redis=%s unreachable failures=%d retry_in_s=%.2f error=%s (waiting)",
                where, state.attempt_number, state.upcoming_sleep, failure(state),
            )  # fmt: skip

    return log_waiting


def failure(state: RetryCallState) -> BaseException | None:
    """The exception that ended the try ``state`` describes (None if it returned)."""
    return state.outcome.exception() if state.outcome is not None else None
