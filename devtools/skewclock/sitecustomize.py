"""Test hook: run a process with its wall clock shifted, as on a machine whose clock is off.

A test puts this directory first on ``PYTHONPATH`` and sets :data:`OFFSET_ENV` (seconds,
negative = behind); Python imports ``sitecustomize`` before anything else, so every
later reader of the wall clock (``time.time``, ``datetime.now``/``utcnow``, RQ's
``now()`` and ``current_timestamp()``) sees the shifted time, and so does RQ's work
horse (a fork). Monotonic clocks are left alone, as a skewed machine's would be.
Without the variable nothing is patched. Never shipped (``devtools/``).
"""

from __future__ import annotations

import datetime as _dt
import os
import time

OFFSET_ENV = "RQBEAT_TEST_CLOCK_OFFSET_S"


def install(offset_s: float) -> None:
    """Shift ``time.time``, ``time.time_ns`` and ``datetime.datetime.now`` by ``offset_s``."""
    real_time = time.time
    real_time_ns = time.time_ns
    offset_ns = round(offset_s * 1e9)

    def skewed_time() -> float:
        return real_time() + offset_s

    def skewed_time_ns() -> int:
        return real_time_ns() + offset_ns

    class SkewedDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz: _dt.tzinfo | None = None) -> SkewedDatetime:
            return cls.fromtimestamp(skewed_time(), tz)

        @classmethod
        def utcnow(cls) -> SkewedDatetime:
            return cls.fromtimestamp(skewed_time(), _dt.UTC).replace(tzinfo=None)

    time.time = skewed_time
    time.time_ns = skewed_time_ns
    _dt.datetime = SkewedDatetime  # type: ignore[misc]


_offset = os.environ.get(OFFSET_ENV)
if _offset:
    install(float(_offset))
