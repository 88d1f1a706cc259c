"""A worker measures its wall clock against Redis ``TIME`` and records the offset.

The record (``<ns>:clock:<worker>``, see :mod:`scheduler.clockskew`) is for people:
``rqbeat status`` shows it and ``rqbeat check`` fails on a clock off by more than the
tolerance. Nothing rqbeat decides reads it, so a failed measurement is logged and
skipped, never allowed to break RQ's heartbeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis.exceptions
from redis import Redis

from scheduler import clockskew
from scheduler.clock import time_reply_ms
from scheduler.keys import Keys

log = logging.getLogger(__name__)


class ClockProbe:
    """Measures at most every ``every_s`` (monotonic), and whenever asked to."""

    def __init__(
        self,
        conn: Redis,
        keys: Keys,
        worker: str,
        *,
        every_s: float = clockskew.MEASURE_EVERY_S,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn = conn
        self.key = keys.clock(worker)
        self.worker = worker
        self.every_s = every_s
        self._wall_ms = wall_ms
        self._monotonic = monotonic
        self._last: float | None = None

    def maybe_measure(self, ttl_s: int) -> clockskew.Offset | None:
        """Measure when the last measurement is ``every_s`` old (or there is none)."""
        if self._last is not None and self._monotonic() - self._last < self.every_s:
            return None
        return self.measure(ttl_s)

    def measure(self, ttl_s: int) -> clockskew.Offset | None:
        """Measure now and record it for ``ttl_s`` seconds (the worker key's lifetime)."""
        self._last = self._monotonic()
        try:
            before = self._wall_ms()
            redis_ms = time_reply_ms(self.conn.time())
            offset = clockskew.measure(before, redis_ms, self._wall_ms())
            pipe = self.conn.pipeline(transaction=True)
            fields: dict[Any, Any] = offset.fields()  # redis-py's mapping type is invariant
            pipe.hset(self.key, mapping=fields)
            pipe.expire(self.key, ttl_s)
            pipe.execute()
        except redis.exceptions.RedisError as exc:
            log.debug("clock offset not measured worker=%s: %s", self.worker, exc)
            return None
        if abs(offset.offset_ms) > clockskew.TOLERANCE_MS:
            log.warning(
                "worker=%s clock is %s (rqbeat decides by Redis time; fix NTP on this host)",
                self.worker, clockskew.describe(offset.offset_ms),
            )  # fmt: skip
        return offset
