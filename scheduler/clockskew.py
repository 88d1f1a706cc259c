"""Worker clocks, measured against Redis ``TIME`` (the only clock rqbeat decides by).

rqbeat never decides by a worker's clock (:mod:`scheduler.engine.liveness` judges a
run's heartbeat by Redis's key expiry), so a skewed worker cannot make a fire run
twice. RQ still does: its registry clean-up, run by every worker on *its* clock,
calls another worker's running job abandoned when the two clocks differ by more than
the heartbeat ttl, and ``started_at``/``ended_at`` in ``rq info`` are the worker's.
So ``workers.Worker`` measures its offset (its wall clock minus Redis time) at start
and every :data:`MEASURE_EVERY_S` on a heartbeat, and writes it to
``<ns>:clock:<worker>`` (a HASH that expires with the worker's own RQ key);
``rqbeat status`` shows it and ``rqbeat check`` fails beyond :data:`TOLERANCE_MS`.
Plain ``rq worker`` processes write none: their clocks show as not measured.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from redis import Redis

from scheduler.clock import iso, parse_iso_ms
from scheduler.keys import Keys
from scheduler.records import text

#: Worker clocks further off Redis time than this are reported. Far below the
#: heartbeat ttl of an rqbeat worker (5 s interval + 10 s grace), past which RQ's own
#: clean-up would misjudge runs; far above what NTP keeps (milliseconds).
TOLERANCE_MS = 2_000
#: How often a worker re-measures (on a heartbeat, so at least this far apart).
MEASURE_EVERY_S = 30.0
FIELDS = ("offset_ms", "rtt_ms", "measured_at")


@dataclass(frozen=True, slots=True)
class Offset:
    """A worker's wall clock minus Redis time (positive: ahead), within ``rtt_ms / 2``,
    measured at ``measured_ms`` (Redis time)."""

    offset_ms: int
    rtt_ms: int
    measured_ms: int

    def fields(self) -> dict[str, str]:
        measured_at = iso(self.measured_ms)
        return {"offset_ms": str(self.offset_ms), "rtt_ms": str(self.rtt_ms), "measured_at": measured_at}


def measure(local_before_ms: int, redis_ms: int, local_after_ms: int) -> Offset:
    """Pure: the offset from a ``TIME`` call bracketed by two local wall-clock reads.
    Redis answered somewhere in between; the midpoint errs by at most half the trip."""
    midpoint = (local_before_ms + local_after_ms) // 2
    return Offset(midpoint - redis_ms, max(0, local_after_ms - local_before_ms), redis_ms)


def decode(row: Iterable[bytes | str | None]) -> Offset | None:
    """An :class:`Offset` from an HMGET of :data:`FIELDS`; None when absent or unreadable."""
    offset, rtt, measured = (text(v) for v in row)
    if offset is None or measured is None:
        return None
    try:
        return Offset(int(offset), int(rtt or 0), parse_iso_ms(measured))
    except ValueError:
        return None


def redis_ms(worker_ms: int, offset_ms: int) -> int:
    """Pure: a timestamp the worker wrote with its clock, as Redis time."""
    return worker_ms - offset_ms


def ended_redis_ms(ended_at: datetime | None, now_redis_ms: int, now_local_ms: int) -> int | None:
    """Pure: when a job ended (RQ's ``ended_at``, the worker's clock) as Redis time,
    from the worker itself: the time since then by its own clock, back from Redis now."""
    if ended_at is None:
        return None
    elapsed_ms = max(0, now_local_ms - round(ended_at.timestamp() * 1000))
    return now_redis_ms - elapsed_ms


def describe(offset_ms: int) -> str:
    """``300.0s behind Redis`` / ``1.5s ahead of Redis``."""
    side = "ahead of" if offset_ms > 0 else "behind"
    return f"{abs(offset_ms) / 1000:.1f}s {side} Redis"


def problems(offsets: Mapping[str, Offset | None], tolerance_ms: int = TOLERANCE_MS) -> list[str]:
    """Pure: one line per worker whose measured clock is off by more than ``tolerance_ms``
    (workers not measured, plain ``rq worker``, are not a problem: nothing rqbeat
    decides depends on their clocks)."""
    return [
        f"worker {name}'s clock is {describe(o.offset_ms)} (tolerance {tolerance_ms / 1000:g}s)"
        for name, o in sorted(offsets.items())
        if o is not None and abs(o.offset_ms) > tolerance_ms
    ]


def read(conn: Redis, keys: Keys, workers: Iterable[str]) -> dict[str, Offset | None]:
    """The last measured offset of each named worker (None: never measured)."""
    names = list(workers)
    pipe = conn.pipeline(transaction=False)
    for name in names:
        pipe.hmget(keys.clock(name), list(FIELDS))
    return {name: decode(row) for name, row in zip(names, pipe.execute(), strict=True)}
