"""The state invariants under load and edits, and ``rqbeat check`` reading them
consistently while schedules move.

A capacity-bound cluster (far more runs due every second than the workers can run)
moves schedules between ``due`` and ``running`` all the time: dispatch moves each due
one to ``running`` every second, every ack moves one back. ``check`` must not take
those transitions for inconsistencies (the fault review saw hundreds of ``wrong_set``
findings at 50k schedules), and the invariants must hold: each schedule in exactly
one of due/running/paused/broken, a removed schedule never dispatched again, nothing
left ``running`` once its job ended.
"""

from __future__ import annotations

import pytest
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import wait_for
from scheduler.clock import redis_now_ms
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.ops.repair_io import examine
from scheduler.records import text
from scheduler.store import Client

pytestmark = pytest.mark.integration

K = Keys()
#: Check passes made while the cluster is busy; each reads every schedule.
PASSES = 6


def every_second(n: int, prefix: str) -> list[Schedule]:
    return [
        Schedule(id=f"{prefix}-{i:04d}", target="tests.jobs.record", args=(prefix,), cron="* * * * * *")
        for i in range(n)
    ]


def busy(cluster: Cluster, conn: Redis, schedules: list[Schedule], workers: int) -> None:
    """Replica and workers up, the schedules written, dispatch and acks under way."""
    Client(conn).upsert_many(schedules)
    cluster.replica("r1")
    cluster.wait_leader(conn)
    for n in range(workers):
        cluster.worker(f"w{n}")
    wait_for(lambda: conn.hlen(f"test:{schedules[0].args[0]}") >= 20, 30, what="acks under way")


def test_check_finds_nothing_while_schedules_move(cluster: Cluster, conn: Redis) -> None:
    schedules = every_second(2_000, "load")
    busy(cluster, conn, schedules, workers=2)
    findings = []
    for _ in range(PASSES):
        found = examine(conn, K)
        assert found.schedules == len(schedules)
        findings += found.findings
    assert [f.line() for f in findings][:10] == []


def test_removed_are_never_dispatched_and_nothing_stays_running(cluster: Cluster, conn: Redis) -> None:
    schedules = every_second(200, "edit")
    busy(cluster, conn, schedules, workers=2)
    client = Client(conn)
    removed, paused = schedules[::2], schedules[1::2]
    for s in removed:
        client.remove(s.id)
    removed_ms = redis_now_ms(conn)
    for s in paused:
        client.pause(s.id)
    # every run in flight ends (the queue drains) and is acked; nothing is dispatched
    wait_for(lambda: conn.zcard(K.running) == 0, 60, what="the running set to empty")
    wait_for(lambda: redis_now_ms(conn) > removed_ms + 2_000, 10, what="two more fires to pass")
    assert conn.zcard(K.running) == 0 and conn.zcard(K.due) == 0
    for s in paused:
        row = [text(v) for v in conn.hmget(K.schedule(s.id), ["state", "job_id"])]
        assert row == ["paused", None], s.id
    late = [
        key
        for s in removed
        for key in map(text, conn.scan_iter(match=f"rq:job:{s.id}-*", count=1000))
        if key is not None and int(key.rsplit("-", 2)[1]) > removed_ms
    ]
    assert late == [], "removed schedules were dispatched again"
    assert examine(conn, K).findings == []
