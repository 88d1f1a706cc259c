"""Metrics without Redis: what a dispatch batch, a failure and a role change do to the
exposition, the batch histogram, and the decoding of the cluster-wide stats hash."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.engine.clusterstats import ACK_BUCKETS_S, ClusterStats, ack_increments
from scheduler.engine.decide import Decision, Kind
from scheduler.engine.dispatch import BatchResult
from scheduler.engine.metrics import BatchHistogram, Metrics
from scheduler.keys import Keys
from scheduler.protocol import FailOutcome

T_MS = 1_800_000_000_000


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's exposition, parsed back by prometheus_client."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


def test_each_service_has_its_own_registry() -> None:
    a, b = Metrics(Keys()), Metrics(Keys())
    a.dispatched.inc(3)
    assert value(a, "rqbeat_fires_dispatched_total") == 3
    assert value(b, "rqbeat_fires_dispatched_total") == 0


def test_a_batch_counts_runs_lag_drops_and_broken() -> None:
    m = Metrics(Keys())
    batch = BatchResult()
    batch.add(Decision("a", Kind.RUN, fire_ms=T_MS - 4, attempt=1))
    batch.add(Decision("b", Kind.RUN, fire_ms=T_MS - 2_000, attempt=1, dropped=3))
    batch.add(Decision("c", Kind.RUN, fire_ms=T_MS - 60_000, attempt=2))  # a retry: no lag
    batch.add(Decision("d", Kind.RESCHEDULE, fire_ms=T_MS + 1000, dropped=2))
    batch.add(Decision("e", Kind.BROKEN, error="bad json"))
    m.observe_batch(batch, T_MS)
    assert value(m, "rqbeat_fires_dispatched_total") == 3
    assert value(m, "rqbeat_fires_missed_total") == 5
    assert value(m, "rqbeat_schedules_broken_total") == 1
    assert value(m, "rqbeat_dispatch_lag_seconds_count") == 2
    assert value(m, "rqbeat_dispatch_lag_seconds_sum") == pytest.approx(2.004)
    assert value(m, "rqbeat_dispatch_lag_seconds_bucket", le="0.005") == 1
    assert value(m, "rqbeat_dispatch_lag_seconds_bucket", le="1.0") == 1
    assert value(m, "rqbeat_dispatch_lag_seconds_bucket", le="2.5") == 2
    assert value(m, "rqbeat_dispatch_lag_seconds_bucket", le="+Inf") == 2


@pytest.mark.parametrize(
    ("then", "failed", "retried", "given_up"),
    [("retry", 1, 1, 0), ("gave_up", 1, 0, 1), ("paused", 1, 0, 0), ("stale", 0, 0, 0)],
)
def test_a_failure_counts_by_what_followed(then: str, failed: int, retried: int, given_up: int) -> None:
    m = Metrics(Keys())
    m.run_failed(FailOutcome(then))
    assert value(m, "rqbeat_runs_failed_total") == failed
    assert value(m, "rqbeat_runs_retried_total") == retried
    assert value(m, "rqbeat_runs_given_up_total") == given_up


def test_leader_gauge_and_changes() -> None:
    m = Metrics(Keys())
    assert value(m, "rqbeat_leader") == 0
    m.set_leader(False)  # not a change
    m.set_leader(True)
    m.set_leader(True)
    assert (value(m, "rqbeat_leader"), value(m, "rqbeat_leader_changes_total")) == (1, 1)
    m.set_leader(False)
    assert (value(m, "rqbeat_leader"), value(m, "rqbeat_leader_changes_total")) == (0, 2)


def test_batch_histogram_is_cumulative_with_le_semantics() -> None:
    h = BatchHistogram("x_seconds", "x", (0.1, 1.0))
    h.observe_many([0.1, 0.5, 1.0, 7.0])
    h.observe(0.0)
    family = next(iter(h.collect()))
    got = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert got[("x_seconds_bucket", "0.1")] == 2  # 0.0 and 0.1: a bound is inclusive
    assert got[("x_seconds_bucket", "1.0")] == 4
    assert got[("x_seconds_bucket", "+Inf")] == 5
    assert got[("x_seconds_count", None)] == 5
    assert got[("x_seconds_sum", None)] == pytest.approx(8.6)


def test_stats_hash_round_trip() -> None:
    raw: dict[bytes, bytes] = {}
    for incs in (
        ack_increments(by="worker", latency_ms=3, dropped=0),
        ack_increments(by="worker", latency_ms=3, dropped=2),
        ack_increments(by="watchdog", latency_ms=1_500, dropped=0),
        ack_increments(by="watchdog", latency_ms=None, dropped=0),
        ack_increments(by="worker", latency_ms=-5, dropped=0),  # clock skew: counted as 0
        ack_increments(by="worker", latency_ms=600_000, dropped=0),
    ):
        for field, amount in zip(incs[::2], incs[1::2], strict=True):
            key = field.encode()
            raw[key] = str(int(raw.get(key, b"0")) + amount).encode()
    stats = ClusterStats.parse(raw)
    assert stats.acks == {"worker": 4, "watchdog": 2}
    assert stats.ack_missed == 2
    assert len(stats.ack_buckets) == len(ACK_BUCKETS_S) + 1
    by_bound = dict(zip((*ACK_BUCKETS_S, "+Inf"), stats.ack_buckets, strict=True))
    assert by_bound[0.001] == 1  # the skewed one
    assert by_bound[0.005] == 3
    assert by_bound[2.5] == 4
    assert by_bound["+Inf"] == 5  # the one without a latency is not in the histogram
    assert stats.ack_sum_s == pytest.approx(0.003 + 0.003 + 1.5 + 600.0)
    assert stats.ack_buckets == sorted(stats.ack_buckets)


def test_empty_stats_hash() -> None:
    stats = ClusterStats.parse({})
    assert (stats.acks, stats.ack_missed, stats.ack_sum_s) == ({}, 0, 0.0)
    assert set(stats.ack_buckets) == {0}
