"""The ``rqbeat`` command line against a real redis-server (click's CliRunner)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from redis import Redis

from devtools.localredis import free_port
from devtools.processes import RedisServer
from scheduler import stored
from scheduler.cli.app import cli
from scheduler.keys import Keys
from scheduler.model import MAX_PAYLOAD_BYTES
from scheduler.records import text
from tests.cli import Invoke, json_of, ok
from tests.keyspace import snapshot

pytestmark = pytest.mark.integration

K = Keys()


def assert_refused(result: Result, field: str) -> None:
    """Exit 2, one error line that names ``field`` and nothing else (no usage, no traceback)."""
    output = result.output
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: "), output
    assert field in lines[0], output


def summary_of(output: str) -> str:
    """The last line of ``rqbeat apply`` without its timing (`` in 0.1 s``)."""
    last = output.splitlines()[-1]
    assert re.fullmatch(r".* in [0-9]+\.[0-9] s", last), last
    return last.rsplit(" in ", 1)[0]


def toml_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- add / ls / show ----------------------------------------------------------------


def test_add_text(rqbeat: Invoke, conn: Redis) -> None:
    out = ok(rqbeat("add", "s1", "app.jobs.run", "--every", "30s"))
    assert out.startswith("created s1 (version 1), next fire 20")
    assert out.strip().endswith("Z")
    replace = ("add", "s1", "app.jobs.run", "--every", "30s", "--replace")
    assert ok(rqbeat(*replace)).startswith("unchanged s1 (version 1)")
    out = ok(rqbeat(*replace, "--args", '[1, "a"]'))
    assert out.startswith("updated s1 (version 2)")
    definition = json.loads(stored.read_text(conn, K.schedule("s1")) or "")
    assert definition["args"] == [1, "a"]
    assert definition["owner"] == "cli"


def test_add_json_with_every_option(rqbeat: Invoke) -> None:
    data = json_of(
        rqbeat(
            "add",
            "nightly",
            "app.jobs.report",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--args",
            "[1]",
            "--kwargs",
            '{"region": "eu"}',
            "--queue",
            "reports",
            "--timeout",
            "10m",
            "--ttl",
            "1h",
            "--result-ttl",
            "1d",
            "--failure-ttl",
            "7d",
            "--description",
            "Nightly report",
            "--misfire",
            "all",
            "--catchup-window",
            "2h",
            "--jitter",
            "30s",
            "--max-attempts",
            "3",
            "--pause-on-failure",
            "--json",
        )
    )
    assert (data["id"], data["action"], data["version"], data["state"]) == ("nightly", "created", 1, "due")
    assert data["fire_at"].endswith("Z")
    assert data["error"] is None
    assert data["definition"] == {
        "id": "nightly",
        "target": "app.jobs.report",
        "args": [1],
        "kwargs": {"region": "eu"},
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "queue": "reports",
        "timeout": "10m",
        "ttl": "1h",
        "result_ttl": "1d",
        "failure_ttl": "7d",
        "description": "Nightly report",
        "misfire": "all",
        "catchup_window": "2h",
        "overlap": "skip",  # shown like misfire, its default included
        "jitter": "30s",
        "max_attempts": 3,
        "pause_on_failure": True,
        "owner": "cli",
    }


def test_redis_url_from_environment(redis_url: str, conn: Redis) -> None:
    runner = CliRunner()
    env = {"RQBEAT_REDIS_URL": redis_url}
    result = runner.invoke(cli, ["add", "env", "app.jobs.run", "--every", "1m"], env=env)
    assert result.exit_code == 0, result.output
    assert conn.sismember(K.ids, "env")
    listed = runner.invoke(cli, ["ls", "--json"], env=env)
    assert [r["id"] for r in json.loads(listed.output)] == ["env"]


def test_namespace_option(rqbeat: Invoke, conn: Redis) -> None:
    ok(rqbeat("--namespace", "other", "add", "n1", "app.jobs.run", "--every", "1m"))
    assert conn.sismember("other:ids", "n1")
    assert json_of(rqbeat("ls", "--json")) == []
    assert [r["id"] for r in json_of(rqbeat("--namespace", "other", "ls", "--json"))] == ["n1"]


def test_ls(rqbeat: Invoke, conn: Redis) -> None:
    assert ok(rqbeat("ls")).split() == ["ID", "TRIGGER", "TZ", "STATE", "NEXT", "LAST"]
    ok(rqbeat("add", "b-every", "app.jobs.run", "--every", "90s"))
    ok(rqbeat("add", "a-cron", "app.jobs.run", "--cron", "30 2 * * *", "--tz", "Europe/Berlin"))
    ok(rqbeat("pause", "b-every"))
    conn.sadd(K.ids, "c-broken")
    conn.hset(K.schedule("c-broken"), mapping={"definition": "{oops", "state": "due"})

    lines = ok(rqbeat("ls")).splitlines()
    assert lines[0].split() == ["ID", "TRIGGER", "TZ", "STATE", "NEXT", "LAST"]
    # soonest first; then broken (needs attention), then paused
    assert [line.split()[0] for line in lines[1:]] == ["a-cron", "c-broken", "b-every"]
    assert "30 2 * * *" in lines[1]
    assert "Europe/Berlin" in lines[1]
    assert " due " in lines[1]
    assert re.search(r" 20\d\d-\d\d-\d\d 02:30:00 \(in \d", lines[1]), lines[1]  # Berlin wall clock
    assert "every 1m30s" in lines[3]
    assert "paused" in lines[3]
    assert "broken: definition is not valid JSON" in lines[2]
    # columns are aligned: each header starts where its column starts in every row
    state_at = lines[0].index("STATE")
    assert [line[state_at:].split()[0] for line in lines[1:]] == ["due", "broken", "paused"]

    data = json_of(rqbeat("ls", "--json"))
    assert [(r["id"], r["state"]) for r in data] == [
        ("a-cron", "due"),
        ("c-broken", "broken"),
        ("b-every", "paused"),
    ]
    assert data[1]["definition"] is None
    assert "JSON" in data[1]["error"]
    assert data[0]["definition"]["timezone"] == "Europe/Berlin"
    paused = json_of(rqbeat("ls", "--state", "paused", "--json"))
    assert [r["id"] for r in paused] == ["b-every"]
    both = json_of(rqbeat("ls", "--state", "paused", "--state", "broken", "--sort", "id", "--json"))
    assert [r["id"] for r in both] == ["b-every", "c-broken"]
    assert [r["id"] for r in json_of(rqbeat("ls", "--state", "due", "--json"))] == ["a-cron"]
    assert json_of(rqbeat("ls", "--state", "running", "--json")) == []
    assert [r["id"] for r in json_of(rqbeat("ls", "--json", env={"RQBEAT_LS_STATE": "broken"}))] == [
        "c-broken"
    ]


def test_ls_filters_by_queue_owner_and_group(rqbeat: Invoke, tmp_path: Path) -> None:
    ok(rqbeat("add", "by-cli", "app.jobs.run", "--every", "1h", "--queue", "other"))
    ok(rqbeat("apply", str(toml_file(tmp_path / "jobs.toml", JOBS))))  # nightly, heartbeat: "reports"

    def ids(*options: str) -> list[str]:
        return sorted(r["id"] for r in json_of(rqbeat("ls", "--json", *options)))

    assert ids() == ["by-cli", "heartbeat", "nightly"]
    assert ids("--queue", "reports") == ["heartbeat", "nightly"]
    assert ids("--queue", "other") == ["by-cli"]
    assert ids("--queue", "other", "--queue", "reports") == ["by-cli", "heartbeat", "nightly"]
    assert ids("--queue", "nowhere") == []
    assert ids("--owner", "cli") == ["by-cli"]
    assert ids("--group", "jobs") == ["heartbeat", "nightly"]
    assert ids("--owner", "apply:jobs", "--queue", "other") == []
    assert ids("--owner", "cli", "--group", "jobs") == ["by-cli", "heartbeat", "nightly"]
    assert [r["id"] for r in json_of(rqbeat("ls", "--json", "--sort", "id"))] == [
        "by-cli",
        "heartbeat",
        "nightly",
    ]


def test_ls_shows_a_run_in_flight_and_the_last_result(rqbeat: Invoke, conn: Redis) -> None:
    ok(rqbeat("add", "busy", "app.jobs.run", "--every", "1h"))
    ok(rqbeat("add", "sad", "app.jobs.run", "--every", "1h"))
    now_s, _ = conn.time()
    # what dispatch and a failed run write (see scheduler/engine/dispatch.py, scripts.RETRY)
    conn.zrem(K.due, "busy")
    conn.zadd(K.running, {"busy": now_s + 5})
    fire = text(conn.hget(K.schedule("busy"), "fire_at"))
    conn.hset(
        K.schedule("busy"),
        mapping={"state": "running", "job_id": "busy-1-1", "dispatched_at": "2020-01-01T00:00:00.000Z"},
    )
    conn.hset(
        K.schedule("sad"),
        mapping={
            "attempt": 2,
            "last_result": "failed",
            "last_run_at": "2020-01-01T00:00:00.000Z",
            "last_error": "Traceback (most recent call last):\n  ...\nRuntimeError: upstream said 503",
        },
    )
    lines = ok(rqbeat("ls")).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["busy", "sad"]  # in flight first
    assert "running" in lines[1]
    assert "(queued " in lines[1]  # dispatched; no worker marked it started
    assert fire is not None
    assert fire[:10] in lines[1]
    assert "retry 2)" in lines[2]
    assert "failed " in lines[2]
    assert " ago: RuntimeError: upstream said 503" in lines[2]
    assert json_of(rqbeat("ls", "--state", "running", "--json"))[0]["job_id"] == "busy-1-1"


def test_show(rqbeat: Invoke) -> None:
    ok(rqbeat("add", "s1", "app.jobs.run", "--every", "1h", "--description", "hello", "--args", "[7]"))
    text = ok(rqbeat("show", "s1"))
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in text.splitlines()}
    assert fields["id"] == "s1"
    assert fields["target"] == "app.jobs.run"
    assert fields["every"] == "1h"
    assert fields["description"] == "hello"
    assert fields["state"] == "due"
    assert fields["version"] == "1"
    data = json_of(rqbeat("show", "s1", "--json"))
    assert data["definition"]["args"] == [7]
    assert data["state"] == "due"
    assert data["fire_at"] == data["due_at"]

    missing = rqbeat("show", "nope")
    assert missing.exit_code == 1
    assert missing.output.strip() == "Error: no schedule with id 'nope'"


# -- rm / pause / resume / trigger / history ----------------------------------------


def test_rm(rqbeat: Invoke, conn: Redis) -> None:
    ok(rqbeat("add", "s1", "app.jobs.run", "--every", "1h"))
    ok(rqbeat("add", "s2", "app.jobs.run", "--every", "1h"))
    assert ok(rqbeat("rm", "s1")).strip() == "removed s1"
    assert not conn.exists(K.schedule("s1"))

    missing = rqbeat("rm", "nope")
    assert missing.exit_code == 1
    assert "Traceback" not in missing.output
    assert "nope" in missing.output

    partly = rqbeat("rm", "s2", "nope")
    assert partly.exit_code == 1
    assert "removed s2" in partly.output
    assert not conn.exists(K.schedule("s2"))

    no_args = rqbeat("rm")
    assert no_args.exit_code == 2


def test_pause_resume_trigger_history(rqbeat: Invoke, conn: Redis) -> None:
    ok(rqbeat("add", "s1", "app.jobs.run", "--every", "1d"))
    assert ok(rqbeat("pause", "s1")).strip() == "paused s1"
    assert conn.zscore(K.due, "s1") is None
    assert ok(rqbeat("pause", "s1")).strip() == "s1 was already paused"

    refused = rqbeat("trigger", "s1")
    assert refused.exit_code == 1
    assert refused.output.strip().startswith("Error: schedule 's1' is paused")

    assert ok(rqbeat("resume", "s1")).strip() == "resumed s1"
    assert ok(rqbeat("resume", "s1")).strip() == "s1 was not paused"
    assert ok(rqbeat("trigger", "s1")).strip() == "triggered s1"
    record = json_of(rqbeat("show", "s1", "--json"))
    assert record["state"] == "due"
    now_s, _ = conn.time()
    score = conn.zscore(K.due, "s1")
    assert score is not None
    assert abs(score - now_s) < 5

    lines = ok(rqbeat("history", "s1")).splitlines()
    assert lines[0].split() == HISTORY_HEADERS
    assert [line.split()[2] for line in lines[1:]] == ["paused", "resumed", "triggered"]
    entries = json_of(rqbeat("history", "s1", "--json", "-n", "2"))
    assert [e["event"] for e in entries] == ["resumed", "triggered"]
    assert all(e["at"].endswith("Z") for e in entries)

    for command in ("pause", "resume", "trigger", "history"):
        missing = rqbeat(command, "nope")
        assert missing.exit_code == 1, (command, missing.output)
        assert missing.output.strip() == "Error: no schedule with id 'nope'", command


HISTORY_HEADERS = ["AT", "(UTC)", "EVENT", "BY", "FIRE", "ATTEMPT", "JOB", "LATE", "DURATION", "OUTCOME"]


def test_history_of_a_schedule_without_entries(rqbeat: Invoke) -> None:
    ok(rqbeat("add", "s1", "app.jobs.run", "--every", "1d"))
    assert ok(rqbeat("history", "s1")).split() == HISTORY_HEADERS
    assert json_of(rqbeat("history", "s1", "--json")) == []


# -- apply --------------------------------------------------------------------------


JOBS = """
[defaults]
queue = "reports"
timezone = "Europe/Berlin"

