"""``overlap = allow_all`` with ``max_concurrent`` end to end: a schedule applied from a
TOML file, a leader, three ``rqbeat worker``s that import the job from a user's app
outside the repository, and jobs that stay in flight until the test opens their gate
(no timing margins).

Three workers could run three runs at once; the cap is two. The tests show the runs in
flight reaching two and never more, the fire waiting at the cap, the order of the
fires, their history, one idempotency key per fire, a failed run retried (same fire,
attempt 2) while the others go on, and a leader killed with runs in flight.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from devtools.apps import write_app
from devtools.cluster import Cluster, kill_group
from devtools.processes import Process, wait_for
from scheduler import cron, policy
from scheduler.clock import parse_iso_ms, redis_now_ms
from scheduler.engine import concurrent
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.protocol import SLOT_WAIT_SCORE
from scheduler.records import text
from scheduler.store import Client, HistoryEntry
from tests.cli import Invoke, json_of, ok

pytestmark = pytest.mark.integration

K = Keys()
SID = "eu-export"
QUEUE = "exports"
CAP = 2
STARTUP_S = 60
WAIT_S = 30
EXPORT_PY = '''"""The user's job module: an export that waits for the test's gate."""

from rq import get_current_job

from workers import current_fire


def export(region: str) -> str:
    fire, job = current_fire(), get_current_job()
    assert fire is not None and job is not None
    conn = job.connection
    in_flight = conn.incr("test:allow:in_flight")
    n = conn.incr("test:allow:starts")
    conn.rpush("test:allow:started", f"{job.id} {fire.key} {in_flight} {fire.attempt}")
    try:
        if n == int(conn.get("test:allow:fail_start") or 0):
            raise RuntimeError(f"start #{n} fails (the test asked)")
        if conn.blpop(["test:allow:gate"], timeout=60) is None:
            raise RuntimeError("the gate never opened")
    finally:
        conn.decr("test:allow:in_flight")
    conn.hincrby("test:allow:runs", fire.key, 1)
    return f"{region} {fire.key}"
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return write_app(tmp_path / "app", EXPORT_PY)


def started(conn: Redis) -> list[tuple[str, str, int, int]]:
    """(job id, key, runs in flight at its start, attempt) per started run, in order."""
    rows = [str(text(r)).split() for r in conn.lrange("test:allow:started", 0, -1)]
    return [(job, key, int(n), int(a)) for job, key, n, a in rows]


def wait_started(conn: Redis, n: int) -> list[tuple[str, str, int, int]]:
    return wait_for(lambda: started(conn) if len(started(conn)) >= n else None, WAIT_S, what=f"{n} starts")


def open_gate(conn: Redis, n: int = 1) -> None:
    conn.rpush("test:allow:gate", *["go"] * n)


def fire_ms(job_id: str) -> int:
    return int(job_id.rsplit("-", 2)[1])


def events(conn: Redis, *names: str) -> list[HistoryEntry]:
    return [e for e in Client(conn).history(SID, count=1000) if e.event in names]


def waiting_for_a_slot(conn: Redis) -> bool:
    score = conn.zscore(K.due, SID)
    return score is not None and score >= SLOT_WAIT_SCORE


def in_flight(conn: Redis) -> int:
    return len(concurrent.read_runs(conn, K, SID))


def start(
    cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path, *, replicas: tuple[str, ...] = ("r1",)
) -> tuple[Schedule, dict[str, Process]]:
    procs = {name: cluster.replica(name) for name in replicas}
    cluster.wait_leader(conn, timeout=STARTUP_S)
    for name in ("w1", "w2", "w3"):  # one more worker than the cap
        cluster.worker(name, QUEUE, extra=["--path", str(app)])
    wait_for(lambda: conn.hlen(K.rq_workers) == 3, STARTUP_S, what="three workers to register")
    toml = app / "schedules.toml"
    toml.write_text(
        f'[schedules.{SID}]\ntarget = "myapp.tasks.reports.export"\nargs = ["eu"]\n'
        f'every = "1s"\nqueue = "{QUEUE}"\nmax_attempts = 3\n'
        f'overlap = "allow_all"\nmax_concurrent = {CAP}\nmisfire = "skip"\n'
    )
    ok(rqbeat("apply", str(toml), "--path", str(app)))
    schedule = Client(conn).get(SID).schedule
    assert schedule is not None and schedule.max_concurrent == CAP
    return schedule, procs


def finish(conn: Redis, rqbeat: Invoke) -> dict[str, int]:
    """Pause, let every run end, and return the runs per idempotency key."""
    ok(rqbeat("pause", SID))

    def drained() -> bool:
        open_gate(conn, CAP)
        return in_flight(conn) == 0

    wait_for(drained, WAIT_S, what="the runs in flight to end")
    assert int(conn.hget(K.schedule(SID), "runs_in_flight") or 0) == 0
    return {str(text(k)): int(v) for k, v in conn.hgetall("test:allow:runs").items()}


def test_runs_in_flight_reach_the_cap_and_never_more(
    cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path, tmp_path: Path
) -> None:
    schedule, _ = start(cluster, conn, rqbeat, app)
    first_two = wait_started(conn, CAP)
    assert [n for _, _, n, _ in first_two] == [1, 2]  # two at once
    wait_for(lambda: waiting_for_a_slot(conn), WAIT_S, what="the next fire to wait at the cap")
    assert len(started(conn)) == CAP and in_flight(conn) == CAP  # a third worker is idle
    shown = json_of(rqbeat("show", SID, "--json"))
    assert [r["job_id"] for r in shown["runs_in_flight"]] == [job for job, _, _, _ in first_two]
    assert shown["definition"]["max_concurrent"] == CAP
    assert f"runs in flight: {CAP} of at most {CAP}" in ok(rqbeat("show", SID))
    assert f"overlap allow_all (at most {CAP} in flight)" in ok(rqbeat("next", SID))
    assert json_of(rqbeat("status", "--json"))["allow_all_runs"] == CAP
    assert f"{CAP} of allow_all schedules" in ok(rqbeat("status"))
    for n in range(CAP + 1, CAP + 5):  # each run's end lets one more start
        open_gate(conn)
        wait_started(conn, n)
    runs = finish(conn, rqbeat)
    rows = started(conn)
    keys = [key for _, key, _, _ in rows]
    assert keys == [f"{SID}:{fire_ms(job)}" for job, _, _, _ in rows]
    assert len(set(keys)) == len(keys)  # one key per fire
    assert runs == dict.fromkeys(keys, 1)  # each fire ran once
    assert max(n for _, _, n, _ in rows) == CAP  # reached, never passed
    fires = [fire_ms(job) for job, _, _, _ in rows]
    assert fires == sorted(fires)  # in the order of the fires
    # history: one dispatched and one succeeded per fire, and the fires the cap kept out
    # counted missed (misfire = skip): every fire from the first to the last accounted for
    dispatched = [parse_iso_ms(e.fields["fire_at"]) for e in events(conn, "dispatched")]
    succeeded = [parse_iso_ms(e.fields["fire_at"]) for e in events(conn, "succeeded")]
    assert dispatched == fires and sorted(succeeded) == fires
    assert all(int(e.fields["in_flight"]) <= CAP for e in events(conn, "dispatched"))
    missed = sum(int(e.fields["count"]) for e in events(conn, "missed"))
    between = cron.fires_between(schedule.trigger, fires[0], fires[-1], 1000)
    assert len(between) + 1 == len(fires) + missed


def test_a_failed_run_is_retried_while_the_others_go_on(
    cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path
) -> None:
    conn.set("test:allow:fail_start", 2)  # the second run to start fails
    start(cluster, conn, rqbeat, app)
    first, failing = wait_started(conn, 2)[:2]
    # the retry (attempt 2 of the same fire) starts, and holds a slot until its gate opens
    retry = wait_for(
        lambda: next((r for r in started(conn) if r[1] == failing[1] and r[3] == 2), None),
        WAIT_S,
        what="the failed fire's attempt 2",
    )
    assert retry[0] == f"{SID}-{fire_ms(failing[0])}-2"
    open_gate(conn)  # one run ends: the other slot goes on with later fires
    later = wait_for(
        lambda: [r for r in started(conn) if fire_ms(r[0]) > fire_ms(failing[0]) and r[3] == 1] or None,
        WAIT_S,
        what="a later fire to start beside the retry",
    )
    assert later
    runs = finish(conn, rqbeat)
    shown = ok(rqbeat("history", SID)).splitlines()
    assert any(
        line.split()[2:3] == ["failed"] and failing[0] in line and "-> retry at" in line for line in shown
    )
    assert any(line.split()[2:4] == ["succeeded", "worker"] and retry[0] in line for line in shown)
    assert runs[failing[1]] == 1  # the failed fire succeeded once, on attempt 2
    failed = events(conn, "failed")
    assert [(e.fields["job_id"], e.fields["next_attempt"]) for e in failed] == [(failing[0], "2")]
    attempts = [(e.fields["fire_at"], e.fields["attempt"]) for e in events(conn, "dispatched")]
    fire_at = failed[0].fields["fire_at"]
    assert [a for f, a in attempts if f == fire_at] == ["1", "2"]
    ok_entries = [e for e in events(conn, "succeeded") if e.fields["fire_at"] == fire_at]
    assert [e.fields["attempt"] for e in ok_entries] == ["2"]
    assert set(runs.values()) == {1} and first[1] in runs


@pytest.mark.slow
def test_a_leader_kill_9_with_runs_in_flight_loses_and_doubles_nothing(
    cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path
) -> None:
    schedule, replicas = start(cluster, conn, rqbeat, app, replicas=("a", "b"))
    wait_started(conn, CAP)
    wait_for(lambda: waiting_for_a_slot(conn), WAIT_S, what="the next fire to wait at the cap")
    old = cluster.leader(conn)
    assert old is not None
    kill_group(replicas[old])  # kill -9 with two runs in flight and a fire waiting
    new = cluster.wait_leader(conn, timeout=STARTUP_S, other_than=old)
    assert new != old
    for n in range(CAP + 1, CAP + 5):  # the runs' ends wake the waiting fire under the new leader
        open_gate(conn)
        wait_started(conn, n)
    runs = finish(conn, rqbeat)
    rows = started(conn)
    keys = [key for _, key, _, _ in rows]
    assert runs == dict.fromkeys(keys, 1)  # nothing doubled
    fires = [fire_ms(job) for job, _, _, _ in rows]
    dispatched = [parse_iso_ms(e.fields["fire_at"]) for e in events(conn, "dispatched")]
    succeeded = sorted(parse_iso_ms(e.fields["fire_at"]) for e in events(conn, "succeeded"))
    assert dispatched == fires == succeeded  # nothing lost: each dispatched fire acked once
    epochs = {e.fields["epoch"] for e in events(conn, "dispatched")}
    assert len(epochs) == 2, f"runs dispatched under epochs {epochs}: one per leader"
    missed = sum(int(e.fields["count"]) for e in events(conn, "missed"))
    between = cron.fires_between(schedule.trigger, fires[0], fires[-1], 1000)
    assert len(between) + 1 == len(fires) + missed  # every fire ran or is counted missed


def test_bad_input_is_refused_with_nothing_written(rqbeat: Invoke, conn: Redis, tmp_path: Path) -> None:
    target = "myapp.tasks.reports.export"
    ok(
        rqbeat(
            "add",
            "nightly",
            target,
            "--cron",
            "30 2 * * *",
            "--overlap",
            "allow_all",
            "--max-concurrent",
            "3",
        )
    )
    definition = json_of(rqbeat("show", "nightly", "--json"))["definition"]
    assert (definition["overlap"], definition["max_concurrent"]) == ("allow_all", 3)

    def keyspace() -> dict[str, dict[bytes, bytes] | str]:
        out: dict[str, dict[bytes, bytes] | str] = {}
        for key in sorted(str(text(k)) for k in conn.keys("*")):
            kind = str(text(conn.type(key)))
            out[key] = conn.hgetall(key) if kind == "hash" else kind  # type: ignore[assignment]
        return out

    before = keyspace()
    for args, message in [
        (["add", "a2", target, "--every", "1m", "--overlap", "allow_all"], "max_concurrent: is required"),
        (["add", "a3", target, "--every", "1m", "--max-concurrent", "2"], "max_concurrent: needs overlap"),
        (["add", "a4", target, "--every", "1m", "--overlap", "allow_all", "--max-concurrent", "0"], "from 1"),
        (["set", "nightly", "--max-concurrent", "-1"], "max_concurrent: must be from 1 to 1000"),
        (["set", "nightly", "--max-runs", "4"], "max_runs: cannot be combined with overlap = allow_all"),
        (["set", "nightly", "--unset", "max-concurrent"], "max_concurrent: is required"),
    ]:
        result = rqbeat(*args)
        assert result.exit_code != 0 and message in result.output, (args, result.output)
    toml = tmp_path / "bad.toml"
    toml.write_text(f'[schedules.b1]\ntarget = "{target}"\nevery = "1m"\noverlap = "allow_all"\n')
    result = rqbeat("apply", str(toml))
    assert result.exit_code != 0 and "max_concurrent: is required" in result.output
    assert keyspace() == before
    ok(rqbeat("set", "nightly", "--max-concurrent", "5"))
    assert json_of(rqbeat("show", "nightly", "--json"))["definition"]["max_concurrent"] == 5
    ok(rqbeat("set", "nightly", "--overlap", "skip"))  # leaving allow_all drops the cap
    assert "max_concurrent" not in json_of(rqbeat("show", "nightly", "--json"))["definition"]


def test_pause_then_rm_with_runs_in_flight(cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path) -> None:
    start(cluster, conn, rqbeat, app)
    first_two = wait_started(conn, CAP)
    ok(rqbeat("pause", SID))  # the runs in flight finish and are acked; nothing new starts
    open_gate(conn)
    wait_for(lambda: in_flight(conn) == CAP - 1, WAIT_S, what="one run's ack while paused")
    assert [e.fields["job_id"] for e in events(conn, "succeeded")] in (
        [first_two[0][0]],
        [first_two[1][0]],
    )
    assert len(started(conn)) == CAP
    ok(rqbeat("rm", SID))  # the other run is forgotten: its end writes nothing
    assert not conn.exists(K.runs(SID))
    wait_for(lambda: conn.zcard(K.concurrent) == 0, WAIT_S, what="the leader to drop the removed run")
    open_gate(conn)
    wait_for(lambda: conn.hlen("test:allow:runs") == CAP, WAIT_S, what="the last run to end")
    assert (
        not conn.exists(K.schedule(SID)) and not conn.exists(K.history(SID)) and not conn.exists(K.runs(SID))
    )


def test_plain_rq_worker_runs_are_acked_retried_and_given_up_by_the_leader(
    cluster: Cluster, conn: Redis, rqbeat: Invoke
) -> None:
    cluster.replica("r1")
    cluster.wait_leader(conn, timeout=STARTUP_S)
    cluster.plain_rq_worker("p1", "default")
    cap = ["--overlap", "allow_all", "--max-concurrent", "2"]
    ok(rqbeat("add", "plain", "tests.jobs.record", "--every", "1s", *cap))
    ok(rqbeat("add", "doomed", "tests.jobs.fail", "--every", "1h", "--max-attempts", "2", *cap))
    ok(rqbeat("trigger", "doomed"))

    def entries(sid: str, name: str) -> list[HistoryEntry]:
        return [e for e in Client(conn).history(sid, count=1000) if e.event == name]

    wait_for(lambda: len(entries("plain", "succeeded")) >= 3, WAIT_S, what="3 acks by the leader")
    assert {e.fields["by"] for e in entries("plain", "succeeded")} == {"watchdog"}
    gave_up = wait_for(lambda: entries("doomed", "gave_up"), WAIT_S, what="the doomed fire given up")
    assert gave_up[0].fields["attempt"] == "2" and "boom" in gave_up[0].fields["error"]
    assert [e.fields["next_attempt"] for e in entries("doomed", "failed")] == ["2"]
    assert conn.zscore(K.failing, "doomed") is not None  # `rqbeat check` and the alert see it
    assert in_flight_of(conn, "doomed") == 0
    counts = {str(text(k)): int(v) for k, v in conn.hgetall("test:runs").items()}
    assert counts and set(counts.values()) == {1}


def in_flight_of(conn: Redis, sid: str) -> int:
    return len(concurrent.read_runs(conn, K, sid))


def test_a_trigger_at_the_cap_waits_for_a_slot_and_runs_however_late(
    cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path
) -> None:
    """``rqbeat trigger`` at the cap: the fire waits for a slot, past the misfire grace,
    and runs once a run ends -- a trigger is a request, never dropped by ``skip``."""
    cluster.replica("r1")
    cluster.wait_leader(conn, timeout=STARTUP_S)
    cluster.worker("w1", QUEUE, extra=["--path", str(app)])
    cluster.worker("w2", QUEUE, extra=["--path", str(app)])
    toml = app / "hourly.toml"
    toml.write_text(
        f'[schedules.{SID}]\ntarget = "myapp.tasks.reports.export"\nargs = ["eu"]\n'
        f'every = "1h"\nqueue = "{QUEUE}"\noverlap = "allow_all"\nmax_concurrent = 1\nmisfire = "skip"\n'
    )
    ok(rqbeat("apply", str(toml), "--path", str(app)))
    ok(rqbeat("trigger", SID))  # the one slot: held until the gate opens
    first = wait_started(conn, 1)[0]
    ok(rqbeat("trigger", SID))  # at the cap
    asked = parse_iso_ms(events(conn, "triggered")[-1].fields["fire_at"])
    wait_for(lambda: waiting_for_a_slot(conn), WAIT_S, what="the triggered fire to wait at the cap")
    grace_passed = asked + policy.MISFIRE_GRACE_MS + 1_000
    wait_for(lambda: redis_now_ms(conn) > grace_passed, WAIT_S, what="the wait to pass the misfire grace")
    assert len(started(conn)) == 1 and waiting_for_a_slot(conn)
    open_gate(conn)  # the run ends: the slot goes to the triggered fire, as it is
    second = wait_started(conn, 2)[1]
    assert second[0] == f"{SID}-{asked}-1" and second[1] == f"{SID}:{asked}"
    assert fire_ms(first[0]) < asked
    assert events(conn, "missed") == []
    open_gate(conn)
    wait_for(lambda: in_flight(conn) == 0, WAIT_S, what="the triggered run's ack")
    assert [parse_iso_ms(e.fields["fire_at"]) for e in events(conn, "succeeded")][-1] == asked
