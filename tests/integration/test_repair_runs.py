"""`rqbeat check` and `check --repair` on ``allow_all``'s per-run records, corrupted by hand.

Schedules are created through the API and their runs spawned by the leader's own
dispatch step (:class:`Dispatcher` under a lease token set by hand); the damage is
then done with raw Redis commands -- here, and only here, writing keys by hand is how
damage is simulated. The dry run reports it and changes nothing; the repair leaves a
state that checks clean; a fix whose record changed meanwhile writes nothing.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result
from redis import Redis

from scheduler import scripts
from scheduler.cli.app import cli
from scheduler.clock import redis_now_ms
from scheduler.engine import concurrent
from scheduler.engine.dispatch import Dispatcher
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.ops import repair_io
from scheduler.protocol import IN_FLIGHT_FIELD, SLOT_WAIT_SCORE, ConcurrentReply
from scheduler.records import text
from scheduler.store import Client
from tests.keyspace import snapshot

pytestmark = pytest.mark.integration

K = Keys()
TOKEN = "1:test"
HOUR_MS = 3_600_000


def check(redis_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--redis-url", redis_url, "check", *args])


def spawn(conn: Redis, sid: str, *, cap: int = 1, runs: int = 1) -> list[concurrent.Run]:
    """An hourly allow_all schedule with ``runs`` runs in flight, dispatched by the leader's
    step (which dispatches the others due too: a cap of 1 keeps theirs at one run)."""
    Client(conn).upsert(
        Schedule.from_dict(
            {
                "id": sid,
                "target": "tests.jobs.record",
                "every": "1h",
                "overlap": "allow_all",
                "max_concurrent": cap,
            }
        )
    )
    conn.set(K.leader, TOKEN)
    first = Client(conn).get(sid).fire_ms
    assert first is not None
    for n in range(runs):
        Dispatcher(conn, K).dispatch(first + n * HOUR_MS, TOKEN, 1)
    found = concurrent.read_runs(conn, K, sid)
    assert len(found) == runs
    return found


def corrupt(conn: Redis) -> dict[str, str]:
    """One schedule id per kind of damage; returns ``{id: kind expected}``."""
    spawn(conn, "badcount", cap=2, runs=2)
    conn.hset(K.schedule("badcount"), IN_FLIGHT_FIELD, 1)  # a slot that is not free looks free
    (nomember,) = spawn(conn, "nomember")
    conn.zrem(K.concurrent, nomember.member)  # its slot would be held forever
    (norecord,) = spawn(conn, "norecord")
    conn.hdel(K.runs("norecord"), str(norecord.fire_ms))  # the member stays, the count says 1
    spawn(conn, "badrun")
    conn.hset(K.runs("badrun"), "1700000000000", "{not json")
    (ghost,) = spawn(conn, "ghost")
    record = conn.hget(K.runs("ghost"), str(ghost.fire_ms))
    Client(conn).remove("ghost")
    conn.hset(K.runs("ghost"), str(ghost.fire_ms), record or b"")  # a record outliving its schedule
    (switched,) = spawn(conn, "switched")
    Client(conn).upsert(
        Schedule(id="switched", target="tests.jobs.record", every_ms=HOUR_MS)
    )  # not allow_all
    conn.zrem(K.concurrent, switched.member)
    spawn(conn, "good")
    return {
        "nomember": "run_no_member",
        "norecord": "run_no_record",
        "badcount": "run_count",
        "badrun": "bad_run",
        "ghost": "orphan_run",
        "switched": "run_no_member",
    }


def test_dry_run_reports_each_kind_of_run_damage_and_writes_nothing(redis_url: str, conn: Redis) -> None:
    expected = corrupt(conn)
    before = snapshot(conn)
    result = check(redis_url)
    assert result.exit_code == 1, result.output
    for sid, kind in expected.items():
        assert f"{kind} {sid}: " in result.output, (sid, result.output)
    assert "good" not in result.output
    assert "(the schedule is no longer allow_all)" in result.output
    report = json.loads(check(redis_url, "--json").output)
    assert {(f["id"], f["kind"]) for f in report["findings"]} >= set(expected.items())
    assert {f["key"] for f in report["findings"]} == {K.runs(sid) for sid in expected}
    assert snapshot(conn) == before


def test_repair_leaves_runs_the_leader_can_end_and_checks_clean(redis_url: str, conn: Redis) -> None:
    corrupt(conn)
    result = check(redis_url, "--repair", "--yes")
    assert "0 problem(s) remain" in result.output, result.output
    assert json.loads(check(redis_url, "--json").output)["findings"] == []
    (nomember,) = concurrent.read_runs(conn, K, "nomember")
    assert conn.zscore(K.concurrent, nomember.member) is not None  # the leader looks at it again
    assert conn.zscore(K.concurrent, concurrent.read_runs(conn, K, "switched")[0].member) is not None
    listed: list[bytes] = conn.zrange(K.concurrent, 0, -1)  # type: ignore[assignment]
    members = {str(text(m)) for m in listed}
    assert not {m for m in members if m.startswith(("norecord:", "ghost:"))}
    assert conn.hget(K.schedule("norecord"), IN_FLIGHT_FIELD) == b"0"
    assert conn.hget(K.schedule("badcount"), IN_FLIGHT_FIELD) == b"2"
    assert conn.hkeys(K.runs("badrun")) == [str(concurrent.read_runs(conn, K, "badrun")[0].fire_ms).encode()]
    assert not conn.exists(K.runs("ghost"))


def test_a_freed_slot_wakes_the_fire_waiting_for_it(conn: Redis) -> None:
    (run,) = spawn(conn, "capped", cap=1)
    # the next fire waits at the cap; then the run's record is lost by hand
    Dispatcher(conn, K).dispatch(run.fire_ms + HOUR_MS, TOKEN, 1)
    assert (conn.zscore(K.due, "capped") or 0) >= SLOT_WAIT_SCORE
    conn.hdel(K.runs("capped"), str(run.fire_ms))
    examination = repair_io.examine(conn, K)
    assert sorted(f.kind for f in examination.findings) == ["run_count", "run_no_record"]
    assert repair_io.apply_fixes(conn, K, examination.fixes, examination.now_ms) >= 1
    score = conn.zscore(K.due, "capped")
    assert score is not None and score < SLOT_WAIT_SCORE  # due now: the slot is free
    assert repair_io.examine(conn, K).findings == []


def test_a_run_fix_does_nothing_when_the_run_changed_meanwhile(conn: Redis) -> None:
    (run,) = spawn(conn, "racy")
    conn.zrem(K.concurrent, run.member)
    examination = repair_io.examine(conn, K)
    assert [f.kind for f in examination.findings] == ["run_no_member"]
    schedule = Client(conn).get("racy").schedule
    end = concurrent.prepare_ack(
        K, schedule, "racy", run.job_id, run.fire_ms, now_ms=redis_now_ms(conn), by="worker"
    )
    assert (
        ConcurrentReply(scripts.run(scripts.Scripts(conn).conc_ack, end.keys, end.args))
        is ConcurrentReply.DONE
    )
    before = snapshot(conn)  # the worker's ack ended the run between the read and the fix
    assert repair_io.apply_fixes(conn, K, examination.fixes, examination.now_ms) == 0
    assert snapshot(conn) == before
