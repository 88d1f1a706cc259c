"""Cluster-wide run statistics kept in Redis (``<ns>:stats``, a HASH of counters).

Acks happen inside workers: in RQ's forked work horse, which exits after every job,
so counters kept in a worker's memory would die with it. Instead the ACK script adds
the increments computed here to ``<ns>:stats`` in the same transaction that re-arms
the schedule, and only when its compare-and-set succeeds (a stale or duplicate ack
counts nothing). Every replica reads the hash back at scrape time
(:mod:`scheduler.engine.metrics`), so the figures are the same on each: the cluster's.

Fields (all integers, only ever incremented)::

    acks_total:<by>         runs acknowledged as succeeded, by 'worker' or 'watchdog'
    ack_le:<bound>          acks whose latency fell in (previous bound, bound] seconds
    ack_le:+Inf             ... above the largest bound
    ack_sum_us              sum of the ack latencies, microseconds
    ack_missed_total        fires dropped by the misfire policy when an ack re-armed
    late_le:<bound>         runs whose lateness (fire to start, Redis time; known for
                            workers.Worker runs) fell in (previous bound, bound] seconds
    late_le:+Inf, late_sum_us   as for the ack latency

Ack latency = from the end of the job (RQ's ``ended_at``, stamped by the worker's
clock, turned into Redis time by the worker's measured offset:
:mod:`scheduler.clockskew`) to the moment the ack was prepared (Redis time, just
before the transaction is sent). With
``workers.Worker`` that is the ack's own overhead (milliseconds); with a plain
``rq worker`` it is how long the leader's watchdog took to notice the success.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Upper bounds (seconds) of the ack latency buckets.
ACK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Upper bounds (seconds) of the lateness buckets: from a prompt start to a long queue.
LATENESS_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_INF = "+Inf"


def _bucket_field(bound: float | str) -> str:
    return f"ack_le:{bound}"


def ack_increments(*, by: str, latency_ms: int | None, dropped: int) -> list[Any]:
    """Flat ``field, amount, field, amount...`` arguments for the ACK script: one ack
    ``by`` worker/watchdog, its latency (None: unknown, counted without one) and the
    fires its re-arm dropped. Pure."""
    out: list[Any] = [f"acks_total:{by}", 1]
    if latency_ms is not None:
        latency_s = max(0, latency_ms) / 1000
        bound: float | str = next((b for b in ACK_BUCKETS_S if latency_s <= b), _INF)
        out += [_bucket_field(bound), 1, "ack_sum_us", max(0, latency_ms) * 1000]
    if dropped:
        out += ["ack_missed_total", dropped]
    return out


def lateness_increments(lateness_ms: int | None) -> list[Any]:
    """Increments for one run's lateness (fire to start); none when unknown. Pure."""
    if lateness_ms is None:
        return []
    late_s = max(0, lateness_ms) / 1000
    bound: float | str = next((b for b in LATENESS_BUCKETS_S if late_s <= b), _INF)
    return [f"late_le:{bound}", 1, "late_sum_us", max(0, lateness_ms) * 1000]


def missed_increments(dropped: int) -> list[Any]:
    """Increments for a re-arm that is not a success (a fire given up): only the
    fires the misfire policy dropped."""
    return ["ack_missed_total", dropped] if dropped else []


@dataclass(frozen=True, slots=True)
class ClusterStats:
    """The decoded ``<ns>:stats`` hash."""

    acks: dict[str, int]
    #: Cumulative counts per bound of :data:`ACK_BUCKETS_S`, then +Inf (= the count).
    ack_buckets: list[int]
    ack_sum_s: float
    ack_missed: int
    #: Cumulative counts per bound of :data:`LATENESS_BUCKETS_S`, then +Inf.
    late_buckets: list[int]
    late_sum_s: float

    @classmethod
    def parse(cls, raw: dict[Any, Any]) -> ClusterStats:
        """From an HGETALL reply (bytes or str keys). Pure."""
        values = {_text(k): int(v) for k, v in raw.items()}
        acks = {k.partition(":")[2]: v for k, v in values.items() if k.startswith("acks_total:")}
        return cls(
            acks,
            _cumulative(values, "ack_le", ACK_BUCKETS_S),
            values.get("ack_sum_us", 0) / 1e6,
            values.get("ack_missed_total", 0),
            _cumulative(values, "late_le", LATENESS_BUCKETS_S),
            values.get("late_sum_us", 0) / 1e6,
        )


def _cumulative(values: dict[str, int], prefix: str, bounds: tuple[float, ...]) -> list[int]:
    cumulative, running = [], 0
    for bound in (*bounds, _INF):
        running += values.get(f"{prefix}:{bound}", 0)
        cumulative.append(running)
    return cumulative


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
