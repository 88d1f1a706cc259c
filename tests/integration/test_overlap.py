"""Overlap policies end to end: a schedule applied from a TOML file, a leader, two
``rqbeat worker``s that import the job from a user's app outside the repository, and a
job that stays in flight until the test opens its gate (no timing margins).

The first run of an every-second schedule is held until more than three fires have
passed; then the gate opens and each policy shows what it does with those fires: how
many runs are in flight (never more than one: two workers could run two), the order
of the fires that run, their history, and one idempotency key per fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from devtools.apps import write_app
from devtools.cluster import Cluster
from devtools.processes import wait_for
from scheduler import cron, rqkeys
from scheduler.clock import iso, parse_iso_ms, redis_now_ms
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.records import text
from scheduler.store import Client, HistoryEntry
from tests.cli import Invoke, json_of, ok

pytestmark = pytest.mark.integration

K = Keys()
SID = "eu-summary"
QUEUE = "reports"
#: Deadlines, not delays: a loaded 2-core machine has taken 15 s to import a process.
STARTUP_S = 60
WAIT_S = 30
SUMMARY_PY = '''"""The user's job module: a report that waits for the test's gate."""

from rq import get_current_job

from workers import current_fire


def daily_summary(region: str) -> str:
    fire, job = current_fire(), get_current_job()
    assert fire is not None and job is not None
    conn = job.connection
    in_flight = conn.incr("test:overlap:in_flight")
    conn.rpush("test:overlap:started", f"{job.id} {fire.key} {in_flight}")
    try:
        if conn.blpop(["test:overlap:gate"], timeout=60) is None:
            raise RuntimeError("the gate never opened")
    finally:
        conn.decr("test:overlap:in_flight")
    conn.hincrby("test:overlap:runs", fire.key, 1)
    return f"{region} {fire.key}"
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """``<tmp>/app/myapp/tasks/reports.py``: a user's app, outside the repository."""
    return write_app(tmp_path / "app", SUMMARY_PY)


@dataclass(frozen=True)
class Started:
    job_id: str
    key: str
    in_flight: int  # runs of the schedule in flight when this one started, itself included

    @property
    def fire_ms(self) -> int:
        return int(self.job_id.rsplit("-", 2)[1])


def started(conn: Redis) -> list[Started]:
    rows = [str(text(r)).split() for r in conn.lrange("test:overlap:started", 0, -1)]
    return [Started(job, key, int(n)) for job, key, n in rows]


def wait_started(conn: Redis, n: int) -> Started:
    def nth() -> Started | None:
        runs = started(conn)
        return runs[n - 1] if len(runs) >= n else None

    return wait_for(nth, WAIT_S, what=f"run #{n} to start")


def open_gate(conn: Redis) -> None:
    conn.rpush("test:overlap:gate", "go")


def events(conn: Redis, *names: str) -> list[HistoryEntry]:
    return [e for e in Client(conn).history(SID, count=1000) if e.event in names]


def after_first_ack(conn: Redis, *names: str) -> list[HistoryEntry]:
    """Entries from the first run's ack on (a loaded leader may dispatch the very first
    fire late enough for the misfire policy to record that too)."""
    entries = events(conn, "succeeded", *names)
    return [e for e in entries[1:] if e.event in names]


def start(
    cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path, *, overlap: str, misfire: str
) -> Schedule:
    cluster.replica("r1")
    cluster.wait_leader(conn, timeout=STARTUP_S)
    for name in ("w1", "w2"):
        cluster.worker(name, QUEUE, extra=["--path", str(app)])
    wait_for(lambda: conn.hlen(K.rq_workers) == 2, STARTUP_S, what="both workers to register")
    toml = app / "schedules.toml"
    toml.write_text(
        f'[schedules.{SID}]\ntarget = "myapp.tasks.reports.daily_summary"\nargs = ["eu"]\n'
        f'every = "1s"\ntimezone = "Europe/Berlin"\nqueue = "{QUEUE}"\nmax_attempts = 3\n'
        f'overlap = "{overlap}"\nmisfire = "{misfire}"\n'
    )
    ok(rqbeat("apply", str(toml), "--path", str(app)))
    schedule = Client(conn).get(SID).schedule
    assert schedule is not None and schedule.overlap == overlap
    return schedule


