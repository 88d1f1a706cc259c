"""What the scripts push to ``<ns>:alerts``, against a real Redis, in-process: each
transition that needs a person (give-up, pause_on_failure, break) and the first
success after it, exactly once; nothing for a retry or an ordinary success. And the
``run`` flags that configure the webhook."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from redis import Redis

from scheduler.cli.app import cli
from scheduler.clock import redis_now_ms
from scheduler.engine.alerts import AlertEvent
from scheduler.engine.dispatch import Dispatcher
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.protocol import AlertKind
from scheduler.store import Client
from tests.integration.test_schedule_metrics import TOKEN, run_once

pytestmark = pytest.mark.integration

K = Keys()
NEVER = "0 0 1 1 *"


def pushed(conn: Redis) -> list[tuple[str, str, bool]]:
    """(schedule, kind, recovered) of each event in the list, oldest first; emptied."""
    raw: list[Any] = conn.lrange(K.alerts, 0, -1)
    conn.delete(K.alerts)
    events = [AlertEvent.from_script(r) for r in raw]
    return [(str(e.schedule_id), str(e.kind), e.recovered) for e in events]


def test_each_transition_pushes_one_event_and_the_next_success_its_recovery(conn: Redis) -> None:
    client = Client(conn)
    conn.set(K.leader, TOKEN)
    client.upsert(Schedule(id="once", target="tests.jobs.record", cron=NEVER, max_attempts=1))
    client.upsert(Schedule(id="twice", target="tests.jobs.record", cron=NEVER, max_attempts=2))
    client.upsert(Schedule(id="careful", target="tests.jobs.record", cron=NEVER, pause_on_failure=True))

    run_once(conn, "once", succeed=True)
    run_once(conn, "twice", succeed=False)  # retried: not an alert
    assert pushed(conn) == []

    run_once(conn, "once", succeed=False)
    run_once(conn, "careful", succeed=False)
    assert pushed(conn) == [("once", "gave_up", False), ("careful", "paused", False)]
    assert conn.hget(K.schedule("careful"), "state") == b"paused"

    run_once(conn, "once", succeed=True)
    client.resume("careful")
    run_once(conn, "careful", succeed=True)
    run_once(conn, "careful", succeed=True)  # the recovery is sent once
    assert pushed(conn) == [("once", "gave_up", True), ("careful", "paused", True)]

    conn.hset(K.schedule("twice"), "definition", "{")  # broken by hand, then met by dispatch
    conn.zadd(K.due, {"twice": 1})
    Dispatcher(conn, K).dispatch(redis_now_ms(conn), TOKEN, 1)
    [(schedule, kind, recovered)] = pushed(conn)
    assert (schedule, kind, recovered) == ("twice", AlertKind.BROKEN, False)


def test_the_list_is_capped_when_no_leader_drains_it(conn: Redis) -> None:
    client = Client(conn)
    conn.set(K.leader, TOKEN)
    client.upsert(Schedule(id="flaky", target="tests.jobs.record", cron=NEVER, max_attempts=1))
    conn.rpush(K.alerts, *[json.dumps({"kind": "gave_up", "schedule": "old", "at": "x"})] * 1_000)
    run_once(conn, "flaky", succeed=False)
    assert conn.llen(K.alerts) == 1_000
    assert AlertEvent.from_script(conn.lindex(K.alerts, -1)).schedule_id == "flaky"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--webhook-url", "ftp://example.com/x"], {}, "--webhook-url"),
        (["--webhook-secret-env", "NOT_SET_HERE"], {}, "--webhook-secret-env"),
        ([], {"RQBEAT_RUN_WEBHOOK_URL": "not a url"}, "--webhook-url"),
    ],
)
def test_bad_webhook_settings_exit_2_and_write_nothing(
    redis_url: str, conn: Redis, args: list[str], env: dict[str, str], named: str
) -> None:
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, "run", *args], env=env)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert conn.keys("*") == []
