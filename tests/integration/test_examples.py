"""examples/*.py run as real subprocesses against the test's private Redis: each
exits 0 by itself and leaves the state its output claims."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
from redis import Redis

from devtools.processes import REPO

pytestmark = pytest.mark.integration


def run_example(name: str, redis_url: str) -> str:
    env = {**os.environ, "RQBEAT_REDIS_URL": redis_url}
    env.pop("RQBEAT_NAMESPACE", None)
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def events(conn: Redis, schedule_id: str) -> list[dict[str, str]]:
    entries: Any = conn.xrange(f"rqbeat:history:{schedule_id}")  # redis-py types replies loosely
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


def test_manage_schedules(redis_url: str, conn: Redis) -> None:
    out = run_example("manage_schedules.py", redis_url)
    assert "upsert example-report: created (version 1)" in out
    assert "refused: field=id value='bad id'" in out
    assert "pause example-report again: changed=False" in out
    assert "history example-report: paused resumed triggered" in out
    assert out.strip().endswith("remaining: example-report")

    assert conn.smembers("rqbeat:ids") == {b"example-report"}
    assert not conn.exists("rqbeat:schedule:example-heartbeat", "rqbeat:history:example-heartbeat")
    assert conn.hget("rqbeat:schedule:example-report", "state") == b"due"
    assert [e["event"] for e in events(conn, "example-report")] == ["paused", "resumed", "triggered"]
    seconds, _ = conn.time()
    score = conn.zscore("rqbeat:due", "example-report")
    assert score is not None and score <= seconds + 1, "triggered: due now, not at 02:30"


def test_embed_service(redis_url: str, conn: Redis) -> None:
    out = run_example("embed_service.py", redis_url)
    match = re.search(r"^acked example-embedded fire=(\S+) job=(\S+); last_result=succeeded$", out, re.M)
    assert match, out
    fire_at, job_id = match.groups()
    assert "hello embedded from fire" in out  # printed by the job in the worker's work horse

    # every second: the next fire may have been dispatched before the replica stopped
    history = events(conn, "example-embedded")
    assert [e["event"] for e in history[:2]] == ["dispatched", "succeeded"]
    assert history[1]["job_id"] == job_id and history[1]["fire_at"] == fire_at
    assert conn.hget(f"rq:job:{job_id}", "status") == b"finished"
    assert conn.hget("rqbeat:schedule:example-embedded", "last_result") == b"succeeded"
    assert not conn.exists("rqbeat:leader"), "the embedded replica released its lease on stop()"


def test_job_current_fire(redis_url: str, conn: Redis) -> None:
    out = run_example("job_current_fire.py", redis_url)
    match = re.search(
        r"^job: schedule=example-fire fire_at=\S+ attempt=1 key=(example-fire:\d+) epoch=1 first_run=True$",
        out,
        re.M,
    )
    assert match, out
    key = match.group(1)
    job_line = re.search(
        r"^job (example-fire-\d+-1): status=finished result='schedule=example-fire", out, re.M
    )
    assert job_line, out
    job_id = job_line.group(1)
    assert key == f"example-fire:{job_id.split('-')[2]}", "the key is <schedule>:<fire ms>, as is the job id"
    assert conn.get(f"example:done:{key}") == job_id.encode()
    assert conn.hget(f"rq:job:{job_id}", "status") == b"finished"
    assert [e["event"] for e in events(conn, "example-fire")] == ["triggered", "dispatched", "succeeded"]
