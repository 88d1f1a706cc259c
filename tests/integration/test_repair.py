"""`rqbeat check` and `check --repair` against a real Redis corrupted by hand.

Each way of corrupting the state is done with raw Redis commands; the dry run must
report it and change nothing (byte dump equal); the repair must leave a state that
checks clean and that a real replica dispatches from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from redis import Redis

from devtools.cluster import Cluster, runs_per_key
from devtools.processes import Process, wait_for
from scheduler.cli.app import cli
from scheduler.clock import redis_now_ms
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.ops import repair_io
from scheduler.records import text
from scheduler.store import Client
from tests.keyspace import content, snapshot

pytestmark = pytest.mark.integration

K = Keys()


def check(redis_url: str, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--redis-url", redis_url, "check", *args], input=stdin)


def add(conn: Redis, *ids: str) -> None:
    Client(conn).upsert_many([Schedule(id=i, target="tests.jobs.record", every_ms=1000) for i in ids])


def corrupt_everything(conn: Redis) -> dict[str, str]:
    """One schedule per kind of damage; returns ``{id: kind expected}``."""
    add(
        conn, "wrongtype", "nofields", "garbage", "both", "lostrun", "stranded", "notinids", "histbad", "good"
    )
    now_s = redis_now_ms(conn) / 1000
    conn.delete(K.schedule("wrongtype"))
    conn.set(K.schedule("wrongtype"), "not a hash")  # stays in ids and due
    conn.hdel(K.schedule("nofields"), "state", "version")
    # an absent attempt is 1 (the stored form omits it); a damaged one is a bad field
    conn.hset(K.schedule("nofields"), "attempt", "x")
    conn.hset(K.schedule("garbage"), "definition", "{not json")
    conn.zadd(K.running, {"both": now_s})  # due (no job) and running
    conn.zrem(K.due, "lostrun")  # in flight with a job RQ never had
    conn.zadd(K.running, {"lostrun": now_s})
    conn.hset(K.schedule("lostrun"), mapping={"state": "running", "job_id": "lostrun-1-1"})
    conn.zrem(K.due, "stranded")  # due, in no zset: would never fire
    conn.srem(K.ids, "notinids")
    conn.set(K.history("histbad"), "not a stream")
    conn.sadd(K.ids, "ghost")  # an id with no hash
    conn.zadd(K.due, {"ghost-due": now_s})  # zset members with no hash
    conn.zadd(K.running, {"ghost-running": now_s})
    return {
        "wrongtype": "wrong_type",
        "nofields": "bad_field",
        "garbage": "bad_definition",
        "both": "in_both",
        "lostrun": "lost_run",
        "stranded": "stranded",
        "notinids": "not_in_ids",
        "histbad": "wrong_type",
        "ghost": "dangling_id",
        "ghost-due": "dangling_id",
        "ghost-running": "dangling_id",
    }


def test_dry_run_reports_every_kind_and_writes_nothing(redis_url: str, conn: Redis) -> None:
    expected = corrupt_everything(conn)
    before = snapshot(conn)
    result = check(redis_url)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for schedule_id, kind in expected.items():
        assert f"{kind} {schedule_id}: " in result.output, (schedule_id, result.output)
    assert "good" not in result.output
    assert "(dry run; fix with: rqbeat check --repair)" in result.output
    assert "Error: no leader holds the lease; 13 problem(s) in the stored state" in result.output
    report = json.loads(check(redis_url, "--json").output)
    assert report["ok"] is False and report["repaired"] is None
    assert {(f["id"], f["kind"]) for f in report["findings"]} >= set(expected.items())
    declined = check(redis_url, "--repair", stdin="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert snapshot(conn) == before


def test_repair_then_clean_and_a_replica_dispatches(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    corrupt_everything(conn)
    original = content(conn, K.schedule("wrongtype"))
    result = check(redis_url, "--repair", "--yes")
    assert "repaired: " in result.output and "0 problem(s) remain" in result.output, result.output
    report = json.loads(check(redis_url, "--json").output)
    assert report["findings"] == [] and report["problems"] == ["no leader holds the lease"], report

    records = {r.id: r for r in Client(conn).list()}
    assert set(records) == {
        "nofields",
        "garbage",
        "both",
        "lostrun",
        "stranded",
        "notinids",
        "histbad",
        "good",
    }
    assert records["garbage"].state == "broken" and "not valid JSON" in str(records["garbage"].error)
    assert records["lostrun"].state == "due" and records["lostrun"].attempt == 2
    assert (records["nofields"].version, records["nofields"].attempt) == (1, 1)
    quarantined = [str(text(k)) for k in conn.keys("rqbeat:quarantine:*")]
    moved = [k for k in quarantined if k.endswith(":schedule:wrongtype")]
    assert len(moved) == 1 and content(conn, moved[0]) == original
    assert len([k for k in quarantined if k.endswith(":history:histbad")]) == 1

    cluster = Cluster(redis_url, tmp_path, processes)
    cluster.replica("r1")
    cluster.worker("w1")
    dispatched = {"nofields", "both", "lostrun", "stranded", "notinids", "histbad", "good"}

    def all_ran() -> bool:
        ran = {key.partition(":")[0] for key in runs_per_key(conn)}
        return dispatched <= ran

    wait_for(all_ran, timeout=30, what="every repaired schedule to run")
    healthy = check(redis_url)
    assert healthy.exit_code == 0, healthy.output
    assert healthy.output.startswith("ok: leader r1"), healthy.output


@pytest.mark.parametrize(
    ("corrupt", "kind"),
    [
        (lambda c: (c.delete(K.due), c.rpush(K.due, "x")), "wrong_type rqbeat:due"),
        (lambda c: (c.delete(K.running), c.set(K.running, "x")), "wrong_type rqbeat:running"),
        (lambda c: (c.delete(K.ids), c.hset(K.ids, "a", "b")), "wrong_type rqbeat:ids"),
    ],
)
def test_namespace_keys_of_the_wrong_type(
    redis_url: str, conn: Redis, corrupt: Callable[[Redis], Any], kind: str
) -> None:
    add(conn, "a", "b")
    corrupt(conn)
    before = snapshot(conn)
    dry = check(redis_url)
    assert dry.exit_code == 1 and kind in dry.output, dry.output
    assert snapshot(conn) == before
    check(redis_url, "--repair", "--yes")
    assert json.loads(check(redis_url, "--json").output)["findings"] == []
    assert {r.id: r.state for r in Client(conn).list()} == {"a": "due", "b": "due"}
    members: list[bytes] = conn.zrange(K.due, 0, -1)  # type: ignore[assignment]
    assert {m.decode() for m in members} == {"a", "b"}


def test_a_fix_does_nothing_when_the_schedule_changed_meanwhile(conn: Redis) -> None:
    add(conn, "s")
    conn.zrem(K.due, "s")  # stranded
    examination = repair_io.examine(conn, K)
    assert [f.kind for f in examination.findings] == ["stranded"]
    Client(conn).upsert(Schedule(id="s", target="tests.jobs.record", every_ms=2000))  # an edit races
    before = snapshot(conn)
    assert repair_io.apply_fixes(conn, K, examination.fixes, examination.now_ms) == 0
    assert snapshot(conn) == before


def test_a_clean_state_has_no_findings(redis_url: str, conn: Redis) -> None:
    add(conn, "a", "b")
    Client(conn).pause("b")
    conn.hset(K.schedule("a"), "definition", "[]")
    Client(conn).upsert(Schedule(id="a", target="tests.jobs.record", every_ms=1000))
    assert repair_io.examine(conn, K).findings == []
    result = check(redis_url, "--json")
    assert json.loads(result.output)["findings"] == []


def test_repair_and_health_only_conflict(redis_url: str) -> None:
    result = check(redis_url, "--repair", "--health-only")
    assert result.exit_code == 2 and result.output.startswith("Error: --repair: "), result.output
