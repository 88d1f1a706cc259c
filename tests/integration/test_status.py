"""`rqbeat status` and `rqbeat check` against a replica embedded in the test process."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from redis import Redis

from devtools.processes import wait_for
from scheduler import Client, Schedule, Service, ServiceConfig
from scheduler.cli.app import cli

pytestmark = pytest.mark.integration


@pytest.fixture
def replica(redis_url: str) -> Iterator[Service]:
    service = Service(ServiceConfig(redis_url=redis_url, node="embedded", lease_ms=2_000))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    yield service
    service.stop()
    thread.join(10)
    assert not thread.is_alive()


def rqbeat(redis_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, *args])
    return result.exit_code, result.output


def test_check_fails_without_a_leader(redis_url: str) -> None:
    code, output = rqbeat(redis_url, "check")
    assert code == 1
    assert "no leader holds the lease" in output


def test_status_and_check_with_a_leader(redis_url: str, conn: Redis, replica: Service) -> None:
    Client(conn).upsert(Schedule(id="later", target="tests.jobs.record", cron="0 0 1 1 *"))
    Client(conn).upsert(Schedule(id="paused", target="tests.jobs.record", cron="0 0 1 1 *"))
    Client(conn).pause("paused")
    wait_for(lambda: conn.get("rqbeat:leader"), what="the embedded replica to lead")
    wait_for(lambda: conn.zscore("rqbeat:nodes", "embedded"), what="its heartbeat")

    code, output = rqbeat(redis_url, "status", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["leader"] == "embedded"
    assert report["epoch"] == 1
    assert report["schedules"] == {
        "due": 1,
        "running": 0,
        "paused": 1,
        "completed": 0,
        "broken": 0,
        "total": 2,
        "overdue": 0,
    }
    assert report["oldest_overdue"] is None
    assert 0 < report["lease_remaining_s"] <= 2.0
    assert [r["node"] for r in report["replicas"]] == ["embedded"]
    assert report["replicas"][0]["role"] == "leader"
    assert report["replicas"][0]["age_s"] >= 0
    assert report["queues"] == []  # nothing was ever enqueued

    code, output = rqbeat(redis_url, "status")
    assert code == 0
    assert re.search(r"^leader: +embedded \(epoch 1, lease \d", output, re.M), output
    assert re.search(r"^schedules: +2 total: 1 due, 0 running, 1 paused, 0 broken$", output, re.M), output
    assert re.search(r"^overdue: +none$", output, re.M), output
    assert re.search(r"^embedded +leader +1 +(now|\d+\w+ ago) ", output, re.M), output

    code, output = rqbeat(redis_url, "check")
    assert code == 0, output
    assert output.startswith("ok: leader embedded")


def test_check_reports_an_overdue_fire(redis_url: str, conn: Redis) -> None:
    conn.set("rqbeat:leader", "7:somewhere", px=10_000)
    conn.zadd("rqbeat:due", {"stuck": 1_000.0})  # due in 1970: long overdue
    conn.sadd("rqbeat:ids", "stuck")
    code, output = rqbeat(redis_url, "check", "--max-lag", "60s")
    assert code == 1
    assert "schedule stuck is overdue" in output
    code, output = rqbeat(redis_url, "status", "--json")
    report = json.loads(output)
    assert report["oldest_overdue"]["id"] == "stuck"
    assert report["schedules"]["overdue"] == 1
    code, output = rqbeat(redis_url, "status")
    assert code == 0
    assert re.search(r"^overdue: +stuck, \d+d\d*h? late \(the oldest due fire\)$", output, re.M), output
    assert re.search(r"^schedules: +1 total: 1 due \(1 overdue\), 0 running", output, re.M), output


def test_status_without_a_leader_or_schedules(redis_url: str) -> None:
    code, output = rqbeat(redis_url, "status")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[:3] == [
        "leader:    none: no replica holds the lease",
        "schedules: 0 total: 0 due, 0 running, 0 paused, 0 broken",
        "overdue:   none",
    ]
    assert "QUEUE" not in output  # RQ never saw a queue
    report = json.loads(rqbeat(redis_url, "status", "--json")[1])
    assert report["leader"] is None
    assert report["lease_remaining_s"] is None
    assert report["replicas"] == []


def test_stop_releases_the_lease(redis_url: str, conn: Redis) -> None:
    service = Service(ServiceConfig(redis_url=redis_url, node="short-lived", lease_ms=5_000))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    wait_for(lambda: conn.get("rqbeat:leader"), what="the replica to lead")
    service.stop()
    thread.join(10)
    assert conn.get("rqbeat:leader") is None
    assert conn.zscore("rqbeat:nodes", "short-lived") is None
