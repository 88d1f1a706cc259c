"""Per-schedule series an alert rule can use, without a series per schedule.

One series per schedule and figure would be 300k series at 100k schedules: more than
most Prometheus servers accept from one target, and a scrape that reads 100k hashes.
So the per-schedule series are exported for two bounded sets only:

* schedules that opt in with ``metrics = true`` (``<ns>:metered``, kept by the acks;
  at most :data:`MAX_METERED` of them, the first by id), all three figures;
* the :data:`TOP_FAILING` schedules with the most consecutive failed runs
  (``<ns>:failing``, a zset the scripts keep), failures only -- so a failing
  schedule is named even when nobody opted it in.

Cluster-wide figures cover the rest: ``rqbeat_schedules_failing`` (how many schedules'
last run failed) and the ``rqbeat_lateness_seconds`` histogram. The schedule fields
read (``last_success_at``, ``failures``, ``lateness_ms``) are written by ACK and RETRY.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from redis import Redis
from redis.exceptions import RedisError

from scheduler.clock import parse_iso_ms
from scheduler.keys import Keys
from scheduler.records import text

log = logging.getLogger(__name__)

MAX_METERED = 1_000
TOP_FAILING = 20
_FIELDS = ("last_success_at", "failures", "lateness_ms")


class ScheduleCollector:
    """Reads the bounded per-schedule series at scrape time (two round trips)."""

    def __init__(self, conn: Redis, keys: Keys, errors: Counter) -> None:
        self.conn = conn
        self.keys = keys
        self.errors = errors

    def collect(self) -> Iterator[Metric]:
        try:
            failing_n, metered, failing, rows = self._read()
        except (RedisError, OSError) as exc:
            self.errors.labels("scrape").inc()
            log.warning("metrics scrape could not read the per-schedule series error=%s", exc)
            return
        yield GaugeMetricFamily(
            "rqbeat_schedules_failing",
            "Schedules whose last run failed (consecutive failures > 0), cluster-wide.",
            value=failing_n,
        )
        yield from families(metered, failing, rows)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected only on scrape, never when registered

    def _read(self) -> tuple[int, list[str], dict[str, int], dict[str, dict[str, str]]]:
        k = self.keys
        pipe = self.conn.pipeline(transaction=False)
        pipe.zcard(k.failing)
        pipe.smembers(k.metered)
        pipe.zrevrange(k.failing, 0, TOP_FAILING - 1, withscores=True)
        failing_n, members, top = pipe.execute()
        metered = sorted(str(text(m)) for m in members)
        if len(metered) > MAX_METERED:
            log.warning("metrics: %d schedules opt in, exporting the first %d", len(metered), MAX_METERED)
            metered = metered[:MAX_METERED]
        failing = {str(text(m)): int(score) for m, score in top}
        ids = sorted({*metered, *failing})
        pipe = self.conn.pipeline(transaction=False)
        for sid in ids:
            pipe.hmget(k.schedule(sid), _FIELDS)
        rows = {
            sid: dict(zip(_FIELDS, (text(v) for v in row), strict=True))
            for sid, row in zip(ids, pipe.execute(), strict=True)
        }
        return int(failing_n), metered, failing, rows  # type: ignore[return-value]


def families(
    metered: list[str], failing: dict[str, int], rows: dict[str, dict[str, Any]]
) -> Iterator[GaugeMetricFamily]:
    """The per-schedule families from what :meth:`ScheduleCollector._read` read. Pure."""
    success = GaugeMetricFamily(
        "rqbeat_schedule_last_success_timestamp_seconds",
        "When the schedule's last successful run was acknowledged (metrics = true only).",
        labels=["schedule"],
    )
    failures = GaugeMetricFamily(
        "rqbeat_schedule_consecutive_failures",
        f"Failed runs since the last success (metrics = true, and the {TOP_FAILING} most failing).",
        labels=["schedule"],
    )
    lateness = GaugeMetricFamily(
        "rqbeat_schedule_lateness_seconds",
        "The last run's lateness: from its fire to its start on a worker (metrics = true only).",
        labels=["schedule"],
    )
    for sid in metered:
        row = rows.get(sid, {})
        succeeded_ms = _number(row.get("last_success_at"), parse_iso_ms)
        if succeeded_ms is not None:
            success.add_metric([sid], succeeded_ms / 1000)
        late_ms = _number(row.get("lateness_ms"), int)
        if late_ms is not None:
            lateness.add_metric([sid], max(0, late_ms) / 1000)
    for sid in sorted({*metered, *failing}):
        count = failing.get(sid)
        if count is None:
            count = _number(rows.get(sid, {}).get("failures"), int) or 0
        failures.add_metric([sid], count)
    yield from (success, failures, lateness)


def _number(value: str | None, parse: Callable[[str], int]) -> int | None:
    """A field's number; None when absent or damaged (one bad hash must not fail the
    scrape)."""
    try:
        return parse(value) if value else None
    except ValueError:
        return None
