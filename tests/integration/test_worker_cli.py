"""``rqbeat worker`` as a new user runs it: the installed console script, started in
an app directory outside the repository (no PYTHONPATH to it), in each ``--mode``;
``--path``, ``--burst``/``--max-jobs``; a target that does not import (one line, in
the worker's log and in the run's history); ``add --check-import``; and the README's
"Five-minute start with your own app" as written."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from devtools.apps import write_app
from devtools.processes import wait_for
from scheduler.clock import redis_now_ms
from scheduler.engine.dispatch import Dispatcher
from scheduler.engine.watchdog import Watchdog
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import Client

pytestmark = pytest.mark.integration

RQBEAT = Path(sys.executable).with_name("rqbeat")
K = Keys()
#: ``rqbeat worker --mode`` (as typed: this file runs the CLI only).
MODES = ("fork", "simple", "pool")
QUEUE = "reports"
TARGET = "myapp.tasks.reports.daily"
UNIMPORTABLE = "cannot import myapp.tasks.reports: No module named 'myapp'"
REPORTS_PY = '''"""The user's job module."""


def daily(region: str = "eu") -> str:
    return f"report for {region}"
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """``<tmp>/app/myapp/tasks/reports.py``: a user's app, outside the repository."""
    return write_app(tmp_path / "app", REPORTS_PY)


@pytest.fixture
def env(redis_url: str) -> dict[str, str]:
    """The user's environment: the venv's console script, no path to the repository."""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("RQBEAT_")}
    return {**clean, "RQBEAT_REDIS_URL": redis_url}


