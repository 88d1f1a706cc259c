"""``rqbeat run --metrics-port``: real replicas and a real worker, scraped over HTTP and
parsed with prometheus_client's own parser. The values must move: dispatches, lag,
acks (kept cluster-wide in Redis by the worker's ack), failures and retries, leader
on the leader and 0 on the standby."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from devtools.cluster import Cluster
from devtools.localredis import free_port
from devtools.processes import Process, wait_for
from scheduler.cli.app import cli
from scheduler.model import Schedule
from scheduler.store import Client

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples | None:
    """Every sample on ``/metrics``; None while the endpoint is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_metric(port: int, name: str, at_least: float, timeout: float = 20, **labels: str) -> Samples:
    """Scrape until ``name{labels}`` reaches ``at_least``; the samples of that scrape."""

    def probe() -> Samples | None:
        samples = scrape(port)
        return samples if samples is not None and value(samples, name, **labels) >= at_least else None

    return wait_for(probe, timeout, interval=0.1, what=f"{name}{labels or ''} >= {at_least} on :{port}")


def hourly(sid: str, target: str, **changes: object) -> Schedule:
    return Schedule(id=sid, target=f"tests.jobs.{target}", every_ms=HOUR_MS, **changes)  # type: ignore[arg-type]


def test_metrics_move_on_leader_and_standby(
    redis_url: str, tmp_path: Path, processes: list[Process], conn: Redis
) -> None:
    cluster = Cluster(redis_url, tmp_path, processes)
    leader_port, standby_port = free_port(), free_port()
    cluster.replica("m1", extra=["--metrics-port", str(leader_port), "--metrics-host", "127.0.0.1"])
    assert cluster.wait_leader(conn) == "m1"
    cluster.replica("m2", extra=["--metrics-port", str(standby_port), "--metrics-host", "127.0.0.1"])
    cluster.worker("w1")

    wait_metric(leader_port, "rqbeat_leader", 1)
    # the lease is taken before the loop's first pass is counted: wait for that pass too
    before = wait_metric(leader_port, "rqbeat_loop_duration_seconds_count", 1)
    assert value(before, "rqbeat_leader") == 1
    assert value(before, "rqbeat_leader_changes_total") == 1
    assert value(before, "rqbeat_fires_dispatched_total") == 0
    assert value(before, "rqbeat_dispatch_lag_seconds_count") == 0
    assert value(before, "rqbeat_schedules", state="due") == 0
    standby = wait_for(lambda: scrape(standby_port), 20, interval=0.1, what="the standby's /metrics")
    assert value(standby, "rqbeat_leader") == 0
    assert value(standby, "rqbeat_leader_changes_total") == 0

    client = Client(conn)
    client.upsert(hourly("ok", "record"))
    client.trigger("ok")
    after = wait_metric(leader_port, "rqbeat_acks_total", 1, by="worker")
    assert value(after, "rqbeat_fires_dispatched_total") == 1
    assert value(after, "rqbeat_dispatch_lag_seconds_count") == 1
    assert value(after, "rqbeat_dispatch_lag_seconds_bucket", le="+Inf") == 1
    assert value(after, "rqbeat_ack_latency_seconds_count") == 1
    assert value(after, "rqbeat_schedules", state="due") == 1  # re-armed at its next fire
    assert value(after, "rqbeat_schedules", state="running") == 0
    assert value(after, "rqbeat_runs_failed_total") == 0

    # a job that always raises, given up after two runs: failed twice, retried once
    client.upsert(hourly("bad", "fail", max_attempts=2))
    client.trigger("bad")
    failed = wait_metric(leader_port, "rqbeat_runs_given_up_total", 1, timeout=30)
    assert value(failed, "rqbeat_runs_failed_total") == 2
    assert value(failed, "rqbeat_runs_retried_total") == 1
    assert value(failed, "rqbeat_fires_dispatched_total") == 3  # ok, bad, bad's retry
    assert value(failed, "rqbeat_dispatch_lag_seconds_count") == 2  # retries have no lag
    assert value(failed, "rqbeat_acks_total", by="worker") == 1  # a give-up is not an ack

    # the standby reports the cluster's figures too, but none of the leader's own work
    standby = wait_metric(standby_port, "rqbeat_schedules", 2, state="due")
    assert value(standby, "rqbeat_leader") == 0
    assert value(standby, "rqbeat_acks_total", by="worker") == 1
    assert value(standby, "rqbeat_fires_dispatched_total") == 0


def test_bad_metrics_port_is_refused_before_anything_is_written(
    redis_url: str, tmp_path: Path, processes: list[Process], conn: Redis
) -> None:
    cluster = Cluster(redis_url, tmp_path, processes)
    port = free_port()
    cluster.replica("first", extra=["--metrics-port", str(port), "--metrics-host", "127.0.0.1"])
    wait_for(lambda: scrape(port), 20, interval=0.1, what="the first replica's /metrics")
    second = cluster.replica("second", extra=["--metrics-port", str(port), "--metrics-host", "127.0.0.1"])
    code = wait_for(second.proc.poll, 20, what="the second replica to exit")
    assert code == 2
    assert f"--metrics-port: cannot listen on 127.0.0.1:{port}" in second.output()
    assert [line for line in second.output().splitlines() if "Error" in line or "Traceback" in line] == [
        f"Error: --metrics-port: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use "
        f"(got {port})"
    ]  # one clear line, no traceback
    # it never reported itself as a replica
    assert conn.zscore(cluster.keys.nodes, "second") is None
    assert not conn.exists(cluster.keys.node("second"))


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"RQBEAT_METRICS_PORT": "70000"}, [], "--metrics-port"),
        ({"RQBEAT_RUN_METRICS_PORT": "http"}, [], "--metrics-port"),
        ({"RQBEAT_LOG_FORMAT": "xml"}, [], "--log-format"),
        ({}, ["--metrics-port", "0"], "--metrics-port"),
    ],
)
def test_bad_observability_settings_exit_2_and_write_nothing(
    redis_url: str, conn: Redis, env: dict[str, str], args: list[str], named: str
) -> None:
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, "run", *args], env=env)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert conn.keys("*") == []


def test_worker_log_format_from_the_shared_env_var(redis_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["--redis-url", redis_url, "worker", "--help"], env={"RQBEAT_LOG_FORMAT": "json"}
    )
    assert result.exit_code == 0
    assert "RQBEAT_WORKER_LOG_FORMAT" in result.output and "Example" in result.output
    bad = CliRunner().invoke(
        cli, ["--redis-url", redis_url, "worker", "--burst"], env={"RQBEAT_LOG_FORMAT": "x"}
    )
    assert bad.exit_code == 2 and "--log-format" in bad.output
