"""Backfill against a real Redis, real replicas and ``rqbeat worker`` processes.

A minutely report schedule is backfilled over the last 100 minutes while an
every-second schedule fires live on the same leader. The job (``tests.jobs.record``)
counts its runs per idempotency key, so "each fire exactly once" is counted, not
assumed; a backfill's key (``<id>:<fire ms>:backfill``) is apart from the live runs'.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from devtools.cluster import Cluster, kill_group, runs_per_key
from devtools.processes import Process, wait_for
from scheduler import BackfillActive, BadWindow, Client, Schedule
from scheduler.audit import cli_user
from scheduler.backfill import Status
from scheduler.clock import iso, redis_now_ms
from scheduler.editlog import read_log
from scheduler.keys import Keys
from scheduler.lua.backfills import RECORD_SUCCESS_LUA
from scheduler.protocol import BackfillState
from tests.cli import Invoke, json_of, ok
from tests.integration.test_failover import job_epochs
from tests.keyspace import content, snapshot

pytestmark = pytest.mark.integration

K = Keys()
REPORT = "hourly-rollup"
LIVE = "tick"
WINDOW_FIRES = 100
MINUTE_MS = 60_000


def report(**changes: Any) -> Schedule:
    """A minutely report in Berlin time, retried up to 3 times, counting its runs."""
    settings: dict[str, Any] = {
        "id": REPORT,
        "target": "tests.jobs.record",
        "cron": "* * * * *",
        "timezone": "Europe/Berlin",
        "max_attempts": 3,
        "description": "roll the minute's events up",
    }
    return Schedule(**(settings | changes))


def live() -> Schedule:
    return Schedule(
        id=LIVE, target="tests.jobs.record", every_ms=1000, kwargs={"tag": "live"}, max_attempts=3
    )


def window(conn: Redis, fires: int = WINDOW_FIRES) -> tuple[int, int]:
    """The last ``fires`` whole minutes before now: [from, to)."""
    to_ms = redis_now_ms(conn) // MINUTE_MS * MINUTE_MS
    return to_ms - fires * MINUTE_MS, to_ms


def status(conn: Redis, sid: str = REPORT) -> Status:
    found = Client(conn).backfill_status(sid)
    assert found is not None
    return found


def wait_done(conn: Redis, timeout: float, sid: str = REPORT) -> Status:
    def finished() -> Status | None:
        found = status(conn, sid)
        return None if found.state is BackfillState.ACTIVE else found

    return wait_for(finished, timeout=timeout, what=f"the backfill of {sid} to finish")


def backfill_runs(conn: Redis) -> dict[int, int]:
    """Runs per backfilled fire (epoch ms), from the jobs' own counts."""
    return {int(key.split(":")[1]): n for key, n in runs_per_key(conn).items() if key.endswith(":backfill")}


# -- refusals: nothing written ----------------------------------------------------------


