"""A :class:`scheduler.clock.Clock` for tests whose ``sleep`` advances time at once."""

from __future__ import annotations


class FakeClock:
    """A clock for tests: ``sleep`` advances time instantly."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
