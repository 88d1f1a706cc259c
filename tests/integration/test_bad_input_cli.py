"""Bad input against a real Redis: the Python API, ``rqbeat add`` and ``rqbeat apply``.

Driven by hypothesis. Whatever comes in: a clean error (InvalidSchedule, or exit 2
with one ``Error:`` line and no traceback) and a byte-for-byte unchanged keyspace; or
success, and then the stored schedule reads back equal to what was given.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import assume, event, given
from hypothesis import strategies as st
from redis import Redis

from devtools.processes import REPO
from scheduler import cron, windows
from scheduler.cli.app import cli
from scheduler.clock import redis_now_ms
from scheduler.errors import InvalidSchedule
from scheduler.model import Schedule
from scheduler.records import decode_definition
from scheduler.store import Client
from scheduler.stored import read_text
from tests.badinput import PROFILE, any_raw, junk, nasty_text, toml_document, valid_raw
from tests.keyspace import snapshot

pytestmark = pytest.mark.integration

#: ``rqbeat add`` options that take a value, and plausible values for them.
ADD_OPTIONS: dict[str, st.SearchStrategy[str]] = {
    "--cron": st.sampled_from(["* * * * *", "30 2 * * *", "*/10 * * * * *", "@hourly", "H/15 * * * *"]),
    "--every": st.sampled_from(["1s", "30s", "10m", "1h30m", "90", "1.5s"]),
    "--args": st.sampled_from(["[]", '[1, "a"]', "[null, true, 1.5]"]),
    "--kwargs": st.sampled_from(["{}", '{"a": 1}', '{"x": [1, {"y": null}]}']),
    "--tz": st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata"]),
    "--queue": st.sampled_from(["default", "reports", "a:b.c-d_e"]),
    "--timeout": st.sampled_from(["1s", "500ms", "2h"]),
    "--ttl": st.sampled_from(["1m", "1d"]),
    "--result-ttl": st.sampled_from(["10m", "3600"]),
    "--failure-ttl": st.sampled_from(["1d"]),
    "--description": st.sampled_from(["nightly report", "Grüße, 日本"]),
    "--misfire": st.sampled_from(["coalesce", "all", "skip"]),
    "--overlap": st.sampled_from(["skip", "buffer_one", "buffer_all", "cancel_other"]),
    "--catchup-window": st.sampled_from(["1h", "30s"]),
    "--jitter": st.sampled_from(["0", "1s", "5m"]),
    "--max-attempts": st.sampled_from(["1", "3", "1000"]),
}


def invoke(redis_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--redis-url", redis_url, *args], catch_exceptions=True)


def assert_clean_refusal(result: Result) -> None:
    """Exit 2, exactly one ``Error:`` line, no traceback, nothing else but click's usage."""
    output = result.output
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    if "Usage:" not in output:
        assert output.strip() == errors[0], output


@st.composite
def add_argv(draw: st.DrawFn) -> list[str]:
    """``rqbeat add`` arguments: mostly plausible, one value in six random text."""
    text = nasty_text.filter(lambda s: "\x00" not in s)  # argv cannot carry NUL

    def pick(plausible: st.SearchStrategy[str]) -> str:
        return draw(text | st.integers().map(str)) if draw(st.integers(0, 5)) == 0 else draw(plausible)

    argv = [
        pick(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)),
        pick(st.sampled_from(["app.jobs.run", "tests.jobs.record"])),
    ]
    trigger = draw(st.sampled_from(["--cron", "--every"]))
    argv += [trigger, pick(ADD_OPTIONS[trigger])]
    for option in draw(st.lists(st.sampled_from(sorted(ADD_OPTIONS)), unique=True, max_size=4)):
        if option not in ("--cron", "--every"):
            argv += [option, pick(ADD_OPTIONS[option])]
    argv += draw(st.lists(st.sampled_from(["--json", "--pause-on-failure"]), unique=True))
    return [*argv, "--replace"]  # the examples share one Redis: an id drawn twice is no refusal


# -- the Python API -------------------------------------------------------------------


@PROFILE
@given(any_raw())
def test_client_upsert_writes_all_or_nothing(conn: Redis, raw: dict[str, Any]) -> None:
    client = Client(conn)
    before = snapshot(conn)
    try:
        schedule = Schedule.from_dict({k: v for k, v in raw.items() if v is not None})
    except InvalidSchedule:
        event("refused")
        assert snapshot(conn) == before
        return
    event("accepted")
    try:
        client.upsert(schedule)
    except InvalidSchedule as exc:  # exclusions that leave no fire: known only when writing
        assert exc.field == "exclude", exc
        event("refused at write: no fire left")
        assert snapshot(conn) == before
        return
    assert client.get(schedule.id).schedule == schedule


@PROFILE
@given(st.lists(valid_raw(), min_size=1, max_size=5, unique_by=lambda r: str(r["id"])))
def test_valid_schedules_round_trip_through_redis(conn: Redis, raws: list[dict[str, Any]]) -> None:
    conn.flushdb()
    client = Client(conn)
    schedules = [Schedule.from_dict(r) for r in raws]
    # exclusions that drop every fire are refused when written (the test above): not here
    now_ms = redis_now_ms(conn)
    assume(all(_has_a_fire(s, now_ms) for s in schedules))
    client.upsert_many(schedules)
    records = {r.id: r for r in client.list()}
    for schedule in schedules:
        assert records[schedule.id].schedule == schedule
        assert records[schedule.id].state == "due"
    assert {r.action for r in client.upsert_many(schedules)} == {"unchanged"}


