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
    # myapp does not import here: allowed by its name alone, and the CLI says so
    assert result.stderr == (
        "warning: x: target myapp.jobs.run allowed by name only, it does not import here "
        "(cannot import myapp.jobs: No module named 'myapp'); replicas that import it check it in full\n"
    )


FIXTURE = "tests.allowfixture"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (f"{FIXTURE}.os.system", "walks through module os, which is outside it"),
        (f"{FIXTURE}.mod.subprocess.call", "walks through module subprocess, which is outside it"),
        (f"{FIXTURE}.system", "resolves to a callable defined in posix, outside it"),
        (f"{FIXTURE}.__builtins__.eval", "names a dunder (__builtins__)"),
    ],
)
def test_add_and_apply_refuse_what_a_target_resolves_to(
    redis_url: str, conn: Redis, tmp_path: Path, target: str, reason: str
) -> None:
    """Under the prefix by name, but RQ would call code from outside it."""
    before = snapshot(conn)
    result = invoke(redis_url, "add", "x", target, "--every", "1m", "--allow", FIXTURE)
    assert_clean_refusal(result)
    assert result.output.startswith(f"Error: target: is not in the allow-list ({FIXTURE}): {reason}")
    path = tmp_path / "jobs.toml"
    path.write_text(f'[schedules.evil]\ntarget = "{target}"\nevery = "1m"\n', encoding="utf-8")
    result = invoke(redis_url, "apply", str(path), "--allow", FIXTURE)
    assert_clean_refusal(result)
    assert result.output.startswith(
        f"Error: schedules.evil.target: is not in the allow-list ({FIXTURE}): {reason}"
    )
    assert snapshot(conn) == before
    result = invoke(redis_url, "add", "x", f"{FIXTURE}.mod.job", "--every", "1m", "--allow", FIXTURE)
    assert (result.exit_code, result.stderr) == (0, ""), result.output


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
    walked = Schedule(id="walked", target=f"{FIXTURE}.os.system", every_ms=60_000)
    with pytest.raises(InvalidSchedule, match="walks through module os"):
        Client(conn, allow=AllowList.parse(FIXTURE)).upsert(walked)
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


def test_a_replica_never_enqueues_what_walks_out_of_its_list(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    """The attack: schedules written into Redis by hand whose targets lie under the
    prefix by name but reach os.system and subprocess.call through the package."""
    witness = tmp_path / "pwned"
    evil = {
        "walk-os": (f"{FIXTURE}.os.system", [f"touch {witness}-os"], "walks through module os"),
        "walk-subprocess": (
            f"{FIXTURE}.mod.subprocess.call",
            [["touch", f"{witness}-subprocess"]],
            "walks through module subprocess",
        ),
        "re-export": (
            f"{FIXTURE}.system",
            [f"touch {witness}-system"],
            "resolves to a callable defined in posix",
        ),
    }
    for schedule_id, (target, args, _) in evil.items():
        hand_written(conn, schedule_id, {"id": schedule_id, "target": target, "args": args, "every": "1s"})
    Client(conn).upsert(Schedule(id="good", target=f"{FIXTURE}.mod.job", every_ms=1000))
    cluster = Cluster(redis_url, tmp_path, processes)
    replica = cluster.replica("r1", extra=["--allow", FIXTURE])
    cluster.worker("w1")
    wait_for(lambda: len(runs_per_key(conn)) >= 2, timeout=30, what="two runs of the allowed schedule")
    for schedule_id, (target, _, reason) in evil.items():
        record = Client(conn).get(schedule_id)
        assert record.state == "broken", schedule_id
        assert record.error is not None
        assert f"{target!r} is not in this replica's allow-list ({FIXTURE}): {reason}" in record.error
        assert conn.zscore(K.due, schedule_id) is None and conn.zscore(K.running, schedule_id) is None
        assert not [k for k in conn.keys("rq:job:*") if schedule_id.encode() in k]
    assert not list(tmp_path.glob("pwned*"))
    errors = [line for line in replica.output().splitlines() if "ERROR" in line]
    assert len(errors) == len(evil), replica.output()
