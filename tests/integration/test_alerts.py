"""Alerts without Prometheus, end to end: a real replica and a real rqbeat worker, and
a webhook receiver on 127.0.0.1. A fire given up, a broken definition, the recovery
of each, a 500 retried, the rate limit, and the schedule's history of its alerts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import Process, wait_for
from scheduler.engine.webhook import SIGNATURE_HEADER, verify
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import Client
from tests.hookserver import HookServer, hook_server

pytestmark = pytest.mark.integration

K = Keys()
SECRET = "test-hook-secret"
NEVER = "0 0 1 1 *"  # fires only when triggered (within a test's time)
FAIL_KEY = "test:flaky:fail"


def bodies(hooks: HookServer, path: str, schedule: str, kind: str, *, recovered: bool = False) -> list[Any]:
    """The distinct events (by id) a path received about ``schedule``."""
    seen = {}
    for request in hooks.received(path):
        body = json.loads(request.body)
        if (body["schedule"], body["kind"], body["recovered"]) == (schedule, kind, recovered):
            seen[body["id"]] = body
    return list(seen.values())


def alert_entries(client: Client, schedule: str) -> list[dict[str, str]]:
    return [
        {"event": e.event, **e.fields}
        for e in client.history(schedule, 100)
        if e.event in ("alert_sent", "alert_failed")
    ]


def start(cluster: Cluster, hooks: HookServer, conn: Redis) -> Process:
    replica = cluster.replica(
        "r1",
        extra=[
            *("--webhook-url", f"{hooks.url}/hook", "--webhook-secret-env", "TEST_HOOK_SECRET"),
            *("--alert-interval", "10m"),  # only the scripts' publish can deliver in time
        ],
    )
    cluster.worker("w1")
    cluster.wait_leader(conn, timeout=30)  # a replica's start-up on a loaded machine
    return replica


def test_give_up_break_and_recovery_reach_the_webhooks_signed(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    client = Client(conn)
    client.upsert(
        Schedule(
            id="flaky",
            target="tests.jobs.fail_while",
            kwargs={"key": FAIL_KEY},
            cron=NEVER,
            max_attempts=1,
            webhook="http://127.0.0.1:1/unused",  # replaced below, once the server's port is known
        )
    )
    client.upsert(Schedule(id="wrecked", target="tests.jobs.record", cron=NEVER))
    conn.set(FAIL_KEY, 1)
    with hook_server() as hooks:
        client.upsert(client.get("flaky").schedule.edited({"webhook": f"{hooks.url}/own"}))  # type: ignore[union-attr]
        hooks.fail("/hook", 500)  # the first delivery to the namespace's webhook fails once
        cluster = Cluster(redis_url, tmp_path, processes, env={"TEST_HOOK_SECRET": SECRET})
        replica = start(cluster, hooks, conn)

        # a fire given up (max_attempts = 1): to both webhooks, signed, the 500 retried
        client.trigger("flaky")
        wait_for(lambda: bodies(hooks, "/own", "flaky", "gave_up"), 30, what="gave_up at /own")
        [gave_up] = wait_for(lambda: bodies(hooks, "/hook", "flaky", "gave_up"), 30, what="gave_up at /hook")
        assert gave_up["detail"].endswith(f"RuntimeError: {FAIL_KEY} is set")
        assert (
            gave_up["fire_at"] and gave_up["job_id"].startswith("flaky-") and gave_up["namespace"] == "rqbeat"
        )
        hook_requests = hooks.received("/hook")
        assert len(hook_requests) == 2  # the 500, then the retry
        assert json.loads(hook_requests[0].body) == json.loads(hook_requests[1].body)  # same event id
        for request in hooks.received("/hook") + hooks.received("/own"):
            assert verify(SECRET.encode(), request.headers[SIGNATURE_HEADER], request.body, time.time())
            assert not verify(b"wrong", request.headers[SIGNATURE_HEADER], request.body, time.time())
        sent = wait_for(
            lambda: alert_entries(client, "flaky") if len(alert_entries(client, "flaky")) == 2 else None, 10
        )
        assert sorted(e["attempts"] for e in sent) == ["1", "2"]
        assert {(e["event"], e["kind"], e["recovered"], e["status"]) for e in sent} == {
            ("alert_sent", "gave_up", "0", "200")
        }

        # the same kind again within the minute: rate-limited, counted, not sent
        client.trigger("flaky")
        wait_for(lambda: "reason=rate_limited" in replica.output(), 30, what="the second give-up dropped")
        assert len(bodies(hooks, "/hook", "flaky", "gave_up")) == 1
        assert len(bodies(hooks, "/own", "flaky", "gave_up")) == 1

        # a definition broken in Redis
        conn.hset(K.schedule("wrecked"), "definition", "{not json")
        conn.zadd(K.due, {"wrecked": 1})
        conn.publish(K.events, "wake")  # as an edit would: the leader re-reads the due set now
        [broken] = wait_for(lambda: bodies(hooks, "/hook", "wrecked", "broken"), 30, what="broken at /hook")
        assert "not valid JSON" in broken["detail"] and broken["fire_at"] is None

        # the first success after each: recovered
        conn.delete(FAIL_KEY)
        client.trigger("flaky")
        [again] = wait_for(
            lambda: bodies(hooks, "/hook", "flaky", "gave_up", recovered=True), 30, what="recovery"
        )
        wait_for(
            lambda: bodies(hooks, "/own", "flaky", "gave_up", recovered=True), 30, what="recovery at /own"
        )
        assert again["detail"] == "the first run since succeeded"
        client.upsert(Schedule(id="wrecked", target="tests.jobs.record", cron=NEVER))  # repaired
        client.trigger("wrecked")
        wait_for(
            lambda: bodies(hooks, "/hook", "wrecked", "broken", recovered=True), 30, what="wrecked recovered"
        )
        events = [e.event for e in client.history("flaky", 100)]
        assert events.count("gave_up") == 2 and events.count("succeeded") == 1
        wait_for(lambda: len(alert_entries(client, "flaky")) == 4, 10, what="4 deliveries in history")
