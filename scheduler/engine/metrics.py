"""Prometheus metrics of one replica (``rqbeat run --metrics-port``).

Each :class:`Service` owns a :class:`Metrics` with a private ``CollectorRegistry``:
nothing is registered in prometheus_client's global registry, so two services in one
process (tests, an embedding application) never collide.

Two kinds of figures (the README's "Metrics" section is the reference):

* this replica's own work -- leadership, fires dispatched, failures concluded by its
  watchdog, dispatch lag, loop duration, Redis errors. Sum them over replicas.
* the cluster's state, read from Redis at scrape time -- schedules by state (set sizes,
  O(1): the idle path never grows with the number of schedules) and the ack counters
  that workers keep in ``<ns>:stats`` (:mod:`scheduler.engine.clusterstats`). Every replica,
  standbys included, reports the same values: take ``max()``, not ``sum()``.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from redis import Redis
from redis.exceptions import RedisError

from scheduler.clock import time_reply_ms
from scheduler.engine.clusterstats import ACK_BUCKETS_S, LATENESS_BUCKETS_S, ClusterStats
from scheduler.engine.schedulemetrics import ScheduleCollector
from scheduler.errors import ConfigError
from scheduler.health import FindingKind, Health, read_health
from scheduler.keys import Keys
from scheduler.protocol import FailOutcome

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from scheduler.engine.dispatch import BatchResult

log = logging.getLogger(__name__)

LAG_BUCKETS_S = (*ACK_BUCKETS_S, 300.0)
LOOP_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ACK_BY = ("worker", "watchdog")


class BatchHistogram:
    """A histogram that takes a whole batch of observations under one lock.

    prometheus_client's ``Histogram.observe`` costs ~2.5 µs per value (measured: 10k
    observations in 25 ms), which a 10k-fire burst would pay on top of ~87 µs per job;
    this one costs ~0.6 µs per value. A collector: register it in a registry."""

    def __init__(self, name: str, documentation: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts, total = self.bounds, [0] * (len(self.bounds) + 1), 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total += value
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        yield histogram_family(self.name, self.documentation, self.bounds, counts, total, cumulative=False)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)


def histogram_family(
    name: str, doc: str, bounds: Sequence[float], counts: Sequence[int], total: float, *, cumulative: bool
) -> HistogramMetricFamily:
    """A histogram family from per-bucket counts (one more than ``bounds``: +Inf last)."""
    running, buckets = 0, []
    for bound, count in zip((*(str(b) for b in bounds), "+Inf"), counts, strict=True):
        running = count if cumulative else running + count
        buckets.append((bound, running))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


class ClusterCollector:
    """Reads the cluster's figures from Redis at scrape time, in one round trip of
    O(1) commands. When Redis cannot be read the figures are left out of the scrape
    (absent, not zero) and ``rqbeat_redis_errors_total{where="scrape"}`` counts it."""

    def __init__(self, conn: Redis, keys: Keys, errors: Counter) -> None:
        self.conn = conn
        self.keys = keys
        self.errors = errors

    def collect(self) -> Iterator[Metric]:
        k = self.keys
        pipe = self.conn.pipeline(transaction=False)
        pipe.time()
        pipe.scard(k.ids)
        pipe.zcard(k.due)
        pipe.zcard(k.running)
        pipe.zrange(k.due, 0, 0, withscores=True)
        pipe.hgetall(k.stats)
        try:
            time_reply, total, due, running, first, raw = pipe.execute()
        except (RedisError, OSError) as exc:
            self.errors.labels("scrape").inc()
            log.warning("metrics scrape could not read Redis error=%s", exc)
            return
        now_ms = time_reply_ms(time_reply)
        yield _schedules_family(int(total), int(due), int(running))
        overdue_s = max(0.0, now_ms / 1000 - first[0][1]) if first else 0.0
        yield GaugeMetricFamily(
            "rqbeat_overdue_seconds",
            "How late the most overdue due schedule is (0 when none is overdue).",
            value=overdue_s,
        )
        yield from _ack_families(ClusterStats.parse(raw))
        try:
            health = read_health(self.conn, self.keys)
        except (RedisError, OSError) as exc:
            self.errors.labels("scrape").inc()
            log.warning("metrics scrape could not read the health findings error=%s", exc)
            return
        yield from _health_families(health)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected only on scrape, never when registered


def _schedules_family(total: int, due: int, running: int) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "rqbeat_schedules",
        "Schedules by state (set sizes; paused and broken are told apart only by `rqbeat ls`).",
        labels=["state"],
    )
    family.add_metric(["due"], due)
    family.add_metric(["running"], running)
    family.add_metric(["paused_or_broken"], max(0, total - due - running))
    return family


def _health_families(health: Health) -> Iterator[Metric]:
    """The health findings (:mod:`scheduler.health`) as gauges: read at scrape time
    from the small indexes the transitions keep (O(findings), never a scan), so the
    figure is as fresh as the scrape and costs the leader's loop nothing."""
    findings = GaugeMetricFamily(
        "rqbeat_health_findings", "Health findings by kind (`rqbeat check` lists them).", labels=["kind"]
    )
    for kind in FindingKind:
        findings.add_metric([kind.value], health.counts[kind])
    yield findings
    yield GaugeMetricFamily(
        "rqbeat_runs_queued_too_long",
        "Runs dispatched but not started by a worker within their max_queued.",
        value=health.counts[FindingKind.QUEUED_TOO_LONG],
    )
    yield GaugeMetricFamily(
        "rqbeat_schedules_stale",
        "Schedules without a successful run within their stale_after.",
        value=health.counts[FindingKind.STALE],
    )
    yield GaugeMetricFamily(
        "rqbeat_runs_queued", "Runs dispatched and not started by a worker yet.", value=health.queued_runs
    )
    workers = GaugeMetricFamily(
        "rqbeat_queue_workers",
        "Live RQ workers listening on each queue rqbeat dispatched to in the last day.",
        labels=["queue"],
    )
    for queue, count in sorted(health.workers.items()):
        workers.add_metric([queue], count)
    yield workers


