"""Nothing stalls silently: each way a schedule stops running without failing is a
finding of ``rqbeat check`` (exit 1, one line), of ``rqbeat status`` and of the
metrics, and the finding clears once the cause is fixed.

Real processes: a ``rqbeat run`` replica, ``rqbeat worker``s and stock ``rq worker``s.
Thresholds are per schedule and small (``max_queued``, ``stale_after``) so each
finding shows within seconds; every wait polls with a deadline.
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import Process, wait_for
from scheduler.cli.app import cli
from scheduler.engine.metrics import Metrics
from scheduler.keys import Keys
from scheduler.model import Overlap, Schedule
from scheduler.store import Client

pytestmark = pytest.mark.integration

K = Keys()


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path, processes: list[Process], conn: Redis) -> Cluster:
    cluster = Cluster(redis_url, tmp_path, processes)
    cluster.replica("r1")
    cluster.wait_leader(conn)
    return cluster


def rqbeat(redis_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, *args])
    return result.exit_code, result.output


def check_finds(redis_url: str, pattern: str, timeout: float = 30.0) -> str:
    """Wait until ``rqbeat check --health-only`` exits 1 with a line matching ``pattern``."""

    def probe() -> str | None:
        code, output = rqbeat(redis_url, "check", "--health-only")
        return output if code == 1 and re.search(pattern, output, re.M) else None

    return wait_for(probe, timeout, interval=0.2, what=f"check to report {pattern!r}")


def check_clears(redis_url: str, timeout: float = 30.0) -> str:
    def probe() -> str | None:
        code, output = rqbeat(redis_url, "check", "--health-only")
        return output if code == 0 else None

    return wait_for(probe, timeout, interval=0.2, what="check to pass again")


def gauge(conn: Redis, name: str, labels: dict[str, str] | None = None) -> float | None:
    """A metric as a replica's scrape reports it (the same collector, in-process)."""
    return Metrics(K, conn).registry.get_sample_value(name, labels or {})


def finding_kinds(redis_url: str) -> set[str]:
    code, output = rqbeat(redis_url, "status", "--json")
    assert code == 0, output
    return {f["kind"] for f in json.loads(output)["health"]["findings"]}


def test_a_queue_nobody_serves_is_reported_until_a_worker_listens(
    redis_url: str, conn: Redis, cluster: Cluster, client: Client
) -> None:
    cluster.worker("w-reports", "reports")
    client.upsert(
        Schedule(id="typo", target="tests.jobs.record", every_ms=1000, queue="reprots", max_queued_ms=2000)
    )

    output = check_finds(
        redis_url, r"^queued_too_long: schedule typo: run typo-\d+-1 queued for .* on queue reprots"
    )
    assert re.search(r"^no_worker: queue reprots: no live worker listens on it", output, re.M), output
    assert "reports" not in finding_kinds(redis_url) and {"queued_too_long", "no_worker"} <= finding_kinds(
        redis_url
    )
    _, status = rqbeat(redis_url, "status")
    assert re.search(
        r"^runs: +1 in flight: 1 queued \(not started by a worker\), 0 running$", status, re.M
    ), status
    assert re.search(r"^  queued_too_long: schedule typo", status, re.M), status
    _, listing = rqbeat(redis_url, "ls")
    assert re.search(r"^typo .*\(queued \d+", listing, re.M), listing
    assert gauge(conn, "rqbeat_runs_queued_too_long") == 1
    assert gauge(conn, "rqbeat_queue_workers", {"queue": "reprots"}) == 0
    assert gauge(conn, "rqbeat_queue_workers", {"queue": "reports"}) is None  # rqbeat never sent it a job

    cluster.worker("w-reprots", "reprots")  # the fix: a worker on the queue the schedule names
    check_clears(redis_url)
    assert gauge(conn, "rqbeat_runs_queued_too_long") == 0
    assert gauge(conn, "rqbeat_queue_workers", {"queue": "reprots"}) == 1


def test_allow_all_runs_in_a_queue_nobody_serves_are_each_reported_until_a_worker_listens(
    redis_url: str, conn: Redis, cluster: Cluster, client: Client
) -> None:
    """Each run of an ``allow_all`` schedule is its own: two runs at the cap, both
    queued on a queue nobody serves, are two findings (check, status, metrics)."""
    client.upsert(
        Schedule(
            id="fanout", target="tests.jobs.record", every_ms=1000, queue="nobody", max_queued_ms=2000,
            overlap=Overlap.ALLOW_ALL, max_concurrent=2,
        )
    )  # fmt: skip

    def two_findings() -> str | None:
        code, output = rqbeat(redis_url, "check", "--health-only")
        lines = re.findall(
            r"^queued_too_long: schedule fanout: run fanout-\d+-1 \(allow_all, fire \S+\) queued for .* "
            r"on queue nobody",
            output,
            re.M,
        )
        return output if code == 1 and len(lines) == 2 else None

    output = wait_for(two_findings, 30, interval=0.2, what="check to report both allow_all runs")
    assert re.search(r"^no_worker: queue nobody:", output, re.M), output
    assert "queued_too_long" in finding_kinds(redis_url)
    assert gauge(conn, "rqbeat_runs_queued_too_long") == 2
    _, status = rqbeat(redis_url, "status")
    assert len(re.findall(r"^  queued_too_long: schedule fanout", status, re.M)) == 2, status

    cluster.worker("w-nobody", "nobody")  # the fix: a worker on the queue
    check_clears(redis_url)
    assert gauge(conn, "rqbeat_runs_queued_too_long") == 0