def _has_a_fire(schedule: Schedule, now_ms: int) -> bool:
    """Whether the schedule fires after now (else it is stored completed, or refused)."""
    try:
        return cron.next_fire_ms(schedule.trigger, now_ms) != windows.NEVER_MS
    except InvalidSchedule:
        return False


# -- rqbeat add -----------------------------------------------------------------------


@PROFILE
@given(add_argv())
def test_add_with_random_options(redis_url: str, conn: Redis, argv: list[str]) -> None:
    before = snapshot(conn)
    result = invoke(redis_url, "add", *argv)
    event(f"exit {result.exit_code}")
    if result.exit_code != 0:
        assert_clean_refusal(result)
        assert snapshot(conn) == before
        return
    assert result.exception is None, result.output
    assert decode_definition(argv[0], read_text(conn, f"rqbeat:schedule:{argv[0]}")).id == argv[0]
    if "--json" in argv:
        assert json.loads(result.stdout)["id"] == argv[0]


@PROFILE
@given(st.sampled_from(sorted(ADD_OPTIONS)), junk.map(str))
def test_add_with_one_junk_option(redis_url: str, conn: Redis, option: str, value: str) -> None:
    before = snapshot(conn)
    junk_value = value.replace("\x00", "")
    result = invoke(redis_url, "add", "x", "app.jobs.run", "--every", "1m", option, junk_value, "--replace")
    if result.exit_code != 0:
        assert_clean_refusal(result)
        assert snapshot(conn) == before


@PROFILE
@given(st.sampled_from(sorted(ADD_OPTIONS)), junk.map(str))
def test_set_with_one_junk_option(redis_url: str, conn: Redis, option: str, value: str) -> None:
    """``set`` validates the merged schedule as ``add`` does: a clean refusal and
    nothing written, or a valid stored definition."""
    fresh = invoke(redis_url, "add", "x", "app.jobs.run", "--every", "1m", "--args", "[1]", "--replace")
    assert fresh.exit_code == 0, fresh.output  # the examples share one Redis: start each afresh
    before = snapshot(conn)
    result = invoke(redis_url, "set", "x", option, value.replace("\x00", ""))
    if result.exit_code != 0:
        assert_clean_refusal(result)
        assert snapshot(conn) == before
        return
    stored = decode_definition("x", read_text(conn, "rqbeat:schedule:x"))
    if option != "--args":
        assert stored.args == (1,)  # set keeps what it was not given


# -- rqbeat apply ---------------------------------------------------------------------


@PROFILE
@given(
    st.dictionaries(
        st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True) | nasty_text, valid_raw() | any_raw(), max_size=3
    ),
    st.booleans(),
)
def test_apply_with_random_files(
    redis_url: str, conn: Redis, tmp_path: Path, schedules: dict[str, dict[str, Any]], prune: bool
) -> None:
    path = tmp_path / "jobs.toml"
    try:
        path.write_text(toml_document(schedules), encoding="utf-8", errors="surrogatepass")
    except RecursionError:
        return  # the test's own TOML writer
    before = snapshot(conn)
    result = invoke(redis_url, "apply", str(path), *(["--prune"] if prune else []))
    event(f"exit {result.exit_code}")
    if result.exit_code != 0:
        assert_clean_refusal(result)
        assert snapshot(conn) == before
    else:
        assert result.exception is None, result.output


# -- a few real processes -------------------------------------------------------------


def run_rqbeat(
    redis_url: str, *args: str | bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", "--redis-url", redis_url, *args],
        capture_output=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ([b"add", b"x", b"app.jobs.run", b"--every", b"\xff\xfe"], {}),  # not UTF-8: surrogates
        ([b"add", b"x", b"app.jobs.run", b"--every", b"1m", b"--description", b"\xff"], {}),
        ([b"add", b"x", b"app.jobs.run", b"--every", b"1m", b"--args", b"[1, NaN]"], {}),
        ([b"add", b"x", b"app.jobs.run", b"--cron", b"\x1b[2J * * * *"], {}),
        ([b"add", b"x\nid", b"app.jobs.run", b"--every", b"1m"], {}),
        ([b"add", b"x", b"app.jobs.run", b"--every", b"1m"], {"RQBEAT_ADD_MAX_ATTEMPTS": "abc"}),
        ([b"add", b"x", b"app.jobs.run", b"--every", b"1m"], {"RQBEAT_ADD_TZ": "Mars/Olympus"}),
    ],
)
def test_real_process_refuses_cleanly(
    redis_url: str, conn: Redis, args: list[bytes], env: dict[str, str]
) -> None:
    before = snapshot(conn)
    done = run_rqbeat(redis_url, *args, env=env)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    assert done.stdout == b""
    assert snapshot(conn) == before


def test_real_process_apply_of_a_hostile_file(redis_url: str, conn: Redis, tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(
        '[schedules.ok]\ntarget = "m.f"\nevery = "1m"\n'
        '[schedules."evil\\u001b[2J"]\ntarget = "m.f"\nevery = ' + "9" * 5000 + "\n",
        encoding="utf-8",
    )
    before = snapshot(conn)
    done = run_rqbeat(redis_url, "apply", str(path))
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("Error: file: "), stderr
    assert "\x1b" not in stderr
    assert snapshot(conn) == before