def hold_first_run(conn: Redis, schedule: Schedule) -> tuple[int, list[int]]:
    """Hold the first run until three fires have passed, end it; return the fire that
    ran and the fires that passed while it was in flight (up to its ack)."""
    first = wait_started(conn, 1).fire_ms
    wait_for(lambda: redis_now_ms(conn) >= first + 3_500, 10, what="three fires to pass")
    open_gate(conn)
    wait_for(lambda: events(conn, "succeeded"), WAIT_S, what="the first run's ack")
    ack_ms = parse_iso_ms(events(conn, "succeeded")[0].fields["at"])
    return first, cron.fires_between(schedule.trigger, first, ack_ms, 100)


def finish(conn: Redis, rqbeat: Invoke, *, cancelling: bool = False) -> None:
    """Pause, let the run in flight end, and check each fire ran at most once under its
    own key: every started run to its end, or (``cancelling``) the last one."""
    ok(rqbeat("pause", SID))
    for _ in range(3):
        open_gate(conn)

    def idle() -> bool:
        state = {str(text(k)): str(text(v)) for k, v in conn.hgetall(K.schedule(SID)).items()}
        return state["state"] == "paused" and "job_id" not in state

    wait_for(idle, WAIT_S, what="the last run to end")
    runs = {str(text(k)): int(v) for k, v in conn.hgetall("test:overlap:runs").items()}
    keys = [s.key for s in started(conn)]
    assert keys == [f"{SID}:{s.fire_ms}" for s in started(conn)]
    assert len(set(keys)) == len(keys)  # one key per fire
    if cancelling:  # the stopped runs never end; a stopped horse never counts itself out
        assert runs[keys[-1]] == 1 and set(runs.values()) == {1}
        return
    assert runs == dict.fromkeys(keys, 1)  # each run once
    assert [s.in_flight for s in started(conn)] == [1] * len(keys)  # never two at once


@pytest.mark.parametrize("misfire", ["skip", "coalesce"])
def test_buffer_one_runs_the_latest_passed_fire_next(
    cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path, misfire: str
) -> None:
    schedule = start(cluster, conn, rqbeat, app, overlap="buffer_one", misfire=misfire)
    first, passed = hold_first_run(conn, schedule)
    assert len(passed) >= 3
    assert wait_started(conn, 2).fire_ms == passed[-1]  # the latest waited, whatever the misfire policy
    missed = after_first_ack(conn, "missed")[0]
    assert (missed.fields["count"], missed.fields["next_fire_at"]) == (str(len(passed) - 1), iso(passed[-1]))
    finish(conn, rqbeat)
    dispatched = [parse_iso_ms(e.fields["fire_at"]) for e in events(conn, "dispatched")]
    assert dispatched[:2] == [first, passed[-1]]


def test_buffer_all_runs_every_passed_fire_in_order(
    cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path
) -> None:
    schedule = start(cluster, conn, rqbeat, app, overlap="buffer_all", misfire="skip")
    first, passed = hold_first_run(conn, schedule)
    assert len(passed) >= 3
    for n, fire in enumerate(passed[:3], start=2):
        assert wait_started(conn, n).fire_ms == fire  # each waited, oldest first
        open_gate(conn)
    finish(conn, rqbeat)
    chain = events(conn, "dispatched", "succeeded", "missed")
    last = next(
        n for n, e in enumerate(chain) if e.event == "dispatched" and e.fields["fire_at"] == iso(passed[2])
    )
    first_ack = next(n for n, e in enumerate(chain) if e.event == "succeeded")
    assert [e for e in chain[first_ack:last] if e.event == "missed"] == []  # none was dropped
    history = [(e.event, parse_iso_ms(e.fields["fire_at"])) for e in events(conn, "dispatched", "succeeded")]
    assert history[:8] == [
        (event, fire) for fire in [first, *passed[:3]] for event in ("dispatched", "succeeded")
    ]