def test_all_workers_stopped_is_reported_until_one_is_back(
    redis_url: str, conn: Redis, cluster: Cluster, client: Client
) -> None:
    worker = cluster.worker("w1")
    client.upsert(Schedule(id="tick", target="tests.jobs.record", every_ms=1000, max_queued_ms=2000))
    wait_for(lambda: conn.hget(K.schedule("tick"), "last_success_at"), 30, what="a first success")
    check_clears(redis_url)

    worker.signal(signal.SIGTERM)  # a clean stop: RQ takes the worker out of the queue's set
    wait_for(lambda: not worker.alive(), 30, what="the worker to stop")
    output = check_finds(redis_url, r"^no_worker: queue default: no live worker")
    check_finds(redis_url, r"^queued_too_long: schedule tick: run tick-\d+-1 queued for ")
    assert gauge(conn, "rqbeat_queue_workers", {"queue": "default"}) == 0
    assert gauge(conn, "rqbeat_health_findings", {"kind": "no_worker"}) == 1
    assert "ok" not in output.splitlines()[-1]

    cluster.worker("w2")
    check_clears(redis_url)
    assert gauge(conn, "rqbeat_health_findings", {"kind": "queued_too_long"}) == 0


def test_a_target_that_never_imports_goes_stale_until_fixed(
    redis_url: str, conn: Redis, cluster: Cluster, client: Client
) -> None:
    cluster.worker("w1")
    bad = Schedule(
        id="nope", target="tests.no_such_module.job", every_ms=1000, max_attempts=1, stale_after_ms=3000
    )
    client.upsert(bad)

    output = check_finds(redis_url, r"^stale: schedule nope: no successful run yet .*; last run gave_up: \w+")
    # RQ's words for a target it cannot import
    assert "Invalid attribute name" in output or "No module named" in output, output
    assert "stale" in finding_kinds(redis_url)
    assert gauge(conn, "rqbeat_schedules_stale") == 1
    code, output = rqbeat(redis_url, "check", "--health-only", "--warn")
    assert code == 0 and re.search(r"^stale: schedule nope", output, re.M), output
    code, output = rqbeat(redis_url, "check", "--health-only", "--json")
    assert code == 1
    assert [f["schedule"] for f in json.loads(output)["health"]["findings"] if f["kind"] == "stale"] == [
        "nope"
    ]

    client.upsert(replace(bad, target="tests.jobs.record"))
    check_clears(redis_url)
    assert gauge(conn, "rqbeat_schedules_stale") == 0


def test_a_job_slower_than_its_period_goes_stale_and_shows_running(
    redis_url: str, conn: Redis, cluster: Cluster, client: Client
) -> None:
    cluster.worker("w1")
    slow = Schedule(id="slow", target="tests.jobs.slow", args=(4,), every_ms=1000, stale_after_ms=2000)
    client.upsert(slow)

    check_finds(redis_url, r"^stale: schedule slow: no successful run ")

    # between two runs it is due or queued for a moment: wait for one it runs
    def running_row() -> str | None:
        listing = rqbeat(redis_url, "ls")[1]
        return listing if re.search(r"^slow .*\(running \d+\w* on w1\)", listing, re.M) else None

    wait_for(running_row, 30, interval=0.1, what="ls to show the slow run running on w1")

    def shown_running() -> dict[str, Any] | None:
        shown: dict[str, Any] = json.loads(rqbeat(redis_url, "show", "slow", "--json")[1])
        return shown if shown["run_phase"] == "running" else None

    shown = wait_for(shown_running, 30, interval=0.1, what="show to say running")
    assert shown["worker"] == "w1"
    assert shown["started_at"] >= shown["dispatched_at"]

    client.upsert(replace(slow, args=(0,)))  # the fix: a job faster than its period
    check_clears(redis_url)


def test_a_worker_that_cannot_read_json_jobs_is_named(
    redis_url: str, conn: Redis, cluster: Cluster, client: Client
) -> None:
    pickler = cluster.plain_rq_worker("pickler", "pk", serializer=None)
    client.upsert(Schedule(id="pk", target="tests.jobs.record", every_ms=1000, queue="pk", max_attempts=1))

    output = check_finds(redis_url, r"^wrong_serializer: queue pk: worker pickler cannot read rqbeat's jobs")
    assert "serializer is not JSON" in output
    error = wait_for(lambda: conn.hget(K.schedule("pk"), "last_error"), 30, what="the failure recorded")
    assert b"worker pickler cannot read rqbeat's jobs" in error, error
    assert gauge(conn, "rqbeat_health_findings", {"kind": "wrong_serializer"}) == 1

    pickler.signal(signal.SIGTERM)
    wait_for(lambda: not pickler.alive(), 30, what="the pickle worker to stop")
    cluster.worker("w-json", "pk")
    check_clears(redis_url)
    assert gauge(conn, "rqbeat_health_findings", {"kind": "wrong_serializer"}) == 0


def test_the_thresholds_are_settings_of_add_and_set(redis_url: str, conn: Redis) -> None:
    code, output = rqbeat(
        redis_url,
        "add",
        "t",
        "tests.jobs.record",
        "--every",
        "1m",
        "--max-queued",
        "2m",
        "--stale-after",
        "1h",
    )
    assert code == 0, output
    definition = json.loads(rqbeat(redis_url, "show", "t", "--json")[1])["definition"]
    assert (definition["max_queued"], definition["stale_after"]) == ("2m", "1h")
    code, output = rqbeat(redis_url, "set", "t", "--unset", "max-queued", "--stale-after", "3h")
    assert code == 0, output
    definition = json.loads(rqbeat(redis_url, "show", "t", "--json")[1])["definition"]
    assert "max_queued" not in definition and definition["stale_after"] == "3h"
    code, output = rqbeat(redis_url, "set", "t", "--max-queued", "0s")
    assert code != 0 and "max_queued" in output, output
