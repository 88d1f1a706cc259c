"""What a scenario reports: metrics over repetitions, targets, notes; and its context."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools.processes import RedisServer

DASH = "\u2013"  # en dash, as in "median [min-max]"


@dataclass(frozen=True)
class Target:
    """A performance target for a metric: ``median <op> value``."""

    op: str  # ">=", "<=" or "<"
    value: float
    text: str

    def met(self, measured: float) -> bool:
        if self.op == "<":
            return measured < self.value
        return measured >= self.value if self.op == ">=" else measured <= self.value


@dataclass
class Metric:
    """One measured quantity; ``values`` holds one number per repetition."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: Target | None = None
    digits: int = 1
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    def verdict(self) -> str:
        if self.target is None:
            return ""
        if not self.values:
            return "n/a"
        return "PASS" if self.target.met(self.median) else "FAIL"

    def cell(self) -> str:
        """``median [min-max]`` (or the single value), formatted."""
        if not self.values:
            return DASH
        fmt = f"{{:,.{self.digits}f}}"
        med = fmt.format(self.median)
        if len(self.values) == 1:
            return med
        return f"{med} [{fmt.format(min(self.values))}{DASH}{fmt.format(max(self.values))}]"


@dataclass
class Result:
    """What one scenario module returns."""

    name: str
    title: str
    method: str
    metrics: list[Metric] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    elapsed_s: float = 0.0

    def metric(self, name: str, unit: str, *, target: Target | None = None, digits: int = 1) -> Metric:
        """The metric called ``name``, created on first use (reps append to it)."""
        for m in self.metrics:
            if m.name == name:
                return m
        m = Metric(name, unit, target=target, digits=digits)
        self.metrics.append(m)
        return m


@dataclass
class Context:
    """Per-run settings handed to every scenario."""

    quick: bool
    workdir: Path
    reps: int
    verbose: bool = True
    #: A git ref to measure beside the working tree where a scenario supports it
    #: (``--baseline``: same-run before/after).
    baseline: str = ""
    _started: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"[{time.monotonic() - self._started:7.1f}s] {message}", flush=True)

    @contextlib.contextmanager
    def redis(self, name: str, extra: Sequence[str] = ()) -> Iterator[RedisServer]:
        """A fresh private redis-server for one scenario (or one repetition)."""
        server = RedisServer(self.workdir / name / "redis", extra=extra)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
