"""What people see: examples in every --help, one-line usage errors, colour only on a
terminal, and ``ls`` / ``status`` / ``history`` against real replicas and workers."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from redis import Redis

from devtools.cluster import Cluster
from devtools.localredis import free_port
from devtools.processes import REPO, Process, wait_for
from scheduler import Client, Schedule
from scheduler.cli.app import cli
from scheduler.keys import Keys
from scheduler.records import text
from tests.tty import drain

pytestmark = pytest.mark.integration

K = Keys()
ESC = "\x1b["


def invoke(redis_url: str, *args: str, **kwargs: Any) -> Result:
    return CliRunner().invoke(cli, ["--redis-url", redis_url, *args], **kwargs)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


# -- help ---------------------------------------------------------------------------

COMMANDS = [(), *((name,) for name in sorted(cli.load_all()))]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(("rqbeat", *p)))
def test_every_help_has_an_example_and_names_every_env_var(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    example = result.output.split("Example", 1)[1]
    assert re.search(r"^\s+rqbeat ", example, re.M), "the example shows a command line"
    command = cli.load_all()[path[0]] if path else cli
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            # the group's own options take theirs from auto_envvar_prefix (RQBEAT_REDIS_URL)
            # some options also read a variable shared by several commands (RQBEAT_LOG_FORMAT)
            if isinstance(param.envvar, str):
                envvars = [param.envvar]
            else:
                envvars = list(param.envvar or []) or [f"RQBEAT_{param.name}".upper()]
            assert all(e.startswith("RQBEAT_") for e in envvars), (path, param.name)
            flat = " ".join(result.output.split())  # help text wraps long option lines
            assert f"env var: {', '.join(envvars)}" in flat, (path, param.name)


def test_env_vars_are_named_after_the_options() -> None:
    expected = {
        ("ls", "--json"): "RQBEAT_LS_JSON",
        ("ls", "--state"): "RQBEAT_LS_STATE",
        ("add", "--tz"): "RQBEAT_ADD_TZ",
        ("add", "--cron"): "RQBEAT_ADD_CRON",
        ("history", "-n"): "RQBEAT_HISTORY_COUNT",
        ("run", "--lease"): "RQBEAT_RUN_LEASE",
    }
    for (name, option), envvar in expected.items():
        params = [p for p in cli.load_all()[name].params if option in p.opts]
        assert [p.envvar for p in params] == [envvar]


# -- usage errors: one line, exit 2 -------------------------------------------------

USAGE_ERRORS = [
    (["ls", "--bogus"], "No such option '--bogus' (see 'rqbeat ls --help')"),
    # click names an option's env var too: "... for '--state' (env var: 'RQBEAT_LS_STATE'): ..."
    (["ls", "--state", "nope"], "'nope' is not one of 'due', 'running', 'paused', 'broken'"),
    (["ls", "--sort"], "Option '--sort' requires an argument"),
    (["history"], "Missing argument 'ID' (see 'rqbeat history --help')"),
    (["history", "x", "-n", "0"], "0 is not in the range"),
    (["add", "x", "m.f", "--misfire", "sometimes"], "Invalid value for '--misfire'"),
    (["add", "x", "m.f", "--max-attempts", "two"], "Invalid value for '--max-attempts'"),
    (["rm"], "Missing argument 'ID...'"),
    (["next"], "Missing argument 'ID|EXPR'"),
    (["show", "a", "b"], "Got unexpected extra argument (b)"),
    (["--bogus", "ls"], "No such option '--bogus' (see 'rqbeat --help')"),
    (["nosuch"], "No such command 'nosuch' (see 'rqbeat --help')"),
    (["run", "--log-level", "loud"], "Invalid value for '--log-level'"),
    (["worker", "--heartbeat-grace", "0"], "Invalid value for '--heartbeat-grace'"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_are_one_line(args: list[str], message: str) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # a usage error never gets as far as Redis
    result = CliRunner().invoke(cli, ["--redis-url", closed, *args], prog_name="rqbeat")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert message in lines[0]
    assert "Usage:" not in result.output


def test_usage_error_of_the_real_executable() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "ls", "--state", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: Invalid value for '--state'")


def test_bare_rqbeat_still_shows_the_help() -> None:
    result = CliRunner().invoke(cli, [], prog_name="rqbeat")
    assert "Usage: rqbeat [OPTIONS] COMMAND" in result.output
    assert "Commands:" in result.output


# -- colour -------------------------------------------------------------------------


@pytest.fixture
def coloured(conn: Redis) -> None:
    """Schedules whose ls rows carry a style: due (green), paused (yellow), broken (red)."""
    client = Client(conn)
    client.upsert(Schedule(id="fine", target="tests.jobs.record", every_ms=3_600_000))
    client.upsert(Schedule(id="resting", target="tests.jobs.record", every_ms=3_600_000))
    client.pause("resting")
    conn.sadd(K.ids, "wrecked")
    conn.hset(K.schedule("wrecked"), mapping={"definition": "{", "state": "due"})


def run_on_tty(args: Sequence[str], env: dict[str, str]) -> str:
    """Run ``args`` with stdout and stderr on a pseudo-terminal; return what it printed."""
    main, side = pty.openpty()
    proc = subprocess.Popen(
        list(args), stdout=side, stderr=side, stdin=subprocess.DEVNULL, env=env, cwd=REPO, close_fds=True
    )
    os.close(side)
    out = drain(main)
    assert proc.wait(10) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


@pytest.mark.usefixtures("coloured")
@pytest.mark.parametrize("command", [["ls"], ["status"], ["history", "resting"], ["next", "@daily"]])
def test_colour_only_on_a_terminal_and_never_with_no_color(redis_url: str, command: list[str]) -> None:
    args = [sys.executable, "-m", "scheduler", "--redis-url", redis_url, *command]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    on_tty = run_on_tty(args, env)
    assert ESC in on_tty, on_tty
    plain_tty = run_on_tty(args, {**env, "NO_COLOR": "1"})
    assert ESC not in plain_tty
    piped = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=True, cwd=REPO)
    assert ESC not in piped.stdout
    # the same text, less the styles ("in 57m52s" may have moved on between the runs)
    first_words = [line.split()[:1] for line in click.unstyle(on_tty).splitlines()]
    assert [line.split()[:1] for line in plain_tty.splitlines()] == first_words
    assert [line.split()[:1] for line in piped.stdout.splitlines()] == first_words


@pytest.mark.usefixtures("coloured")
def test_no_color_overrides_a_forced_colour(redis_url: str) -> None:
    forced = ok(invoke(redis_url, "ls", color=True))
    assert f"{ESC}31" in forced  # broken is red
    assert ESC not in ok(invoke(redis_url, "ls", color=True, env={"NO_COLOR": "1"}))
    assert ESC in ok(invoke(redis_url, "ls", color=True, env={"NO_COLOR": ""}))  # empty: not set


# -- against real replicas and workers ----------------------------------------------


def parse_table(output: str, first_header: str) -> list[dict[str, str]]:
    """Rows of the aligned table whose header line starts with ``first_header``, as
    dicts keyed by header (columns sliced at the header positions)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    header = lines[start]
    names = re.findall(r"\S+(?: \(\S+\))?", header)  # "AT (UTC)" is one header
    cuts = [header.index(n) for n in names] + [None]
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append({n: line[a:b].strip() for n, a, b in zip(names, cuts, cuts[1:], strict=False)})
    return rows


