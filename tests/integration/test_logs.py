"""``--log-format json`` on a real replica and a real worker: every line of their
output is one JSON object, the dispatch line carries the run's identity, and the
Redis password in the URL appears nowhere."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import Process, RedisServer, answers, wait_for
from scheduler.engine.service import Service, ServiceConfig
from scheduler.model import Schedule
from scheduler.store import Client

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Pw-9f1"


class PasswordRedisServer(RedisServer):
    """A private Redis that requires a password (the shared one has none)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, extra=["--requirepass", PASSWORD])

    def _ping(self) -> bool:
        return answers(Redis(port=self.port, password=PASSWORD, socket_timeout=0.5))


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = PasswordRedisServer(tmp_path / "redis-pw")
    server.start()
    yield server
    server.stop()


def json_lines(proc: Process) -> list[dict[str, Any]]:
    """Every line of the process's output, each parsed as one JSON object."""
    lines = proc.output().splitlines()
    assert lines, "no output at all"
    parsed = []
    for line in lines:
        obj = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(obj, dict), line
        assert {"ts", "level", "logger", "msg"} <= obj.keys(), line
        parsed.append(obj)
    return parsed


def test_json_logs_carry_the_run_identity_and_no_password(
    password_server: RedisServer, tmp_path: Path, processes: list[Process]
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{password_server.port}/0"
    conn = Redis.from_url(url)
    cluster = Cluster(url, tmp_path, processes)
    replica = cluster.replica("j1", extra=["--log-format", "json"])
    worker = cluster.worker("jw", extra=["--log-format", "json", "--log-level", "info"])
    cluster.wait_leader(conn)
    client = Client(conn)
    client.upsert(Schedule(id="hello", target="tests.jobs.record", every_ms=3_600_000))
    client.trigger("hello")
    wait_for(lambda: any(e.event == "succeeded" for e in client.history("hello")), 20, what="the run's ack")
    conn.close()
    replica.stop()  # SIGTERM: releases the lease, logs its last lines, closes the file
    worker.stop()

    for proc in (replica, worker):
        assert PASSWORD not in proc.output()
    lines = json_lines(replica)
    dispatched = [o for o in lines if o["msg"].startswith("dispatched ")]
    assert len(dispatched) == 1
    line = dispatched[0]
    assert line["level"] == "INFO" and line["logger"] == "scheduler.engine.dispatch"
    job_id = line["job_id"]
    assert job_id == f"hello-{job_id.split('-')[1]}-1"
    assert (line["schedule"], line["attempt"], line["epoch"]) == ("hello", 1, 1)
    assert line["fire"].endswith("Z")
    redis_line = next(o for o in lines if o["msg"].startswith("redis="))
    assert redis_line["redis"] == f"redis://:***@127.0.0.1:{password_server.port}/0"

    # the worker's own line about the same run has the same identity
    acked = [o for o in json_lines(worker) if o["msg"].startswith("run succeeded ")]
    assert [(o["schedule"], o["fire"], o["job_id"], o["attempt"], o["epoch"]) for o in acked] == [
        ("hello", line["fire"], job_id, 1, 1)
    ]


def test_redis_outage_logs_a_few_warnings_and_counts_every_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis-outage")
    server.start()
    service = Service(ServiceConfig(redis_url=server.url, node="outage", lease_ms=2_000))
    thread = threading.Thread(target=service.run, daemon=True)
    caplog.set_level(logging.INFO, logger="scheduler")
    try:
        thread.start()
        wait_for(lambda: service.is_leader, 10, what="leadership")
        server.kill()
        registry = service.metrics.registry
        wait_for(
            lambda: (registry.get_sample_value("rqbeat_redis_errors_total", {"where": "loop"}) or 0) >= 9,
            30,
            what="9 failed passes, counted",
        )
        server.start()
        wait_for(lambda: "recovered" in caplog.text and service.is_leader, 20, what="recovery")
    finally:
        service.stop()
        thread.join(10)
        server.stop()
    ours = [r for r in caplog.records if r.name == "scheduler.engine.service"]
    warnings = [r for r in ours if r.getMessage().startswith("redis error ")]
    failures = [int(str(r.args[1])) for r in warnings]  # type: ignore[index]
    assert failures[:4] == [1, 2, 4, 8]  # thinned: powers of two only
    assert all(f & (f - 1) == 0 for f in failures)
    assert all(
        r.levelno == logging.WARNING and r.exc_info is None for r in ours if r.levelno >= logging.WARNING
    )
    assert any(r.getMessage().startswith("recovered node=outage after failures=") for r in ours)
