"""Edits that change one thing, and CLI habits: ``add`` refusing an existing id, ``set``,
``apply``'s diff and output modes, global options after the command, completion of
ids, ``show``'s readable values, and the demo's hint (click's CliRunner, a real
redis-server; the progress bar and the demo hint with real processes)."""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from redis import Redis

from devtools.demo import inspect_command
from devtools.localredis import free_port
from devtools.processes import REPO
from scheduler.cli.app import cli
from scheduler.keys import Keys
from scheduler.records import decode_definition
from scheduler.stored import read_text
from tests.cli import Invoke, ok
from tests.keyspace import snapshot
from tests.tty import drain

pytestmark = pytest.mark.integration

K = Keys()


def definition(conn: Redis, schedule_id: str, namespace: str = "rqbeat") -> dict[str, Any]:
    return decode_definition(schedule_id, read_text(conn, Keys(namespace).schedule(schedule_id))).to_dict()


def one_error_line(result: Result, exit_code: int) -> str:
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), result.output
    return lines[0]


# -- add: an existing id is refused unless --replace ----------------------------------


def test_add_refuses_an_existing_id(rqbeat: Invoke, conn: Redis) -> None:
    ok(rqbeat("add", "nightly", "app.jobs.report", "--every", "1h", "--args", '["eu-1"]'))
    before = snapshot(conn)
    refused = rqbeat("add", "nightly", "app.jobs.report", "--every", "20s")
    line = one_error_line(refused, 1)
    assert "'nightly' already exists (version 1)" in line
    assert "--replace" in line
    assert snapshot(conn) == before

    out = ok(rqbeat("add", "nightly", "app.jobs.report", "--every", "20s", "--replace"))
    assert out.startswith("updated nightly (version 2)")
    stored = definition(conn, "nightly")
    assert stored["every"] == "20s"
    assert "args" not in stored  # --replace is the whole definition; `set` keeps the rest


# -- set: change only the given settings ----------------------------------------------


def test_set_changes_one_setting_and_keeps_the_rest(rqbeat: Invoke, conn: Redis) -> None:
    ok(rqbeat("add", "beat", "app.jobs.ping", "--cron", "*/5 * * * *", "--args", '["eu-1"]', "--queue", "q1"))
    out = ok(rqbeat("set", "beat", "--every", "20s"))
    assert out.startswith("updated beat (version 2)")
    stored = definition(conn, "beat")
    assert (stored["every"], stored["args"], stored["queue"]) == ("20s", ["eu-1"], "q1")
    assert "cron" not in stored  # one trigger: --every replaces --cron

    before = snapshot(conn)
    assert ok(rqbeat("set", "beat", "--every", "20s")).startswith("unchanged beat (version 2)")
    assert snapshot(conn) == before

    line = one_error_line(rqbeat("set", "beat", "--queue", "no spaces"), 2)
    assert "queue" in line
    line = one_error_line(rqbeat("set", "beat", "--every", "20s", "--cron", "0 3 * * *"), 2)
    assert "cron" in line
    assert snapshot(conn) == before

    ok(rqbeat("set", "beat", "--cron", "0 3 * * *", "--unset", "args", "--max-attempts", "3"))
    stored = definition(conn, "beat")
    assert (stored["cron"], stored.get("args"), stored["max_attempts"]) == ("0 3 * * *", None, 3)
    assert "every" not in stored
    assert json.loads(ok(rqbeat("show", "beat", "--json")))["version"] == 3

    assert one_error_line(rqbeat("set", "nope", "--every", "1m"), 1) == "Error: no schedule with id 'nope'"
    assert "Nothing to change" in one_error_line(rqbeat("set", "beat"), 2)