def test_ls_status_history_with_real_processes(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    cluster = Cluster(redis_url, tmp_path, processes)
    cluster.replica("alpha")
    cluster.replica("beta")
    cluster.worker("w1", "default")
    leader = cluster.wait_leader(conn)
    client = Client(conn)
    hour = 3_600_000
    client.upsert(Schedule(id="good", target="tests.jobs.record", every_ms=hour))
    client.upsert(Schedule(id="bad", target="tests.jobs.fail", every_ms=hour, max_attempts=2))
    client.upsert(Schedule(id="resting", target="tests.jobs.record", every_ms=hour))
    client.pause("resting")
    client.upsert(Schedule(id="wrecked", target="tests.jobs.record", every_ms=hour))
    conn.hset(K.schedule("wrecked"), "definition", "{not json")
    conn.zadd(K.due, {"wrecked": 1})  # due now: the leader meets it and marks it broken
    client.trigger("good")
    client.trigger("bad")

    def events(schedule_id: str) -> list[str]:
        return [e.event for e in client.history(schedule_id, 50)]

    wait_for(lambda: "succeeded" in events("good"), 30, what="good to succeed")
    wait_for(lambda: "gave_up" in events("bad"), 30, what="bad to give up after 2 attempts")
    wait_for(lambda: text(conn.hget(K.schedule("wrecked"), "state")) == "broken", 30, what="wrecked marked")
    wait_for(lambda: len(conn.zrange(K.nodes, 0, -1)) == 2, 30, what="both replicas' heartbeats")

    # ls: every state, next fire, last result
    rows = {r["ID"]: r for r in parse_table(ok(invoke(redis_url, "ls")), "ID ")}
    assert set(rows) == {"good", "bad", "resting", "wrecked"}
    assert rows["good"]["STATE"] == "due"
    assert re.fullmatch(r"20\d\d-\d\d-\d\d \d\d:00:00 \(in (\d+m)?\d+s\)", rows["good"]["NEXT"]), rows["good"]
    assert re.fullmatch(r"succeeded (now|\d+s ago)", rows["good"]["LAST"]), rows["good"]
    assert re.fullmatch(r"gave_up (now|\d+s ago): RuntimeError: boom", rows["bad"]["LAST"]), rows["bad"]
    assert rows["resting"]["STATE"] == "paused"
    assert rows["resting"]["NEXT"] == "-"
    assert rows["wrecked"]["STATE"] == "broken"
    assert rows["wrecked"]["LAST"].startswith("broken: definition is not valid JSON")

    # history: each dispatch joined to its outcome, with attempt and duration
    history = parse_table(ok(invoke(redis_url, "history", "bad")), "AT ")
    assert [r["EVENT"] for r in history] == ["triggered", "dispatched", "failed", "dispatched", "gave_up"]
    assert [r["ATTEMPT"] for r in history] == ["", "1", "1", "2", "2"]
    job1, job2 = history[1]["JOB"], history[3]["JOB"]
    assert job1.startswith("bad-") and job1.endswith("-1") and job2.endswith("-2")
    assert [r["JOB"] for r in history[1:]] == [job1, job1, job2, job2]
    assert history[1]["OUTCOME"] == "failed"
    assert history[2]["OUTCOME"].startswith("RuntimeError: boom -> retry at ")
    assert history[3]["OUTCOME"] == "gave_up"
    for row in history[1:]:
        assert re.fullmatch(r"\d+ms|\d+\.\ds|\d+m\d*s?", row["DURATION"]), row
        assert re.fullmatch(r"\d+ms|\d+\.\ds|\d+m\d*s?", row["LATE"]), row  # rqbeat worker: start known
    assert history[1]["FIRE"] == history[3]["FIRE"]  # a retry runs the same fire
    entries = json.loads(ok(invoke(redis_url, "history", "bad", "--json")))
    runs = [e for e in entries if e["event"] == "dispatched"]
    assert [e["run_outcome"] for e in runs] == ["failed", "gave_up"]
    assert all(isinstance(e["duration_ms"], int) and e["duration_ms"] >= 0 for e in runs)
    assert all(isinstance(e["lateness_ms"], int) and e["lateness_ms"] >= 0 for e in runs)
    # the retry started after its back-off: later than the first attempt
    assert runs[1]["lateness_ms"] > runs[0]["lateness_ms"]
    assert [e["attempt"] for e in runs] == [1, 2]

    # status: leader, lease, replicas with heartbeat age, counts split, RQ's queue
    report = json.loads(ok(invoke(redis_url, "status", "--json")))
    assert report["leader"] == leader
    assert 0 < report["lease_remaining_s"] <= 2
    assert sorted(r["node"] for r in report["replicas"]) == ["alpha", "beta"]
    assert sorted(r["role"] for r in report["replicas"]) == ["leader", "standby"]
    assert report["schedules"] == {
        "due": 2,
        "running": 0,
        "paused": 1,
        "completed": 0,
        "broken": 1,
        "total": 4,
        "overdue": 0,
    }
    default = next(q for q in report["queues"] if q["name"] == "default")
    assert default["workers"] == 1
    assert default["failed"] == 2
    assert default["queued"] == 0
    out = ok(invoke(redis_url, "status"))
    assert re.search(r"^schedules: +4 total: 2 due, 0 running, 1 paused, 1 broken$", out, re.M), out
    assert {r["REPLICA"]: r["ROLE"] for r in parse_table(out, "REPLICA")} == {
        leader: "leader",
        ({"alpha", "beta"} - {leader}).pop(): "standby",
    }
    assert parse_table(out, "QUEUE")[0] == {
        "QUEUE": "default",
        "QUEUED": "0",
        "STARTED": "0",
        "FAILED": "2",
        "WORKERS": "1",
    }

    # a run in flight (5 s long): ls shows it first, history says so
    client.upsert(Schedule(id="slow", target="tests.jobs.slow", args=(5,), every_ms=hour))
    client.trigger("slow")
    wait_for(lambda: "dispatched" in events("slow"), 30, what="slow to be dispatched")
    first = parse_table(ok(invoke(redis_url, "ls")), "ID ")[0]
    assert (first["ID"], first["STATE"]) == ("slow", "running")
    phase = r"(queued (\d+ms|\d+s)|running (\d+ms|\d+s) on \S+)"  # started by the worker, or not yet
    assert re.fullmatch(rf"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d \({phase}\)", first["NEXT"]), first
    assert parse_table(ok(invoke(redis_url, "history", "slow")), "AT ")[-1]["OUTCOME"] == "in flight"
    wait_for(lambda: "succeeded" in events("slow"), 30, what="slow to finish")
    assert parse_table(ok(invoke(redis_url, "history", "slow")), "AT ")[-2]["OUTCOME"] == "succeeded"