def test_bad_input_is_refused_with_a_clear_error_and_nothing_written(rqbeat: Invoke, conn: Redis) -> None:
    client = Client(conn)
    client.upsert(report())
    client.upsert(Schedule(id="every-second", target="tests.jobs.record", every_ms=1000))
    start, end = window(conn)
    now = redis_now_ms(conn)
    cases = [
        (["nope", "--from", iso(start), "--to", iso(end)], 1, "nope"),
        ([REPORT, "--from", iso(end), "--to", iso(start)], 2, "must be before --to"),
        ([REPORT, "--from", iso(start), "--to", iso(now + 3_600_000)], 2, "is in the future"),
        (["every-second", "--from", iso(end - 3 * 3_600_000), "--to", iso(end)], 2, "more than 10,000"),
        ([REPORT, "--from", "yesterday", "--to", iso(end)], 2, "from: must be an ISO time"),
        ([REPORT, "--from", iso(start), "--to", iso(end), "--overlap", "sometimes"], 2, "sometimes"),
        ([REPORT, "--from", iso(start)], 2, "--from and --to are required"),
        ([REPORT, "--status", "--from", iso(start)], 2, "take no window"),
        ([REPORT, "--from", iso(start), "--to", iso(end), "--by", " "], 2, "must not be empty"),
        ([REPORT, "--cancel", "--note", "x" * 501], 2, "at most 500 characters"),
    ]
    before = snapshot(conn)
    for args, code, message in cases:
        result = rqbeat("backfill", *args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert snapshot(conn) == before, args


def test_a_second_backfill_while_one_runs_is_refused(rqbeat: Invoke, conn: Redis) -> None:
    client = Client(conn)
    client.upsert(report())
    start, end = window(conn, 5)
    ok(rqbeat("backfill", REPORT, "--from", iso(start), "--to", iso(end), "--no-wait"))
    before = snapshot(conn)
    result = rqbeat("backfill", REPORT, "--from", iso(start), "--to", iso(end))
    assert result.exit_code == 1 and "has a backfill running" in result.output, result.output
    with pytest.raises(BackfillActive):
        client.backfill(REPORT, start, end)
    assert snapshot(conn) == before
    assert "canceled" in ok(rqbeat("backfill", REPORT, "--cancel"))
    assert status(conn).state is BackfillState.CANCELED
    assert conn.zcard(K.backfills) == 0


def test_a_backfill_and_its_cancel_are_audited_in_the_history_and_the_log(
    rqbeat: Invoke, conn: Redis
) -> None:
    Client(conn).upsert(report())
    begin, end = window(conn, 3)
    note = "replay the outage of the night"
    ok(
        rqbeat(
            "backfill",
            REPORT,
            "--from",
            iso(begin),
            "--to",
            iso(end),
            "--no-wait",
            "--by",
            "ops-bot",
            "--note",
            note,
        )
    )
    ok(rqbeat("backfill", REPORT, "--cancel", "--by", "oncall", "--note", "upstream down"))
    log = read_log(conn, K, 10, schedule_id=REPORT)
    assert [(e.event, e.by, e.version, e.note) for e in log] == [
        ("created", "api", "1", ""),
        ("backfill_started", "ops-bot", "1", note),
        ("backfill_canceled", "oncall", "1", "upstream down"),
    ]
    assert log[1].changed == f"{iso(begin)}..{iso(end)}" and log[1].extra["fires"] == "3"
    history = [(e.event, e.fields.get("by")) for e in Client(conn).history(REPORT)]
    assert history[-2:] == [("backfill_started", "ops-bot"), ("backfill_canceled", "oncall")]
    shown = ok(rqbeat("log", "--id", REPORT))
    assert "backfill_started" in shown and "ops-bot" in shown and "upstream down" in shown


def test_dry_run_lists_the_fires_oldest_first_and_writes_nothing(rqbeat: Invoke, conn: Redis) -> None:
    Client(conn).upsert(report())
    start, end = window(conn, 3)
    before = snapshot(conn)
    text = ok(rqbeat("backfill", REPORT, "--from", iso(start), "--to", iso(end), "--dry-run"))
    lines = text.splitlines()
    assert lines[0].startswith(f"would run 3 of 3 fires of {REPORT}")
    assert [line.split()[0] for line in lines[1:]] == [iso(start + i * MINUTE_MS) for i in range(3)]
    plan = json_of(rqbeat("backfill", REPORT, "--from", iso(start), "--to", iso(end), "--dry-run", "--json"))
    assert plan["run"] == [iso(start + i * MINUTE_MS) for i in range(3)] and plan["skip"] == []
    assert snapshot(conn) == before
    with pytest.raises(BadWindow):
        Client(conn).backfill(REPORT, end, start, dry_run=True)


def test_a_wall_time_without_offset_is_read_in_the_schedules_zone(rqbeat: Invoke, conn: Redis) -> None:
    Client(conn).upsert(report(cron="0 9 * * *"))  # 09:00 Berlin = 08:00 UTC in winter
    plan = json_of(
        rqbeat("backfill", REPORT, "--from", "2026-11-02", "--to", "2026-11-04", "--dry-run", "--json")
    )
    assert plan["run"] == ["2026-11-02T08:00:00.000Z", "2026-11-03T08:00:00.000Z"]


# -- the succeeded record -----------------------------------------------------------------


def test_the_succeeded_record_keeps_chains_of_consecutive_fires(conn: Redis) -> None:
    """Live acks extend one chain; a gap starts another; a backfill filling the gap
    joins them; a duplicate changes nothing; damaged members are never written."""
    record = conn.register_script(RECORD_SUCCESS_LUA + "record_success(KEYS[1], ARGV[1], ARGV[2])")
    key = K.succeeded("s")

    def ran(fire: int) -> list[str]:
        record(keys=[key], args=[fire, fire + 1000])
        members: list[bytes] = conn.zrange(key, 0, -1)  # type: ignore[assignment]
        return [m.decode() for m in members]

    assert ran(1000) == ["1000:1000:2000"]
    assert ran(2000) == ["1000:2000:3000"]
    assert ran(3000) == ["1000:3000:4000"]
    assert ran(6000) == ["1000:3000:4000", "6000:6000:7000"]  # 4000 and 5000 missed
    assert ran(4000) == ["1000:4000:5000", "6000:6000:7000"]  # a backfill of 4000
    assert ran(2000) == ["1000:4000:5000", "6000:6000:7000"]  # a duplicate: nothing new
    assert ran(5000) == ["1000:6000:7000"]  # the gap filled: one chain again


# -- with a leader and workers --------------------------------------------------------


def start(
    cluster: Cluster, conn: Redis, replicas: tuple[str, ...] = ("a",), workers: int = 2
) -> dict[str, Process]:
    """Replicas (by node name) and workers up, a leader elected."""
    started = {node: cluster.replica(node, lease="2s") for node in replicas}
    for i in range(workers):
        cluster.worker(f"w{i}")
    wait_for(lambda: conn.scard("rq:workers") >= workers, timeout=20, what=f"{workers} RQ workers")
    cluster.wait_leader(conn, timeout=10)
    return started


def test_a_100_fire_backfill_runs_each_fire_once_beside_a_live_schedule(
    cluster: Cluster, conn: Redis, rqbeat: Invoke
) -> None:
    start(cluster, conn)
    client = Client(conn)
    client.upsert(live())
    wait_for(lambda: len(runs_per_key(conn, "live")) >= 2, timeout=20, what="the live schedule's first runs")
    client.upsert(report())
    begin, end = window(conn)
    out = ok(rqbeat("backfill", REPORT, "--from", iso(begin), "--to", iso(end), "--no-wait"))
    assert out.startswith(f"started backfill of {REPORT}: {WINDOW_FIRES} fires to run")
    live_before = len(runs_per_key(conn, "live"))

    done = wait_done(conn, timeout=180)
    assert (done.state, done.succeeded, done.skipped, done.failed) == (BackfillState.DONE, WINDOW_FIRES, 0, 0)
    counts = backfill_runs(conn)
    assert sorted(counts) == [begin + i * MINUTE_MS for i in range(WINDOW_FIRES)]
    assert set(counts.values()) == {1}, {f: n for f, n in counts.items() if n != 1}
    # the live schedule fired all along, on the same leader
    assert len(runs_per_key(conn, "live")) > live_before
    assert not any(key.endswith(":backfill") for key in runs_per_key(conn, "live"))
    # the history shows the backfill's runs and its end (capped: not all 100 are kept)
    events = [e.event for e in client.history(REPORT, count=1000)]
    assert events[-1] == "backfill_done" and "backfill_succeeded" in events
    # the window is recorded as succeeded: again without --force runs nothing, writes nothing
    # (the live schedules keep writing their own keys meanwhile: compare the backfill's)
    mine = [K.backfill(REPORT), K.backfills]
    before = [content(conn, key) for key in mine]
    again = rqbeat("backfill", REPORT, "--from", iso(begin), "--to", iso(end))
    assert again.exit_code == 1 and "nothing to backfill" in again.output, again.output
    assert [content(conn, key) for key in mine] == before
    # --force runs them again (here the first three)
    ok(rqbeat("backfill", REPORT, "--from", iso(begin), "--to", iso(begin + 3 * MINUTE_MS), "--force"))
    wait_done(conn, timeout=60)
    assert [backfill_runs(conn)[begin + i * MINUTE_MS] for i in range(4)] == [2, 2, 2, 1]


def test_fires_the_live_schedule_ran_are_skipped(cluster: Cluster, conn: Redis, rqbeat: Invoke) -> None:
    start(cluster, conn, workers=1)
    client = Client(conn)
    client.upsert(live())
    fires = wait_for(
        lambda: (
            f if len(f := sorted(int(k.split(":")[1]) for k in runs_per_key(conn, "live"))) >= 4 else None
        ),
        timeout=30,
        what="4 live runs",
    )
    # 3 fires before the schedule existed, then those that ran and were acked: all but
    # the last (the next fire is dispatched only after the ack of the one before)
    begin, end = fires[0] - 3000, fires[-2] + 1
    plan = client.backfill(LIVE, begin, end, dry_run=True)
    ran = {f for f in fires if begin <= f < end}
    assert set(plan.skipped) == ran and set(plan.to_run) == set(plan.fires) - ran
    assert len(plan.to_run) >= 3


@pytest.mark.slow
def test_a_leader_kill_9_in_the_middle_loses_and_doubles_nothing(
    cluster: Cluster, conn: Redis, rqbeat: Invoke
) -> None:
    replicas = start(cluster, conn, replicas=("a", "b"))
    client = Client(conn)
    client.upsert(live())
    client.upsert(report())
    begin, end = window(conn)
    ok(rqbeat("backfill", REPORT, "--from", iso(begin), "--to", iso(end), "--no-wait"))
    wait_for(lambda: status(conn).succeeded >= 30, timeout=120, what="30 backfilled fires")
    old = cluster.leader(conn)
    assert old is not None
    kill_group(replicas[old])  # kill -9, mid-backfill
    new = cluster.wait_leader(conn, timeout=15, other_than=old)
    assert new != old
    done = wait_done(conn, timeout=180)
    assert (done.state, done.succeeded, done.failed) == (BackfillState.DONE, WINDOW_FIRES, 0)
    counts = backfill_runs(conn)
    assert sorted(counts) == [begin + i * MINUTE_MS for i in range(WINDOW_FIRES)]
    assert set(counts.values()) == {1}, {iso(f): n for f, n in counts.items() if n != 1}
    epochs = {epoch for job, epoch in job_epochs(conn).items() if job.startswith(f"{REPORT}-bf-")}
    assert len(epochs) == 2, f"backfill jobs dispatched under epochs {epochs}: one per leader"


def test_show_and_status_report_the_progress(rqbeat: Invoke, conn: Redis) -> None:
    Client(conn).upsert(report())
    begin, end = window(conn, 4)
    assert ok(rqbeat("backfill", REPORT, "--status")) == f"{REPORT} has no backfill\n"
    assert json_of(rqbeat("backfill", REPORT, "--status", "--json")) is None
    ok(rqbeat("backfill", REPORT, "--from", iso(begin), "--to", iso(end)))
    line = f"backfill {REPORT} [{iso(begin)}, {iso(end)}): 0/4 fires (0 ran, 0 skipped, 0 failed), active"
    assert ok(rqbeat("backfill", REPORT, "--status")) == line + "\n"
    assert ok(rqbeat("show", REPORT)).endswith(line + "\n")
    shown = json_of(rqbeat("show", REPORT, "--json"))["backfill"]
    assert (shown["state"], shown["fires"], shown["in_flight"]) == ("active", 4, None)
    assert shown["by"] == cli_user()
    result = rqbeat("backfill", "nope", "--status")
    assert result.exit_code == 1 and "nope" in result.output