[schedules.nightly]
target = "app.jobs.report"
cron = "30 2 * * *"

[schedules.heartbeat]
target = "app.jobs.ping"
every = "30s"
args = ["eu-1"]
timezone = "UTC"
"""


def test_apply_create_update_unchanged(rqbeat: Invoke, tmp_path: Path, conn: Redis) -> None:
    path = toml_file(tmp_path / "jobs.toml", JOBS)
    out = ok(rqbeat("apply", str(path)))
    assert out.splitlines()[:2] == ["+ nightly", "+ heartbeat"]
    assert summary_of(out) == "applied 2 schedules: 2 created, 0 updated, 0 unchanged, 0 pruned"
    shown = json_of(rqbeat("show", "nightly", "--json"))["definition"]
    assert (shown["queue"], shown["timezone"], shown["owner"]) == ("reports", "Europe/Berlin", "apply:jobs")
    heartbeat = json_of(rqbeat("show", "heartbeat", "--json"))["definition"]
    assert (heartbeat["timezone"], heartbeat["args"]) == ("UTC", ["eu-1"])

    before = snapshot(conn)
    out = ok(rqbeat("apply", str(path)))
    assert len(out.splitlines()) == 1  # nothing changed: the summary alone
    assert summary_of(out) == "applied 2 schedules: 0 created, 0 updated, 2 unchanged, 0 pruned"
    assert snapshot(conn) == before

    toml_file(path, JOBS.replace('"30 2 * * *"', '"45 2 * * *"'))
    summary = json_of(rqbeat("apply", str(path), "--json"))
    assert isinstance(summary.pop("seconds"), float)
    assert summary == {
        "group": "jobs",
        "dry_run": False,
        "created": [],
        "updated": ["nightly"],
        "unchanged": ["heartbeat"],
        "pruned": [],
        "counts": {"created": 0, "updated": 1, "unchanged": 1, "pruned": 0},
        "owner_changes": [],
    }
    assert json_of(rqbeat("show", "nightly", "--json"))["version"] == 2


def test_apply_dry_run_writes_nothing(rqbeat: Invoke, tmp_path: Path, conn: Redis) -> None:
    ok(rqbeat("add", "manual", "app.jobs.run", "--every", "1h"))
    path = toml_file(tmp_path / "jobs.toml", JOBS)
    before = snapshot(conn)
    out = ok(rqbeat("apply", str(path), "--dry-run"))
    assert "+ nightly" in out.splitlines()
    assert out.splitlines()[-1] == (
        "dry run, nothing written: 2 schedules: 2 to create, 0 to update, 0 unchanged, 0 to prune"
    )
    assert snapshot(conn) == before

    ok(rqbeat("apply", str(path)))
    toml_file(path, JOBS.replace('"30s"', '"1m"').replace("[schedules.nightly]", "[schedules.nightly2]"))
    before = snapshot(conn)
    summary = json_of(rqbeat("apply", str(path), "--dry-run", "--prune", "--json"))
    assert summary["dry_run"] is True
    assert (summary["created"], summary["updated"], summary["pruned"]) == (
        ["nightly2"],
        ["heartbeat"],
        ["nightly"],
    )
    assert snapshot(conn) == before


def test_apply_prune_removes_only_its_own_group(rqbeat: Invoke, tmp_path: Path, conn: Redis) -> None:
    ok(rqbeat("add", "manual", "app.jobs.run", "--every", "1h"))
    a = toml_file(
        tmp_path / "a.toml",
        '[schedules.a1]\ntarget = "m.f"\nevery = "1m"\n[schedules.a2]\ntarget = "m.f"\nevery = "2m"\n',
    )
    b = toml_file(tmp_path / "b.toml", '[schedules.b1]\ntarget = "m.f"\nevery = "1m"\n')
    ok(rqbeat("apply", str(a), "--prune"))
    ok(rqbeat("apply", str(b), "--prune"))
    ids = [r["id"] for r in json_of(rqbeat("ls", "--json", "--sort", "id"))]
    assert ids == ["a1", "a2", "b1", "manual"]

    toml_file(a, '[schedules.a1]\ntarget = "m.f"\nevery = "1m"\n')
    out = ok(rqbeat("apply", str(a)))  # without --prune nothing is removed
    assert summary_of(out).endswith("0 created, 0 updated, 1 unchanged, 0 pruned")
    summary = json_of(rqbeat("apply", str(a), "--prune", "--json"))
    assert summary["pruned"] == ["a2"]
    assert [r["id"] for r in json_of(rqbeat("ls", "--json", "--sort", "id"))] == ["a1", "b1", "manual"]
    assert not conn.exists(K.schedule("a2"))

    toml_file(a, "")
    summary = json_of(rqbeat("apply", str(a), "--prune", "--json"))
    assert summary["pruned"] == ["a1"]
    assert [r["id"] for r in json_of(rqbeat("ls", "--json", "--sort", "id"))] == ["b1", "manual"]

    # an explicit group is its own owner
    other = toml_file(tmp_path / "other.toml", "")
    summary = json_of(rqbeat("apply", str(other), "--group", "b", "--prune", "--json"))
    assert summary["pruned"] == ["b1"]
    assert [r["id"] for r in json_of(rqbeat("ls", "--json", "--sort", "id"))] == ["manual"]


# -- next ---------------------------------------------------------------------------


SPRING = "2027-03-27T00:00:00Z"  # Berlin springs forward on 28 March 2027
FALL = "2027-10-30T00:00:00Z"  # and falls back on 31 October 2027


@pytest.mark.parametrize(
    ("after", "utc", "local"),
    [
        # 02:30 does not exist on the 28th: it runs once, as the gap ends (03:00 CEST)
        (
            SPRING,
            ["2027-03-27T01:30:00.000Z", "2027-03-28T01:00:00.000Z", "2027-03-29T00:30:00.000Z"],
            ["2027-03-27T02:30:00+01:00", "2027-03-28T03:00:00+02:00", "2027-03-29T02:30:00+02:00"],
        ),
        # 02:30 happens twice on the 31st: it runs once, the first time (CEST)
        (
            FALL,
            ["2027-10-30T00:30:00.000Z", "2027-10-31T00:30:00.000Z", "2027-11-01T01:30:00.000Z"],
            ["2027-10-30T02:30:00+02:00", "2027-10-31T02:30:00+02:00", "2027-11-01T02:30:00+01:00"],
        ),
    ],
)
def test_next_across_dst(after: str, utc: list[str], local: list[str]) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # next never talks to Redis
    args = ["--redis-url", closed, "next", "30 2 * * *", "--tz", "Europe/Berlin", "-n", "3", "--after", after]
    data = json.loads(ok(CliRunner().invoke(cli, [*args, "--json"])))
    assert data == [{"utc": u, "local": loc} for u, loc in zip(utc, local, strict=True)]
    lines = ok(CliRunner().invoke(cli, args)).splitlines()
    assert lines[0].split() == ["LOCAL", "(Europe/Berlin)", "UTC", "WHEN"]
    for line, u, loc in zip(lines[1:], utc, local, strict=True):
        # 2027-03-28 03:00:00 CEST  2027-03-28 01:00:00  in 125d17h
        day, wall, zone, utc_day, utc_wall, *when = line.split()
        assert f"{day}T{wall}" == loc[:19]
        assert zone == ("CEST" if loc.endswith("+02:00") else "CET")
        assert f"{utc_day}T{utc_wall}.000Z" == u
        assert re.fullmatch(r"in \d+d\d*h?|\d+d\d*h? ago", " ".join(when)), line


def test_next_defaults_and_errors() -> None:
    fires = json.loads(ok(CliRunner().invoke(cli, ["next", "*/5 * * * *", "--json"])))
    assert len(fires) == 5
    bad = CliRunner().invoke(cli, ["next", "61 * * * *"])
    assert_refused(bad, "cron")
    assert_refused(CliRunner().invoke(cli, ["next", "* * * * *", "--tz", "Mars/Olympus"]), "timezone")
    assert_refused(CliRunner().invoke(cli, ["next", "* * * * *", "--after", "yesterday"]), "after")
    assert_refused(CliRunner().invoke(cli, ["next", "* * * * *", "--after", "2027-01-01T00:00:00"]), "after")


# -- invalid input: refused with exit 2, nothing written ----------------------------


HUGE_ARGS = json.dumps(["x" * MAX_PAYLOAD_BYTES])
DEEP_JSON = "[" * 100_000 + "]" * 100_000

# (options after "rqbeat add bad app.jobs.run", the same as the body of [schedules.bad],
#  the field the error names; apply prefixes it with "schedules.bad.")
INVALID: list[Any] = [
    pytest.param(["--cron", "61 * * * *"], 'cron = "61 * * * *"', "cron", id="cron-out-of-range"),
    pytest.param(["--cron", "not a cron"], 'cron = "not a cron"', "cron", id="cron-garbage"),
    pytest.param(["--cron", "* * * * * * *"], 'cron = "* * * * * * *"', "cron", id="cron-7-fields"),
    pytest.param(["--cron", "* * * *"], 'cron = "* * * *"', "cron", id="cron-4-fields"),
    pytest.param(["--cron", "0 0 30 2 *"], 'cron = "0 0 30 2 *"', "cron", id="cron-never-fires"),
    pytest.param(
        ["--every", "1m", "--tz", "Mars/Olympus"],
        'every = "1m"\ntimezone = "Mars/Olympus"',
        "timezone",
        id="unknown-timezone",
    ),
    pytest.param(
        ["--every", "1m", "--args", "[1,"], 'every = "1m"\nargs = "[1,"', "args", id="args-not-json"
    ),
    pytest.param(
        ["--every", "1m", "--args", '{"a": 1}'], 'every = "1m"\nargs = 5', "args", id="args-not-a-list"
    ),
    pytest.param(
        ["--every", "1m", "--kwargs", "[1]"],
        'every = "1m"\nkwargs = "[1]"',
        "kwargs",
        id="kwargs-not-an-object",
    ),
    pytest.param(
        ["--every", "1m", "--args", HUGE_ARGS],
        f'every = "1m"\nargs = {HUGE_ARGS}',
        "args",
        id="args-over-limit",
    ),
    pytest.param(
        ["--every", "1m", "--args", DEEP_JSON], f'every = "1m"\nargs = "{DEEP_JSON}"', "args", id="args-deep"
    ),
    pytest.param(
        ["--cron", "* * * * *", "--every", "1m"],
        'cron = "* * * * *"\nevery = "1m"',
        "cron",
        id="both-triggers",
    ),
    pytest.param([], "", "cron", id="no-trigger"),
    pytest.param(["--every=-5s"], 'every = "-5s"', "every", id="every-negative"),
    pytest.param(["--every", "0"], "every = 0", "every", id="every-zero"),
    pytest.param(["--every", "500ms"], 'every = "500ms"', "every", id="every-below-1s"),
    pytest.param(["--every", "10y"], 'every = "10y"', "every", id="every-bad-unit"),
    pytest.param(["--every", "nan"], 'every = "nan"', "every", id="every-nan"),
    pytest.param(
        ["--every", "1m", "--timeout", "0"], 'every = "1m"\ntimeout = 0', "timeout", id="timeout-zero"
    ),
    pytest.param(["--every", "1m", "--ttl=-1"], 'every = "1m"\nttl = -1', "ttl", id="ttl-negative"),
    pytest.param(
        ["--every", "1m", "--result-ttl", "abc"],
        'every = "1m"\nresult_ttl = "abc"',
        "result_ttl",
        id="result-ttl-garbage",
    ),
    pytest.param(
        ["--every", "1m", "--jitter=-1s"], 'every = "1m"\njitter = "-1s"', "jitter", id="jitter-negative"
    ),
    pytest.param(
        ["--every", "1m", "--catchup-window", "0s"],
        'every = "1m"\ncatchup_window = "0s"',
        "catchup_window",
        id="catchup-zero",
    ),
    pytest.param(
        ["--every", "1m", "--misfire", "sometimes"],
        'every = "1m"\nmisfire = "sometimes"',
        "misfire",
        id="unknown-misfire",
    ),
    pytest.param(
        ["--every", "1m", "--max-attempts", "0"],
        'every = "1m"\nmax_attempts = 0',
        "max_attempts",
        id="max-attempts-zero",
    ),
    pytest.param(
        ["--every", "1m", "--max-attempts", "x"],
        'every = "1m"\nmax_attempts = "x"',
        "max",
        id="max-attempts-text",
    ),
    pytest.param(["--every", "1m", "--queue", "a b"], 'every = "1m"\nqueue = "a b"', "queue", id="bad-queue"),
    pytest.param(
        ["--every", "1m", "--description", "a\nb"],
        'every = "1m"\ndescription = "a\\nb"',
        "description",
        id="description-control",
    ),
    pytest.param(
        ["--every", "1m", "--crn", "* * * * *"], 'every = "1m"\ncrn = "* * * * *"', "crn", id="unknown-key"
    ),
    pytest.param(
        ["--every", "1m", "--pause-on-failure=maybe"],
        'every = "1m"\npause_on_failure = "maybe"',
        "pause",
        id="bad-bool",
    ),
]


@pytest.fixture
def unchanged(rqbeat: Invoke, conn: Redis) -> Callable[[], None]:
    """Seed one valid schedule with some history, so the keyspace is not empty; the
    returned check asserts the keyspace still holds exactly what it held."""
    ok(rqbeat("add", "ok", "app.jobs.run", "--every", "1h"))
    ok(rqbeat("pause", "ok"))
    ok(rqbeat("resume", "ok"))
    before = snapshot(conn)
    assert len(before) >= 4

    def check() -> None:
        assert snapshot(conn) == before

    return check


@pytest.mark.parametrize(("options", "toml_body", "field"), INVALID)
def test_add_refuses_invalid_input(
    *, rqbeat: Invoke, unchanged: Callable[[], None], options: list[str], toml_body: str, field: str
) -> None:
    assert toml_body is not None  # the same cases as apply's
    assert_refused(rqbeat("add", "bad", "app.jobs.run", *options), field)
    unchanged()


GOOD_THEN_BAD = '[schedules.good]\ntarget = "m.f"\nevery = "1m"\n\n[schedules.bad]\ntarget = "app.jobs.run"\n'


@pytest.mark.parametrize(("options", "toml_body", "field"), INVALID)
def test_apply_refuses_invalid_input(
    *,
    rqbeat: Invoke,
    unchanged: Callable[[], None],
    tmp_path: Path,
    options: list[str],
    toml_body: str,
    field: str,
) -> None:
    assert options is not None  # the same cases as add's
    # a valid schedule before the bad one: one invalid schedule means nothing is written
    path = toml_file(tmp_path / "jobs.toml", f"{GOOD_THEN_BAD}{toml_body}\n")
    assert_refused(rqbeat("apply", str(path), "--prune"), f"schedules.bad.{field}")
    unchanged()


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (["add", "bad id", "app.jobs.run", "--every", "1m"], "id"),
        (["add", "bad/id", "app.jobs.run", "--every", "1m"], "id"),
        (["add", "x" * 101, "app.jobs.run", "--every", "1m"], "id"),
        (["add", "ünï", "app.jobs.run", "--every", "1m"], "id"),
        (["add", "bad", "nodot", "--every", "1m"], "target"),
        (["add", "bad", "1a.b", "--every", "1m"], "target"),
    ],
)
def test_add_refuses_bad_id_and_target(
    *, rqbeat: Invoke, unchanged: Callable[[], None], command: list[str], field: str
) -> None:
    assert_refused(rqbeat(*command), f"Error: {field}: ")
    unchanged()


DEEP_ARRAY = "[" * 600 + "]" * 600


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[schedules."bad id"]\ntarget = "m.f"\nevery = "1m"\n', "schedules.bad id.id"),
        ('[schedules."a/b"]\ntarget = "m.f"\nevery = "1m"\n', "schedules.a/b.id"),
        ('[schedules.bad]\ntarget = "nodot"\nevery = "1m"\n', "schedules.bad.target"),
        ('[schedules.bad]\nevery = "1m"\n', "schedules.bad.target"),
        ('[schedule.bad]\ntarget = "m.f"\nevery = "1m"\n', "schedule"),
        ('jobs = 1\n[schedules.bad]\ntarget = "m.f"\nevery = "1m"\n', "jobs"),
        ('[defaults]\ncrn = "x"\n[schedules.bad]\ntarget = "m.f"\nevery = "1m"\n', "schedules.bad.crn"),
        ('[defaults]\nid = "x"\n[schedules.bad]\ntarget = "m.f"\nevery = "1m"\n', "defaults.id"),
        ('[schedules.bad]\ntarget = "m.f"\nevery = "1m"\nowner = "cli"\n', "schedules.bad.owner"),
        ("defaults = 5\n", "defaults"),
        ("[schedules]\nbad = 5\n", "schedules.bad"),
        ("this is = not [toml\n", "file"),
        ('[schedules.bad]\ntarget = "m.f"\ntarget = "m.g"\n', "file"),
        (f'[schedules.bad]\ntarget = "m.f"\nevery = "1m"\nargs = {DEEP_ARRAY}\n', "file"),
    ],
)
def test_apply_refuses_invalid_files(
    *, rqbeat: Invoke, unchanged: Callable[[], None], tmp_path: Path, text: str, field: str
) -> None:
    result = rqbeat("apply", str(toml_file(tmp_path / "jobs.toml", text)), "--prune")
    assert_refused(result, f"Error: {field}: ")
    unchanged()


def test_apply_refuses_binary_and_missing_files(
    rqbeat: Invoke, unchanged: Callable[[], None], tmp_path: Path
) -> None:
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert_refused(rqbeat("apply", str(binary)), "Error: file: ")
    assert_refused(rqbeat("apply", str(tmp_path / "missing.toml")), "Error: file: ")
    assert_refused(rqbeat("apply", str(binary), "--group", "bad group"), "Error: group: ")
    unchanged()


# -- Redis unreachable --------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["ls"],
        ["ls", "--json"],
        ["show", "x"],
        ["add", "x", "m.f", "--every", "1m"],
        ["rm", "x"],
        ["pause", "x"],
    ],
)
def test_unreachable_redis(command: Sequence[str]) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(cli, ["--redis-url", url, *command])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "cannot reach Redis" in lines[0]
    assert "s3cret" not in result.output
    assert "user:***@127.0.0.1" in lines[0]


def test_invalid_input_is_refused_before_connecting() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(cli, ["--redis-url", url, "add", "x", "m.f", "--every", "0"])
    assert_refused(result, "Error: every: ")


def test_redis_refusing_the_credentials(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "auth")
    server.start()
    try:
        admin = server.client()
        admin.config_set("requirepass", "right")
        admin.close()
        for url in (f"redis://:wrong@127.0.0.1:{server.port}/0", server.url):
            result = CliRunner().invoke(cli, ["--redis-url", url, "ls"])
            assert result.exit_code == 1, result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1, result.output
            assert "wrong" not in lines[0]
            assert lines[0].startswith("Error: Redis refused"), lines[0]
    finally:
        server.stop()


def test_commands_on_a_key_of_the_wrong_type(rqbeat: Invoke, conn: Redis) -> None:
    conn.sadd(K.ids, "x")
    conn.set(K.schedule("x"), "foo")
    assert "broken: key has type string, not hash" in ok(rqbeat("ls"))
    for command in ("pause", "trigger"):
        result = rqbeat(command, "x")
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, result.output
        assert lines[0].startswith("Error: Redis refused the command: WRONGTYPE"), lines[0]
    assert ok(rqbeat("add", "x", "m.f", "--every", "1m")).startswith("created x (version 1)")
    assert json_of(rqbeat("show", "x", "--json"))["state"] == "due"
