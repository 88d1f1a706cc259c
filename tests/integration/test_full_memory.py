"""A full Redis (``maxmemory`` reached, ``noeviction``) is an error, loudly, and
nothing is half written: the CLI's writes exit non-zero with one clear line and leave
the keyspace as it was; a worker whose failed job cannot nudge the watchdog lives on;
dispatch backs off, reports, and resumes when memory is freed, with the fires missed
meanwhile handled by the misfire policy and recorded.

Real redis-servers started with ``--maxmemory``; "full" is reached by writing filler
keys until Redis refuses, then lowering maxmemory a little under the memory in use, so
that no write slips through while the test looks.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from devtools.cluster import Cluster
from devtools.localredis import free_port
from devtools.processes import Process, RedisServer, wait_for
from scheduler import Client, Schedule
from scheduler.cli.app import cli
from scheduler.clock import redis_now_ms
from scheduler.errors import RedisFull
from scheduler.keys import Keys

pytestmark = pytest.mark.integration

K = Keys("rqbeat")
FULL = "Error: Redis is out of memory (used_memory reached maxmemory)"


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "small", extra=["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"])
    server.start()
    yield server
    server.stop()


def fill(conn: Redis) -> None:
    """Write filler keys until Redis refuses a write, then set maxmemory 1 MiB under the
    memory in use: full, with a margin wider than what Redis frees by itself later
    (client query buffers are trimmed in the background)."""
    for count in range(10_000):
        try:
            conn.set(f"filler:{count}", b"x" * 65_536)
        except redis.exceptions.OutOfMemoryError:
            break
    used = int(conn.info("memory")["used_memory"])
    conn.config_set("maxmemory", used - 1024 * 1024)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        conn.set("filler:probe", "x")


def free(conn: Redis) -> None:
    conn.config_set("maxmemory", "256mb")


def rqbeat(server: RedisServer, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--redis-url", server.url, *args], catch_exceptions=True)


def keyspace(conn: Redis) -> dict[bytes, Any]:
    """Every key but the fillers, with its DUMP: equal means byte-for-byte equal."""
    keys: list[bytes] = conn.keys("*")  # type: ignore[assignment]
    return {key: conn.dump(key) for key in keys if not key.startswith(b"filler:")}


def assert_full_error(result: Result) -> None:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith(FULL), result.output
    assert "free memory in Redis or raise its maxmemory" in lines[0]


def test_cli_writes_to_a_full_redis_fail_and_write_nothing(small_redis: RedisServer, tmp_path: Path) -> None:
    conn = small_redis.client()
    assert rqbeat(small_redis, "add", "kept", "tests.jobs.record", "--every", "1h").exit_code == 0
    fill(conn)
    before = keyspace(conn)

    assert_full_error(rqbeat(small_redis, "add", "new", "tests.jobs.record", "--every", "30s"))
    assert_full_error(rqbeat(small_redis, "set", "kept", "--every", "2h"))
    assert_full_error(rqbeat(small_redis, "add", "kept", "tests.jobs.record", "--every", "2h", "--replace"))
    toml = tmp_path / "jobs.toml"
    toml.write_text(
        "".join(f'[schedules.a{i}]\ntarget = "tests.jobs.record"\nevery = "1h"\n' for i in range(3))
    )
    assert_full_error(rqbeat(small_redis, "apply", str(toml)))
    for command in ("pause", "trigger"):
        assert_full_error(rqbeat(small_redis, command, "kept"))
    client = Client(conn)
    with pytest.raises(RedisFull):
        client.upsert(Schedule(id="api", target="tests.jobs.record", every_ms=60_000))
    with pytest.raises(RedisFull):
        client.resume("kept")  # not paused, but the script is refused before it looks
    assert keyspace(conn) == before  # nothing written, byte for byte

    check = rqbeat(small_redis, "check", "--health-only")
    assert check.exit_code == 1 and "of maxmemory" in check.output, check.output

    # removing frees memory: the way out of a full Redis is not refused
    assert rqbeat(small_redis, "rm", "kept").exit_code == 0
    assert conn.scard(K.ids) == 0
    conn.close()


def test_apply_that_cannot_fit_is_refused_before_any_chunk(small_redis: RedisServer, tmp_path: Path) -> None:
    conn = small_redis.client()
    used = int(conn.info("memory")["used_memory"])
    conn.config_set("maxmemory", used + 1024 * 1024)  # 1 MiB left; 3,000 schedules need more
    toml = tmp_path / "many.toml"
    toml.write_text(
        "".join(f'[schedules.s{i:05d}]\ntarget = "tests.jobs.record"\nevery = "1h"\n' for i in range(3_000))
    )
    before = keyspace(conn)
    result = rqbeat(small_redis, "apply", str(toml))
    assert_full_error(result)
    assert "nothing was written (it needs about" in result.output
    assert keyspace(conn) == before
    conn.close()


def test_failed_job_nudge_under_oom_does_not_kill_the_worker(
    small_redis: RedisServer, processes: list[Process], tmp_path: Path
) -> None:
    """A work horse killed while Redis is full: RQ cannot record the failure and the
    worker's nudge of the watchdog meets OOM. The worker lives on; once memory is
    freed the watchdog judges the run (failed, retried) and the retry runs."""
    conn = small_redis.client()
    out = tmp_path / "runs.txt"
    client = Client(conn)
    client.upsert(
        Schedule(id="hung", target="tests.jobs.hang_first", kwargs={"path": str(out)}, every_ms=3_600_000)
    )
    cluster = Cluster(small_redis.url, tmp_path, processes)
    cluster.replica("r1")
    cluster.wait_leader(conn)
    worker = cluster.worker("w1", extra=["--log-level", "debug"])  # each try of the nudge
    wait_for(lambda: conn.scard("rq:workers"), what="the worker to register")
    client.trigger("hung")
    started = wait_for(lambda: re.search(r"attempt=1 pid=(\d+)", out.read_text()) if out.exists() else None)

    fill(conn)
    os.kill(int(started.group(1)), signal.SIGKILL)  # the horse dies: a failure to record
    wait_for(lambda: "during=nudging the watchdog for hung" in worker.output(), what="the nudge to meet OOM")
    free(conn)

    wait_for(lambda: "done hung" in out.read_text(), timeout=30, what="the retry, run by the same worker")

    def events() -> list[str]:
        return [e.event for e in client.history("hung")]

    wait_for(lambda: events()[-1] == "succeeded", what="the retry's ack")
    assert events() == ["triggered", "dispatched", "failed", "dispatched", "succeeded"], events()
    assert worker.alive(), worker.output()
    conn.close()


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        families = text_string_to_metric_families(reply.read().decode())
    return sum(s.value for f in families for s in f.samples if s.name == name)


def test_dispatch_backs_off_under_oom_and_resumes_with_the_misfire_policy(
    small_redis: RedisServer, processes: list[Process], tmp_path: Path
) -> None:
    conn = small_redis.client()
    out = tmp_path / "ticks.txt"
    client = Client(conn)
    client.upsert(Schedule(id="tick", target="tests.jobs.touch", kwargs={"path": str(out)}, every_ms=1000))
    cluster = Cluster(small_redis.url, tmp_path, processes)
    port = free_port()
    replica = cluster.replica("r1", extra=["--metrics-port", str(port), "--metrics-host", "127.0.0.1"])
    worker = cluster.worker("w1", grace=30)

    def done() -> int:
        return out.read_text().count("done ") if out.exists() else 0

    wait_for(lambda: done() >= 2, timeout=20, what="two runs")
    fill(conn)
    full_ms = redis_now_ms(conn)
    wait_for(lambda: "redis full node=r1" in replica.output(), timeout=10, what="dispatch to meet OOM")
    wait_for(lambda: redis_now_ms(conn) - full_ms >= 3_500, what="three fires to pass while full")
    ran_while_full = done()
    free(conn)
    freed = time.monotonic()

    wait_for(lambda: done() > ran_while_full, timeout=20, what="a run after memory was freed")
    print(f"OOM: first run {time.monotonic() - freed:.3f}s after memory was freed")
    wait_for(lambda: done() >= ran_while_full + 2, timeout=20, what="runs after memory was freed")
    log = replica.output()
    assert "redis accepts writes again node=r1" in log, log
    assert log.count("redis full node=r1") <= 6, log  # thinned: 1st, 2nd, 4th, 8th... refusal
    assert scrape(port, "rqbeat_redis_oom_total") >= 1
    assert scrape(port, "rqbeat_redis_full") == 0
    missed = [e for e in client.history("tick", count=100) if e.event == "missed" and e.at_ms >= full_ms]
    assert missed and sum(int(e.fields["count"]) for e in missed) >= 2, missed  # coalesced, recorded
    assert worker.alive(), worker.output()
    conn.close()
