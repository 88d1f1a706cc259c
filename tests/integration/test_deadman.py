"""The README's dead-man recipe (examples/deadman.py) in a real job: a replica
dispatches, an rqbeat worker runs it, and a local HTTP server plays Healthchecks."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import Process, wait_for
from scheduler.model import Schedule
from scheduler.store import Client
from tests.hookserver import hook_server

pytestmark = pytest.mark.integration


def test_a_run_pings_start_then_success_or_fail_with_one_run_id(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    client = Client(conn)
    with hook_server() as hc:
        check = f"{hc.url}/ping/nightly"
        client.upsert(
            Schedule(id="nightly", target="tests.jobs.pinged", kwargs={"url": check}, cron="0 0 1 1 *")
        )
        cluster = Cluster(redis_url, tmp_path, processes)
        cluster.replica("r1")
        cluster.worker("w1")
        cluster.wait_leader(conn)

        client.trigger("nightly")
        wait_for(lambda: hc.received("/ping/nightly"), 30, what="the success ping")
        start, success = hc.requests
        assert (urlsplit(start.path).path, start.method) == ("/ping/nightly/start", "GET")
        [dispatched] = [e for e in client.history("nightly") if e.event == "dispatched"]
        fire_ms = dispatched.fields["job_id"].split("-")[1]  # <schedule>-<fire ms>-<attempt>
        rid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"nightly:{fire_ms}:1"))  # current_fire().key, attempt 1
        assert (
            parse_qs(urlsplit(start.path).query) == {"rid": [rid]} == parse_qs(urlsplit(success.path).query)
        )

        wait_for(lambda: client.get("nightly").state == "due", 30, what="the run acked")
        client.upsert(client.get("nightly").schedule.edited({"kwargs": {"url": check, "fail": True}}))  # type: ignore[union-attr]
        client.trigger("nightly")
        wait_for(lambda: hc.received("/ping/nightly/fail"), 30, what="the fail ping")
        assert len(hc.received("/ping/nightly/start")) == 2
        assert len(hc.received("/ping/nightly")) == 1  # no success ping for the failed run