def test_set_of_a_file_schedule_says_the_file_wins_back(rqbeat: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text('[schedules.n]\ntarget = "app.jobs.report"\nevery = "1h"\n', encoding="utf-8")
    ok(rqbeat("apply", str(path)))
    result = rqbeat("set", "n", "--every", "2h")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("updated n (version 2)")
    assert "note: n belongs to the group jobs" in result.stderr


# -- apply: the diff, ownership, output modes -----------------------------------------


FILE_A = """
[schedules.nightly]
target = "app.jobs.report"
cron = "0 2 * * *"

[schedules.pruned-id]
target = "app.jobs.report"
every = "1h"

[schedules.moving]
target = "app.jobs.report"
every = "1h"
"""

FILE_A2 = """
[schedules.nightly]
target = "app.jobs.report"
cron = "30 2 * * *"

[schedules.new-id]
target = "app.jobs.report"
every = "1h"

[schedules.manual]
target = "app.jobs.run"
every = "1h"
queue = "reports"
"""

FILE_B = """
[schedules.moving]
target = "app.jobs.report"
every = "1h"
"""


def test_apply_dry_run_shows_the_diff_and_every_owner_change(
    rqbeat: Invoke, conn: Redis, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(FILE_A, encoding="utf-8")
    b.write_text(FILE_B, encoding="utf-8")
    ok(rqbeat("apply", str(a)))
    ok(rqbeat("add", "manual", "app.jobs.run", "--every", "1h"))
    a.write_text(FILE_A2, encoding="utf-8")
    before = snapshot(conn)
    out = ok(rqbeat("apply", str(a), "--prune", "--dry-run"))
    assert out.splitlines() == [
        "+ new-id",
        '~ nightly: cron "0 2 * * *" -> "30 2 * * *"',
        '~ manual: queue "default" -> "reports", owner "cli" -> "apply:a"',
        "- moving",
        "- pruned-id",
        "dry run, nothing written: 3 schedules: 1 to create, 2 to update (1 from another owner), "
        "0 unchanged, 2 to prune",
    ]
    assert ok(rqbeat("apply", str(b), "--dry-run")).splitlines()[0] == (
        '~ moving: owner "apply:a" -> "apply:b"'
    )
    summary = json.loads(ok(rqbeat("apply", str(a), "--prune", "--dry-run", "--json")))
    assert summary["owner_changes"] == [{"id": "manual", "from": "cli", "to": "apply:a"}]
    assert summary["changes"]["nightly"] == {"cron": {"from": "0 2 * * *", "to": "30 2 * * *"}}
    assert snapshot(conn) == before


def test_apply_prints_a_summary_for_a_big_file_and_quiet_and_json(
    rqbeat: Invoke, conn: Redis, tmp_path: Path
) -> None:
    path = tmp_path / "big.toml"
    body = "".join(f'[schedules.s{i:02d}]\ntarget = "app.jobs.run"\nevery = "1h"\n' for i in range(25))
    path.write_text(body, encoding="utf-8")
    out = ok(rqbeat("apply", str(path)))
    assert len(out.splitlines()) == 1, out  # 25 changes: no line each
    assert re.fullmatch(
        r"applied 25 schedules: 25 created, 0 updated, 0 unchanged, 0 pruned in [0-9]+\.[0-9] s\n", out
    )
    path.write_text(body.replace('"1h"', '"2h"'), encoding="utf-8")
    verbose = ok(rqbeat("apply", str(path), "--verbose", "--dry-run")).splitlines()
    assert verbose[0] == '~ s00: every "1h" -> "2h"'
    assert len(verbose) == 26

    assert ok(rqbeat("apply", str(path), "--quiet")) == ""
    assert definition(conn, "s24")["every"] == "2h"  # quiet, but written

    path.write_text(
        body.replace('"1h"', '"3h"').replace("[schedules.s24]", "[schedules.t24]"), encoding="utf-8"
    )
    summary = json.loads(ok(rqbeat("apply", str(path), "--prune", "--json")))
    assert summary["counts"] == {"created": 1, "updated": 24, "unchanged": 0, "pruned": 1}
    assert (summary["created"], summary["pruned"], len(summary["updated"])) == (["t24"], ["s24"], 24)
    assert summary["dry_run"] is False
    assert isinstance(summary["seconds"], float)
    assert "changes" not in summary  # the field diff is a dry run's

    assert "--quiet" in one_error_line(rqbeat("apply", str(path), "--quiet", "--json"), 2)


def run_with_stderr_on_tty(args: list[str]) -> tuple[str, str]:
    """Run ``args`` with stdout on a pipe and stderr on a pseudo-terminal."""
    main, side = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=side, stdin=subprocess.DEVNULL, cwd=REPO)
    os.close(side)
    err = drain(main)
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read().decode()
    assert proc.wait(10) == 0, err.decode(errors="replace")
    return out, err.decode(errors="replace")


def test_apply_progress_bar_only_when_stderr_is_a_terminal(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    # a target that imports (from the repository, the default --path): no warning
    body = "".join(f'[schedules.p{i:02d}]\ntarget = "tests.jobs.record"\nevery = "1h"\n' for i in range(25))
    path.write_text(body, encoding="utf-8")
    args = [sys.executable, "-m", "scheduler", "apply", str(path), "-u", redis_url]
    out, err = run_with_stderr_on_tty(args)
    assert "applying" in err
    assert "100%" in err
    assert out.startswith("applied 25 schedules: 25 created"), out
    path.write_text(body.replace('"1h"', '"2h"'), encoding="utf-8")
    piped = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True, cwd=REPO)
    assert piped.stderr == ""
    assert piped.stdout.startswith("applied 25 schedules: 0 created, 25 updated")


# -- global options after the command -------------------------------------------------


def test_global_options_after_the_command(redis_url: str, conn: Redis) -> None:
    runner = CliRunner()
    closed = f"redis://127.0.0.1:{free_port()}/0"
    added = runner.invoke(
        cli, ["add", "x", "app.jobs.run", "--every", "1m", "-u", redis_url, "--namespace", "o"]
    )
    assert added.exit_code == 0, added.output
    assert conn.sismember("o:ids", "x")

    def ids(*args: str, env: dict[str, str] | None = None) -> list[str]:
        result = runner.invoke(cli, [*args, "--json"], env=env)
        assert result.exit_code == 0, result.output
        return [r["id"] for r in json.loads(result.output)]

    assert ids("ls", "--redis-url", redis_url, "--namespace", "o") == ["x"]
    assert ids("ls", "-u", redis_url, env={"RQBEAT_NAMESPACE": "o"}) == ["x"]  # the rest from the env
    assert ids("-u", closed, "ls", "-u", redis_url, "--namespace", "o") == ["x"]  # after wins over before
    assert ids("ls", "-u", redis_url, env={"RQBEAT_REDIS_URL": closed}) == []  # typed wins over the env
    assert ids("-u", redis_url, "ls", env={"RQBEAT_REDIS_URL": closed}) == []  # typed before, too
    unreachable = runner.invoke(cli, ["-u", redis_url, "ls", "-u", closed])
    assert unreachable.exit_code == 1
    assert closed in unreachable.output


# -- completion of schedule ids -------------------------------------------------------


def complete(words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash completion offers for the last word of ``words`` (a trailing space:
    a new word)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    variables = {"_RQBEAT_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = CliRunner().invoke(cli, [], env={**variables, **(env or {})}, prog_name="rqbeat")
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.output.splitlines() if line]


def test_completion_offers_schedule_ids_from_redis(rqbeat: Invoke, redis_url: str) -> None:
    for schedule_id in ("alpha", "alpine", "beta"):
        ok(rqbeat("add", schedule_id, "app.jobs.run", "--every", "1h"))
    ok(rqbeat("--namespace", "o", "add", "other", "app.jobs.run", "--every", "1h"))
    env = {"RQBEAT_REDIS_URL": redis_url}
    assert complete("rqbeat show al", env) == ["alpha", "alpine"]
    assert complete("rqbeat pause ", env) == ["alpha", "alpine", "beta"]
    assert complete("rqbeat set b", env) == ["beta"]
    assert complete(f"rqbeat -u {redis_url} rm alpha ") == ["alpha", "alpine", "beta"]
    assert complete(f"rqbeat history -u {redis_url} --namespace o ") == ["other"]
    assert complete("rqbeat trigger alph?", env) == []  # a glob character is taken literally


def test_completion_is_silent_when_redis_is_unreachable() -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    assert complete("rqbeat show a", {"RQBEAT_REDIS_URL": closed}) == []
    assert complete("rqbeat show a", {"RQBEAT_REDIS_URL": "nonsense://x"}) == []
    assert complete("rqbeat show a", {"RQBEAT_SENTINEL": "not-a-port:x"}) == []


# -- show: readable values, consistent JSON -------------------------------------------


def test_show_prints_readable_values(rqbeat: Invoke) -> None:
    ok(
        rqbeat(
            "add", "r1", "app.jobs.run", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
            "--args", '[1, "a", null]', "--kwargs", '{"region": {"eu": true}}', "--pause-on-failure",
        )
    )  # fmt: skip
    lines = ok(rqbeat("show", "r1")).splitlines()
    fields = {
        line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines if not line.startswith(" ")
    }
    assert fields["args"] == '[1, "a", null]'
    assert fields["kwargs"] == '{"region": {"eu": true}}'
    assert fields["pause_on_failure"] == "true"
    # ISO UTC, then the schedule's own wall clock (02:30 Berlin) and how far from now
    assert re.fullmatch(
        r"20\d\d-\d\d-\d\dT\d\d:30:00\.000Z \(20\d\d-\d\d-\d\d 02:30:00 CES?T, in [0-9hmds]+\)",
        fields["fire_at"],
    ), fields["fire_at"]


def test_show_json_gives_numbers_as_numbers(rqbeat: Invoke, conn: Redis) -> None:
    ok(rqbeat("add", "r1", "app.jobs.run", "--every", "1h"))
    # what dispatch writes for a run in flight (scripts.DISPATCH)
    conn.hset(
        K.schedule("r1"),
        mapping={
            "state": "running",
            "job_id": "r1-1-1",
            "job_queue": "default",
            "epoch": "7",
            "dispatched_at": "2026-01-01T00:00:00.000Z",
            "attempt": "2",
        },
    )
    data = json.loads(ok(rqbeat("show", "r1", "--json")))
    assert (data["epoch"], data["attempt"], data["version"]) == (7, 2, 1)
    assert (data["job_queue"], data["dispatched_at"]) == ("default", "2026-01-01T00:00:00.000Z")
    lines = ok(rqbeat("show", "r1")).splitlines()
    assert "epoch:" in [line.split()[0] for line in lines]
    conn.xadd(K.history("r1"), {"event": "missed", "fire_at": "2026-01-01T00:00:00.000Z", "count": "3"})
    conn.xadd(K.history("r1"), {"event": "dispatched", "job_id": "r1-1-1", "attempt": "2", "epoch": "7"})
    missed, dispatched = json.loads(ok(rqbeat("history", "r1", "--json")))
    assert (missed["count"], dispatched["epoch"], dispatched["attempt"]) == (3, 7, 2)


# -- the demo's hint ------------------------------------------------------------------


def test_demo_hint_works_without_activating_the_virtualenv(redis_url: str) -> None:
    command = inspect_command(redis_url)
    argv = shlex.split(command)
    assert argv[1:] == ["ls", "--redis-url", redis_url]
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}  # no VIRTUAL_ENV, no .venv/bin
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ID", "TRIGGER", "TZ", "STATE", "NEXT", "LAST"]
