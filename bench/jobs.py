"""Job functions the benchmarks schedule (workers import them as ``bench.jobs.*``)."""

from __future__ import annotations

from rq import get_current_job

from workers import current_fire


def noop() -> None:
    """Does nothing: the benchmarks measure scheduling, not work."""


def record(tag: str = "bench:runs") -> str:
    """Count this run under the fire's idempotency key (lost/duplicate fire checks)."""
    fire = current_fire()
    job = get_current_job()
    assert fire is not None and job is not None
    job.connection.hincrby(tag, fire.key, 1)
    return fire.key