def rqbeat(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RQBEAT), *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Long-running processes of a test; stopped (SIGTERM, then SIGKILL) at its end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def start(
    procs: list[subprocess.Popen[bytes]], env: dict[str, str], cwd: Path, log: Path, *args: str
) -> None:
    with log.open("wb") as out:
        procs.append(
            subprocess.Popen(
                [str(RQBEAT), *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )


def events(conn: Redis, sid: str) -> list[str]:
    return [e.event for e in Client(conn).history(sid, count=100)]


def dispatch(conn: Redis, sid: str, target: str = TARGET) -> str:
    """Make ``sid`` due now and dispatch it as a leader set by hand; its job id."""
    client = Client(conn)
    if client.stored([sid]) == {}:
        client.upsert(Schedule(id=sid, target=target, every_ms=3_600_000, queue=QUEUE))
    client.trigger(sid)
    conn.set(K.leader, "1:test")
    result = Dispatcher(conn, K).dispatch(redis_now_ms(conn), "1:test", 10)
    return next(d.job_id for d in result.runs if d.schedule_id == sid)


README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Five-minute start with your own app"
#: The commands of the section that run until stopped (started in the background).
SERVING = ("run", "worker")


def five_minute_start() -> tuple[tuple[str, str], list[list[str]]]:
    """The README section's job file (path, text) and its commands, as written."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    python = re.search(r"```python\n(.*?)```", section, re.S)
    shell = re.search(r"```sh\n(.*?)```", section, re.S)
    assert python is not None and shell is not None, section
    first, _, body = python.group(1).partition("\n")
    commands = [shlex.split(line, comments=True) for line in shell.group(1).splitlines()]
    return (first.removeprefix("# ").strip(), body), [c for c in commands if c]


def step(
    env: dict[str, str], app: Path, started: list[subprocess.Popen[bytes]], log: Path, args: list[str]
) -> None:
    """One command of the section: a server started, ``history`` polled until it shows
    an ack, any other run to its end, cleanly (``add``: no warning, the target imports)."""
    if args[0] in SERVING:
        start(started, env, app, log, *args)
    elif args[0] == "history":
        wait_for(lambda: "succeeded" in rqbeat(env, app, *args).stdout, 60, what="an ack in the history")
    else:
        done = rqbeat(env, app, *args)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr


@pytest.mark.parametrize("mode", MODES)
def test_the_readmes_five_minute_start_runs_as_written(
    *, env: dict[str, str], conn: Redis, tmp_path: Path, started: list[subprocess.Popen[bytes]], mode: str
) -> None:
    """README, "Five-minute start with your own app": its file and its commands, in an
    app directory outside the repository, with ``rqbeat worker --mode`` of each mode."""
    (path, body), commands = five_minute_start()
    app = tmp_path / "project"
    (app / path).parent.mkdir(parents=True)
    (app / path).write_text(body, encoding="utf-8")
    assert [c[1] for c in commands] == ["add", "run", "worker", "trigger", "history"]
    assert {c[0] for c in commands} == {"rqbeat"}
    sid = commands[0][2]
    for n, (_, command, *args) in enumerate(commands):
        extra = (
            ["--mode", mode, *(("--processes", "1") if mode == "pool" else ())] if command == "worker" else []
        )
        step(env, app, started, tmp_path / f"{n}-{command}.log", [command, *args, *extra])
    assert "failed" not in events(conn, sid)
    # acked by the worker, in RQ's success transaction (not later by the leader's watchdog)
    assert int(conn.hget(K.stats, "acks_total:worker") or 0) >= 1
    assert conn.hget(K.stats, "acks_total:watchdog") is None


def test_path_and_a_target_that_does_not_import(
    app: Path, env: dict[str, str], conn: Redis, tmp_path: Path
) -> None:
    """From another directory the job does not import: one line in the worker's log
    and in the run's history, no traceback; with ``-P`` to the app it runs and acks."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dispatch(conn, "r")
    failed = rqbeat(env, elsewhere, "worker", QUEUE, "--burst")
    assert failed.returncode == 0, failed.stderr
    log = failed.stdout + failed.stderr
    assert "Traceback" not in log, log
    assert [line for line in log.splitlines() if "myapp" in line] == [
        line for line in log.splitlines() if UNIMPORTABLE in line
    ], log
    assert len([line for line in log.splitlines() if UNIMPORTABLE in line]) == 1, log
    Watchdog(conn, K).check(redis_now_ms(conn))
    last = Client(conn).history("r")[-1]
    assert (last.event, last.fields["error"]) == ("failed", UNIMPORTABLE)

    dispatch(conn, "r")
    ran = rqbeat(env, elsewhere, "worker", QUEUE, "--burst", "-P", str(app))
    assert ran.returncode == 0, ran.stderr
    assert events(conn, "r")[-1] == "succeeded", ran.stderr


def test_max_jobs_ends_the_worker(app: Path, env: dict[str, str], conn: Redis) -> None:
    for sid in ("a", "b"):
        dispatch(conn, sid)
    done = rqbeat(env, app, "worker", QUEUE, "--max-jobs", "1")  # not --burst: it would wait
    assert done.returncode == 0, done.stderr
    outcomes = sorted(events(conn, sid)[-1] for sid in ("a", "b"))
    assert outcomes == ["dispatched", "succeeded"]


def test_add_warns_or_refuses_a_target_that_does_not_import(
    app: Path, env: dict[str, str], conn: Redis, tmp_path: Path
) -> None:
    refused = rqbeat(env, tmp_path, "add", "r", TARGET, "--every", "1m", "--check-import")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"Error: target: does not import here: {UNIMPORTABLE} (got '{TARGET}')"
    ]
    assert conn.keys("rqbeat:*") == []
    warned = rqbeat(env, tmp_path, "add", "r", TARGET, "--every", "1m")
    assert warned.returncode == 0, warned.stderr
    assert warned.stderr.splitlines() == [
        f"warning: r: target {TARGET} does not import here ({UNIMPORTABLE}); written anyway: workers "
        "must import it (rqbeat worker --path), or refuse with --check-import"
    ]
    assert Client(conn).get("r").schedule is not None
    checked = rqbeat(env, app, "set", "r", "--target", TARGET, "--check-import")
    assert (checked.returncode, checked.stderr) == (0, "")