def _ack_families(stats: ClusterStats) -> Iterator[Metric]:
    acks = CounterMetricFamily(
        "rqbeat_acks", "Runs acknowledged as succeeded, cluster-wide, by who acked them.", labels=["by"]
    )
    for by in sorted({*_ACK_BY, *stats.acks}):
        acks.add_metric([by], stats.acks.get(by, 0))
    yield acks
    yield histogram_family(
        "rqbeat_ack_latency_seconds",
        "Cluster-wide: from a job's end (RQ ended_at) to its schedule being re-armed.",
        ACK_BUCKETS_S,
        stats.ack_buckets,
        stats.ack_sum_s,
        cumulative=True,
    )
    yield histogram_family(
        "rqbeat_lateness_seconds",
        "Cluster-wide: from a run's fire to its start on a workers.Worker (Redis time), per ack.",
        LATENESS_BUCKETS_S,
        stats.late_buckets,
        stats.late_sum_s,
        cumulative=True,
    )
    yield CounterMetricFamily(
        "rqbeat_ack_missed_fires",
        "Cluster-wide: fires dropped by the misfire policy when an ack re-armed a schedule.",
        value=stats.ack_missed,
    )


class Metrics:
    """One replica's metrics and the registry they live in."""

    def __init__(self, keys: Keys, conn: Redis | None = None) -> None:
        self.registry = r = CollectorRegistry()
        self._is_leader = False

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, registry=r)

        self.leader = Gauge("rqbeat_leader", "1 while this replica holds the lease, else 0.", registry=r)
        self.leader_changes = counter(
            "rqbeat_leader_changes_total", "Times this replica became or stopped being the leader."
        )
        self.dispatched = counter(
            "rqbeat_fires_dispatched_total", "Runs this replica enqueued (retries too)."
        )
        self.missed = counter(
            "rqbeat_fires_missed_total", "Fires this replica dropped by a misfire policy at dispatch."
        )
        self.broken = counter("rqbeat_schedules_broken_total", "Schedules this replica marked broken.")
        self.failed = counter("rqbeat_runs_failed_total", "Failed runs this replica's watchdog concluded.")
        self.retried = counter("rqbeat_runs_retried_total", "Failed runs scheduled for another attempt.")
        self.given_up = counter("rqbeat_runs_given_up_total", "Fires given up after max_attempts runs.")
        self.redis_errors = Counter(
            "rqbeat_redis_errors_total", "Redis errors seen by this replica.", ["where"], registry=r
        )
        for where in ("loop", "events", "scrape"):  # every series exists from the start, at 0
            self.redis_errors.labels(where)
        self.alerts = Counter(
            "rqbeat_alerts_total", "Alert deliveries by this replica.", ["kind", "result"], registry=r
        )
        self.alerts_dropped = Counter(
            "rqbeat_alerts_dropped_total",
            "Alerts this replica did not send, by reason.",
            ["reason"],
            registry=r,
        )
        self.redis_oom = counter(
            "rqbeat_redis_oom_total",
            "Writes of this replica that Redis refused for lack of memory (OOM); the loop backs off.",
        )
        self.redis_full = Gauge(
            "rqbeat_redis_full", "1 while this replica's last write was refused with OOM, else 0.", registry=r
        )
        self.dispatch_lag = BatchHistogram(
            "rqbeat_dispatch_lag_seconds",
            "First attempts: enqueue time (Redis time of the batch) minus the nominal fire time.",
            LAG_BUCKETS_S,
        )
        self.loop_duration = BatchHistogram(
            "rqbeat_loop_duration_seconds",
            "One pass of the replica's loop, waiting excluded.",
            LOOP_BUCKETS_S,
        )
        for collector in (self.dispatch_lag, self.loop_duration):
            r.register(collector)
        ProcessCollector(registry=r)
        if conn is not None:
            r.register(ClusterCollector(conn, keys, self.redis_errors))
            r.register(ScheduleCollector(conn, keys, self.redis_errors))

    def set_leader(self, leader: bool) -> None:
        """Record this replica's role; a change of role counts as a leader change."""
        if leader != self._is_leader:
            self._is_leader = leader
            self.leader.set(1 if leader else 0)
            self.leader_changes.inc()

    def observe_batch(self, result: BatchResult, now_ms: int) -> None:
        """Count one dispatch batch (from the value ``Dispatcher.dispatch`` returns)."""
        started = [*result.runs, *result.spawned]
        if started:
            self.dispatched.inc(len(started))
            # retries keep their original fire time: their "lag" is the back-off
            self.dispatch_lag.observe_many(
                max(0, now_ms - d.fire_ms) / 1000 for d in started if d.attempt == 1
            )
        dropped = sum(d.dropped for d in started) + sum(d.dropped for d in result.rescheduled)
        if dropped:
            self.missed.inc(dropped)
        if result.broken:
            self.broken.inc(len(result.broken))

    def run_failed(self, then: FailOutcome) -> None:
        """A failed run concluded by the watchdog; ``then`` is what ``runs.fail`` did."""
        if then is FailOutcome.STALE:
            return  # concluded elsewhere meanwhile: not a failure of this run
        self.failed.inc()
        if then is FailOutcome.RETRY:
            self.retried.inc()
        elif then is FailOutcome.GAVE_UP:
            self.given_up.inc()

    def alert_delivered(self, kind: str, sent: bool) -> None:
        self.alerts.labels(kind, "sent" if sent else "failed").inc()

    def alert_dropped(self, reason: str) -> None:
        self.alerts_dropped.labels(reason).inc()

    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread."""
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError("--metrics-port", port, f"cannot listen on {host}:{port}: {exc}") from None
        log.info("metrics on http://%s:%d/metrics", host, port)
        return MetricsServer(server, thread)


class MetricsServer:
    """The running ``/metrics`` endpoint; ``stop()`` closes its socket."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
