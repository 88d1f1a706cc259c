"""Windows, limits, exclusions and several crons end to end: schedules written by
``rqbeat apply`` from a TOML file, a real replica, a real ``rqbeat worker`` importing
the user's app from a directory outside the repository. Runs are counted per fire
key by the job itself; every wait polls Redis with a deadline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis

from devtools.apps import write_app
from devtools.cluster import Cluster, runs_per_key
from devtools.processes import wait_for
from scheduler import cron
from scheduler.clock import iso, parse_iso_ms, redis_now_ms
from scheduler.keys import Keys
from scheduler.protocol import ScheduleState
from scheduler.records import text
from scheduler.store import Client
from tests.cli import Invoke, ok

pytestmark = pytest.mark.integration

K = Keys()
TARGET = "myapp.tasks.reports.daily_summary"
REPORTS_PY = '''"""The user's job module: records each run under its fire's idempotency key."""

from rq import get_current_job

from workers import current_fire


def daily_summary(region: str = "eu") -> str:
    fire = current_fire()
    job = get_current_job()
    assert fire is not None and job is not None
    job.connection.hincrby("test:runs", fire.key, 1)
    return f"summary for {region}"
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """``<tmp>/app/myapp/tasks/reports.py``: a user's app, outside the repository."""
    return write_app(tmp_path / "app", REPORTS_PY)


Apply = Callable[[str], None]


@pytest.fixture
def apply(rqbeat: Invoke, tmp_path: Path) -> Apply:
    """``rqbeat apply`` of a TOML text."""

    def write(toml: str) -> None:
        path = tmp_path / "schedules.toml"
        path.write_text(toml)
        ok(rqbeat("apply", str(path)))

    return write


@pytest.fixture
def start(cluster: Cluster, conn: Redis, app: Path) -> Callable[[], None]:
    """Start a replica (waiting for its lease) and a worker that imports the app."""

    def go() -> None:
        cluster.replica("r1")
        cluster.wait_leader(conn, timeout=60)  # a cold start on a loaded machine takes seconds
        cluster.worker("w1", extra=["-P", str(app)])

    return go


def fires_run(conn: Redis, sid: str) -> list[int]:
    """The fires of ``sid`` that ran, each exactly once (else the assertion fails)."""
    counts = {k: v for k, v in runs_per_key(conn).items() if k.startswith(f"{sid}:")}
    assert set(counts.values()) <= {1}, f"{sid}: a fire ran twice: {counts}"
    return sorted(int(key.rsplit(":", 1)[1]) for key in counts)


def state(conn: Redis, sid: str) -> str:
    return str(text(conn.hget(K.schedule(sid), "state")))


def events(client: Client, sid: str) -> list[str]:
    return [e.event for e in client.history(sid, 1000)]