def test_skip_hands_the_passed_fires_to_the_misfire_policy(
    cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path
) -> None:
    schedule = start(cluster, conn, rqbeat, app, overlap="skip", misfire="skip")
    first, passed = hold_first_run(conn, schedule)
    assert len(passed) >= 3
    second = wait_started(conn, 2).fire_ms
    assert second == cron.next_fire_ms(schedule.trigger, passed[-1])  # none of them ran
    missed = after_first_ack(conn, "missed")[0]
    assert (missed.fields["count"], missed.fields["next_fire_at"]) == (str(len(passed)), iso(second))
    finish(conn, rqbeat)
    dispatched = [parse_iso_ms(e.fields["fire_at"]) for e in events(conn, "dispatched")]
    assert dispatched[:2] == [first, second]


def rq_status(conn: Redis, job_id: str) -> str | None:
    return text(conn.hget(rqkeys.job(job_id), "status"))


def running_jobs(conn: Redis) -> list[str]:
    """The schedule's jobs RQ says are running (its started registry of the queue)."""
    members: list[bytes] = conn.zrange(rqkeys.started(QUEUE), 0, -1)  # type: ignore[assignment]
    started_ids = [str(text(j)) for j in members]
    return sorted(j.split(":")[0] for j in started_ids if j.startswith(SID))


def test_cancel_other_stops_the_run_for_the_next_fire(
    cluster: Cluster, conn: Redis, rqbeat: Invoke, app: Path
) -> None:
    schedule = start(cluster, conn, rqbeat, app, overlap="cancel_other", misfire="coalesce")
    first = wait_started(conn, 1)  # its gate never opens: only a newer fire ends it
    second = wait_started(conn, 2)
    wait_for(lambda: rq_status(conn, first.job_id) == "stopped", WAIT_S, what="RQ to stop the first run")
    third = wait_started(conn, 3)
    wait_for(lambda: rq_status(conn, second.job_id) == "stopped", WAIT_S, what="RQ to stop the second run")
    wait_for(lambda: running_jobs(conn) == [third.job_id], WAIT_S, what="one run in flight")
    assert first.fire_ms < second.fire_ms < third.fire_ms
    # from the first run that started (a run cancelled while still queued never starts)
    entries = events(conn, "dispatched", "cancelled", "missed")
    start_at = next(n for n, e in enumerate(entries) if e.fields.get("job_id") == first.job_id)
    ran = [
        (e.event, e.fields["job_id"], e.fields["fire_at"]) for e in entries[start_at:] if e.event != "missed"
    ]
    assert ran[:5] == [
        ("dispatched", first.job_id, iso(first.fire_ms)),
        ("cancelled", first.job_id, iso(first.fire_ms)),
        ("dispatched", second.job_id, iso(second.fire_ms)),
        ("cancelled", second.job_id, iso(second.fire_ms)),
        ("dispatched", third.job_id, iso(third.fire_ms)),
    ]
    # every fire from the first to the third either ran or is counted missed (a late look)
    missed = sum(
        int(e.fields["count"])
        for e in entries[start_at:]
        if e.event == "missed" and parse_iso_ms(e.fields["next_fire_at"]) <= third.fire_ms
    )
    assert len(cron.fires_between(schedule.trigger, first.fire_ms, third.fire_ms, 100)) == 2 + missed
    finish(conn, rqbeat, cancelling=True)


def test_overlap_on_the_command_line(rqbeat: Invoke, conn: Redis) -> None:
    target = "myapp.tasks.reports.daily_summary"
    ok(
        rqbeat(
            "add",
            "nightly",
            target,
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--overlap",
            "buffer_all",
        )
    )
    assert json_of(rqbeat("show", "nightly", "--json"))["definition"]["overlap"] == "buffer_all"
    before = {str(text(k)): str(text(v)) for k, v in conn.hgetall(K.schedule("nightly")).items()}
    refused = rqbeat("set", "nightly", "--overlap", "allow_some")
    assert refused.exit_code == 2 and "'allow_some' is not one of 'skip', 'buffer_one'" in refused.output
    assert {str(text(k)): str(text(v)) for k, v in conn.hgetall(K.schedule("nightly")).items()} == before
    ok(rqbeat("set", "nightly", "--overlap", "cancel_other"))
    assert json_of(rqbeat("show", "nightly", "--json"))["definition"]["overlap"] == "cancel_other"
    ok(rqbeat("set", "nightly", "--unset", "overlap"))
    assert "overlap" not in str(text(conn.hget(K.schedule("nightly"), "definition")))
