"""Worker clock offsets: the pure math (scheduler.clockskew) and the worker's probe
(workers.clockoffset) against a fake Redis and fake clocks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from redis import Redis

from scheduler import clockskew
from scheduler.clockskew import Offset
from scheduler.keys import Keys
from workers.clockoffset import ClockProbe

REDIS_MS = 1_800_000_000_000


def test_measure_takes_the_midpoint_of_the_round_trip() -> None:
    # asked at local 1000, answered, read back at local 1010: the answer is from ~1005
    offset = clockskew.measure(REDIS_MS - 300_000, REDIS_MS, REDIS_MS - 300_000 + 10)
    assert (offset.offset_ms, offset.rtt_ms, offset.measured_ms) == (-299_995, 10, REDIS_MS)
    assert clockskew.measure(REDIS_MS + 5, REDIS_MS, REDIS_MS + 5).offset_ms == 5


def test_a_stamp_on_the_worker_clock_as_redis_time() -> None:
    assert clockskew.redis_ms(REDIS_MS - 300_000, -300_000) == REDIS_MS
    assert clockskew.redis_ms(REDIS_MS + 300_000, 300_000) == REDIS_MS


def test_ended_at_uses_only_the_time_since_by_the_worker_clock() -> None:
    local_now = REDIS_MS - 300_000  # the worker is 5 minutes behind
    ended = datetime.fromtimestamp((local_now - 250) / 1000, UTC)
    assert clockskew.ended_redis_ms(ended, REDIS_MS, local_now) == REDIS_MS - 250
    future = datetime.fromtimestamp((local_now + 50) / 1000, UTC)  # a clock step back
    assert clockskew.ended_redis_ms(future, REDIS_MS, local_now) == REDIS_MS
    assert clockskew.ended_redis_ms(None, REDIS_MS, local_now) is None


def test_problems_name_workers_beyond_the_tolerance_only() -> None:
    offsets = {
        "slow": Offset(-300_000, 2, REDIS_MS),
        "fast": Offset(2_001, 2, REDIS_MS),
        "fine": Offset(-2_000, 2, REDIS_MS),
        "plain": None,
    }
    assert clockskew.problems(offsets) == [
        "worker fast's clock is 2.0s ahead of Redis (tolerance 2s)",
        "worker slow's clock is 300.0s behind Redis (tolerance 2s)",
    ]
    assert clockskew.problems(offsets, tolerance_ms=400_000) == []


def test_decode_round_trips_and_refuses_garbage() -> None:
    offset = Offset(-1234, 3, REDIS_MS)
    row = [offset.fields()[f] for f in clockskew.FIELDS]
    assert clockskew.decode(row) == offset
    assert clockskew.decode([None, None, None]) is None
    assert clockskew.decode(["x", "1", "2026-01-01T00:00:00Z"]) is None


class FakeRedis:
    """TIME and a pipeline that records what it writes."""

    def __init__(self, redis_ms: int) -> None:
        self.redis_ms = redis_ms
        self.written: dict[str, dict[str, str]] = {}
        self.expires: dict[str, int] = {}

    def time(self) -> tuple[int, int]:
        return self.redis_ms // 1000, (self.redis_ms % 1000) * 1000

    def pipeline(self, transaction: bool = True) -> FakeRedis:
        return self

    def hset(self, key: str, mapping: dict[str, str]) -> None:
        self.written[key] = dict(mapping)

    def expire(self, key: str, seconds: int) -> None:
        self.expires[key] = seconds

    def execute(self) -> list[Any]:
        return []


class FakeClocks:
    def __init__(self, wall_ms: int) -> None:
        self.wall = wall_ms
        self.mono = 0.0

    def wall_ms(self) -> int:
        self.wall += 2  # each read of the wall clock takes 2 ms: a 2 ms round trip
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def test_probe_records_the_offset_and_rate_limits_itself() -> None:
    fake, clocks = FakeRedis(REDIS_MS), FakeClocks(REDIS_MS - 300_001)
    probe = ClockProbe(
        cast(Redis, fake), Keys("ns"), "w1", every_s=30, wall_ms=clocks.wall_ms, monotonic=clocks.monotonic
    )
    first = probe.measure(480)
    assert first == Offset(-299_998, 2, REDIS_MS)
    assert fake.written["ns:clock:w1"] == first.fields()
    assert fake.expires["ns:clock:w1"] == 480

    clocks.mono = 29.9
    assert probe.maybe_measure(480) is None  # measured 29.9 s ago: not yet
    clocks.mono = 30.0
    fake.redis_ms += 30_000
    again = probe.maybe_measure(480)
    assert again is not None and again.measured_ms == REDIS_MS + 30_000