def second_after(conn: Redis, seconds: int) -> int:
    """A whole second at least ``seconds`` from now (Redis time), epoch ms."""
    return (redis_now_ms(conn) // 1000 + seconds) * 1000


def test_several_crons_fire_at_their_union_once_each(
    apply: Apply, start: Callable[[], None], conn: Redis, client: Client, rqbeat: Invoke
) -> None:
    apply(
        f"""
[schedules.summary]
target = "{TARGET}"
args = ["eu"]
cron = ["*/2 * * * * *", "*/3 * * * * *"]
timezone = "Europe/Berlin"
misfire = "all"
max_attempts = 3
""",
    )
    start()
    # until a fire that both expressions name (a multiple of 6 s) has run, and one after it
    wait_for(
        lambda: any(
            f % 6000 == 0 and f + 2000 in fires_run(conn, "summary") for f in fires_run(conn, "summary")
        ),
        30,
        what="a shared fire and the next one",
    )
    ran = fires_run(conn, "summary")
    trigger = client.get("summary").schedule.trigger  # type: ignore[union-attr]
    # every fire of the union between the first and the last run ran, once: none lost,
    # none doubled where the two expressions meet
    assert ran == [ran[0], *cron.fires_between(trigger, ran[0], ran[-1], 10_000)]
    assert all(f % 2000 == 0 or f % 3000 == 0 for f in ran)


def test_start_and_end_at_then_completed_then_reopened_by_an_edit(
    apply: Apply, start: Callable[[], None], conn: Redis, client: Client, rqbeat: Invoke
) -> None:
    start_ms = second_after(conn, 3)
    end_ms = start_ms + 3000
    apply(
        f"""
[schedules.window]
target = "{TARGET}"
cron = "* * * * * *"
timezone = "America/New_York"
start_at = "{iso(start_ms)}"
end_at = "{iso(end_ms)}"
misfire = "all"
max_attempts = 3
""",
    )
    assert client.get("window").fire_ms == start_ms  # nothing before start_at
    start()
    wait_for(lambda: state(conn, "window") == ScheduleState.COMPLETED, 30, what="window completed")
    assert fires_run(conn, "window") == list(range(start_ms, end_ms + 1, 1000))
    assert conn.zscore(K.due, "window") is None and conn.zscore(K.running, "window") is None
    assert conn.zscore(K.stale, "window") is None  # nothing more is expected of it
    completed = [e for e in client.history("window", 1000) if e.event == "completed"]
    assert [e.fields["reason"] for e in completed] == ["end_at"]
    listed = json.loads(ok(rqbeat("ls", "--state", "completed", "--json")))
    assert [row["id"] for row in listed] == ["window"]
    assert "completed" in ok(rqbeat("show", "window"))
    assert "then no more fires: end_at" in ok(rqbeat("next", "window"))

    # editing end_at reopens it: due again at the first fire after now
    new_end = second_after(conn, 3)
    out = ok(rqbeat("set", "window", "--end-at", iso(new_end)))
    assert "next fire" in out, out
    wait_for(
        lambda: state(conn, "window") == ScheduleState.COMPLETED and new_end in fires_run(conn, "window"),
        30,
        what="reopened window completed again",
    )
    assert events(client, "window").count("completed") == 2


def test_max_runs_completes_after_that_many_successes(
    apply: Apply, start: Callable[[], None], conn: Redis, client: Client, rqbeat: Invoke
) -> None:
    apply(
        f"""
[schedules.limited]
target = "{TARGET}"
kwargs = {{region = "us"}}
every = "1s"
timezone = "America/New_York"
max_runs = 3
max_attempts = 2
""",
    )
    start()
    wait_for(lambda: state(conn, "limited") == ScheduleState.COMPLETED, 30, what="limited completed")
    assert len(fires_run(conn, "limited")) == 3
    assert conn.hget(K.schedule("limited"), "runs_done") == b"3"
    entries = client.history("limited", 1000)
    assert [e.event for e in entries].count("succeeded") == 3
    assert [e.fields.get("reason") for e in entries if e.event == "completed"] == ["max_runs"]
    # raising the limit reopens it for the runs it now allows
    ok(rqbeat("set", "limited", "--max-runs", "5"))
    wait_for(lambda: len(fires_run(conn, "limited")) == 5 and state(conn, "limited") == "completed", 30)
    # an edit that leaves no run allowed keeps it completed: nothing is dispatched
    out = ok(rqbeat("set", "limited", "--max-runs", "4"))
    assert "completed: no fire left" in out, out
    assert state(conn, "limited") == ScheduleState.COMPLETED


def test_excluded_fires_are_skipped_and_recorded(
    apply: Apply, start: Callable[[], None], conn: Redis, client: Client, rqbeat: Invoke
) -> None:
    # a mask on the seconds field: every fire whose second is a multiple of 3 is skipped
    apply(
        f"""
[schedules.masked]
target = "{TARGET}"
cron = "* * * * * *"
timezone = "Europe/Berlin"
exclude = ["*/3 * * * * *", 2020-01-01]
misfire = "all"
max_attempts = 3
""",
    )
    start()
    wait_for(lambda: len(fires_run(conn, "masked")) >= 6, 30, what="six runs")
    ran = fires_run(conn, "masked")
    assert all(f % 3000 != 0 for f in ran), [iso(f) for f in ran]
    skipped = [e for e in client.history("masked", 1000) if e.event == "skipped"]
    assert skipped and all(e.fields["reason"] == "excluded" for e in skipped)
    named = {parse_iso_ms(e.fields["fire_at"]) for e in skipped}
    # each fire between two runs that did not run was recorded as skipped
    gaps = {f for f in range(ran[0], ran[-1], 1000) if f not in ran}
    assert gaps and gaps <= named
    out = ok(rqbeat("next", "masked", "-n", "4"))
    assert "skipped: excluded by '*/3 * * * * *'" in out, out


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--cron", "0 9 * * *", "--exclude", "christmas"],
            "Error: exclude: must be a date (2026-12-25), a date range (2026-12-24..2026-12-26) "
            "or a cron expression (got 'christmas')",
        ),
        (
            ["--cron", "0 9 * * *", "--start-at", "2027-02-01T00:00Z", "--end-at", "2027-01-01T00:00Z"],
            "Error: end_at: must not be before start_at 2027-02-01T00:00:00.000Z "
            "(got '2027-01-01T00:00:00.000Z')",
        ),
        (
            ["--cron", "0 9 * * 1-5", "--cron", "0 9 * * 1-5"],
            "Error: cron: lists the same expression twice (got ['0 9 * * 1-5', '0 9 * * 1-5'])",
        ),
        (
            ["--every", "1h", "--max-runs", "0"],
            "Error: max_runs: must be a whole number from 1 to 1000000000 (got 0)",
        ),
        (
            ["--every", "1h", "--end-at", "soon"],
            "Error: end_at: must be an ISO time, e.g. 2027-01-01T09:00:00+01:00 (got 'soon')",
        ),
    ],
)
def test_bad_settings_are_refused_by_name_and_nothing_is_written(
    rqbeat: Invoke, conn: Redis, tmp_path: Path, args: list[str], error: str
) -> None:
    result = rqbeat("add", "summary", TARGET, "--tz", "Europe/Berlin", *args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == error
    assert conn.keys("rqbeat:*") == []
    path = tmp_path / "bad.toml"
    path.write_text(f'[schedules.summary]\ntarget = "{TARGET}"\ncron = "0 9 * * *"\nexclude = [2027-02-30]\n')
    assert rqbeat("apply", str(path)).exit_code != 0  # TOML itself refuses 30 February
    assert conn.keys("rqbeat:*") == []
