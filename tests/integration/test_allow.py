"""The allow-list against a real Redis: refused on write, and again on dispatch by a
running replica whatever Redis says (a schedule written into Redis by hand)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from redis import Redis

from devtools.cluster import Cluster, runs_per_key
from devtools.processes import Process, wait_for
from scheduler.allow import AllowList
from scheduler.cli.app import cli
from scheduler.clock import iso, redis_now_ms
from scheduler.errors import InvalidSchedule
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import Client
from tests.integration.test_bad_input_cli import assert_clean_refusal
from tests.keyspace import snapshot

pytestmark = pytest.mark.integration

K = Keys()


def invoke(redis_url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--redis-url", redis_url, *args], env=env, catch_exceptions=True)


def test_add_refuses_a_target_outside_the_list(redis_url: str, conn: Redis) -> None:
    before = snapshot(conn)
    for args, env in [
        (["add", "x", "os.system", "--every", "1m", "--allow", "myapp"], None),
        (["add", "x", "myapplication.run", "--every", "1m", "--allow", "myapp"], None),
        (["add", "x", "builtins.eval", "--every", "1m"], {"RQBEAT_ALLOW": "myapp.jobs,reports."}),
    ]:
        result = invoke(redis_url, *args, env=env)
        assert_clean_refusal(result)
        assert result.output.startswith("Error: target: is not in the allow-list"), result.output
    assert snapshot(conn) == before
    result = invoke(redis_url, "add", "x", "myapp.jobs.run", "--every", "1m", env={"RQBEAT_ALLOW": "myapp"})
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("value", ["my-app", ",", "a..b"])
def test_a_bad_allow_value_is_refused_before_connecting(value: str) -> None:
    result = invoke("redis://127.0.0.1:1/0", "add", "x", "m.f", "--every", "1m", "--allow", value)
    assert_clean_refusal(result)
    assert result.output.startswith("Error: --allow: "), result.output


def test_apply_refuses_the_whole_file(redis_url: str, conn: Redis, tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(
        '[schedules.good]\ntarget = "myapp.jobs.run"\nevery = "1m"\n'
        '[schedules.evil]\ntarget = "os.system"\nargs = ["id"]\nevery = "1m"\n',
        encoding="utf-8",
    )
    before = snapshot(conn)
    result = invoke(redis_url, "apply", str(path), "--allow", "myapp")
    assert_clean_refusal(result)
    assert result.output.startswith("Error: schedules.evil.target: is not in the allow-list (myapp)")
    assert snapshot(conn) == before


def test_client_refuses_before_writing_anything(conn: Redis) -> None:
    client = Client(conn, allow=AllowList.parse("myapp"))
    good = Schedule(id="good", target="myapp.run", every_ms=60_000)
    evil = Schedule(id="evil", target="os.system", every_ms=60_000)
    with pytest.raises(InvalidSchedule) as info:
        client.upsert_many([good, evil])
    assert info.value.field == "target"
    assert snapshot(conn) == {}
    assert client.upsert(good).action == "created"


def hand_written(conn: Redis, schedule_id: str, definition: dict[str, object]) -> None:
    """A schedule written straight into Redis, as someone with write access could."""
    now = redis_now_ms(conn)
    conn.hset(
        K.schedule(schedule_id),
        mapping={
            "definition": json.dumps(definition),
            "version": 1,
            "state": "due",
            "fire_at": iso(now),
            "attempt": 1,
        },
    )
    conn.zadd(K.due, {schedule_id: now / 1000})
    conn.sadd(K.ids, schedule_id)


def test_a_replica_never_enqueues_a_target_outside_its_list(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    witness = tmp_path / "pwned"
    hand_written(
        conn,
        "evil",
        {"id": "evil", "target": "os.system", "args": [f"touch {witness}"], "every": "1s"},
    )
    Client(conn).upsert(Schedule(id="good", target="tests.jobs.record", every_ms=1000))
    cluster = Cluster(redis_url, tmp_path, processes)
    log = tmp_path / "replica.log"
    replica = Process(
        [sys.executable, "-m", "scheduler", "--redis-url", redis_url, "run", "--node", "r1", "--lease", "2s"],
        log,
        env={"RQBEAT_ALLOW": "tests.jobs"},
    )
    processes.append(replica)
    cluster.worker("w1")
    wait_for(lambda: len(runs_per_key(conn)) >= 2, timeout=30, what="two runs of the allowed schedule")
    record = Client(conn).get("evil")
    assert record.state == "broken"
    assert record.error is not None
    assert "'os.system' is not in this replica's allow-list (tests.jobs)" in record.error
    assert conn.zscore(K.due, "evil") is None and conn.zscore(K.running, "evil") is None
    assert not [k for k in conn.keys("rq:job:*") if b"evil" in k]
    assert not witness.exists()
    errors = [line for line in replica.output().splitlines() if "ERROR" in line and "evil" in line]
    assert len(errors) == 1, replica.output()
    assert "allow=tests.jobs" in replica.output()
