"""Clocks and time formatting.

Decisions about *when* use Redis server time (``TIME``) so replicas with skewed
clocks agree; lease deadlines use the local monotonic clock so a step of the wall
clock cannot extend a lease. Both are reached through a :class:`Clock` so tests can
drive time by hand (``tests/fakeclock.py``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol

from redis import Redis

#: Distinct instants :func:`iso` remembers.
ISO_CACHE_SIZE = 16_384


class Clock(Protocol):
    """Where the scheduler reads the time and waits."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait (a fake clock advances instead)."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


def redis_now_ms(conn: Redis) -> int:
    """Redis server time in epoch milliseconds."""
    return time_reply_ms(conn.time())


def time_reply_ms(reply: tuple[int, int]) -> int:
    """Epoch milliseconds from a ``TIME`` reply (also one read in a pipeline)."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


@lru_cache(maxsize=ISO_CACHE_SIZE)
def iso(ms: int) -> str:
    """``2027-03-28T01:00:00.000Z``: what people read in redis-cli and the CLI."""
    # memoized: a batch of schedules shares few fire times (100k daily crons: 1,440)
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@lru_cache(maxsize=ISO_CACHE_SIZE)
def parse_iso_ms(text: str) -> int:
    """Inverse of :func:`iso` (accepts any aware ISO-8601 timestamp)."""
    # memoized: dispatch parses each due schedule's pending fire, and a burst shares one
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {text!r}")
    return round(parsed.timestamp() * 1000)
