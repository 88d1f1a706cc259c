"""maxmemory-policy advice at the start of ``rqbeat run`` and in ``rqbeat check``,
against real servers configured with allkeys-lru and noeviction, and as a user that
may not run INFO."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import REPO, Process, RedisServer, wait_for
from scheduler.eviction import check_eviction, read_policy

pytestmark = pytest.mark.integration


@pytest.fixture
def lru_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "lru", extra=["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
    server.start()
    yield server
    server.stop()


def check(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", "--redis-url", url, "check"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_run_and_check_warn_once_under_allkeys_lru(
    lru_server: RedisServer, tmp_path: Path, processes: list[Process]
) -> None:
    replica = Cluster(lru_server.url, tmp_path, processes).replica("a")
    conn = lru_server.client()
    wait_for(lambda: conn.exists("rqbeat:leader"), timeout=10, what="a leader")
    warnings = [line for line in replica.output().splitlines() if "maxmemory-policy" in line]
    assert len(warnings) == 1, replica.output()
    assert " WARNING scheduler.eviction: maxmemory-policy is allkeys-lru" in warnings[0]

    result = check(lru_server.url)
    assert result.returncode == 0, result.stderr  # advice, not a health failure
    assert result.stderr.splitlines() == [
        "warning: maxmemory-policy is allkeys-lru: under memory pressure Redis may evict "
        "rqbeat's schedules and RQ's jobs; set it to noeviction"
    ]
    conn.close()


def test_noeviction_is_quiet(redis_url: str, tmp_path: Path, processes: list[Process]) -> None:
    replica = Cluster(redis_url, tmp_path, processes).replica("a")
    wait_for(lambda: "acquired" in replica.output(), timeout=10, what="a leader")
    assert "maxmemory-policy" not in replica.output()
    result = check(redis_url)
    assert result.returncode == 0 and result.stderr == "", result


def test_a_user_without_info_is_told_quietly(
    lru_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin = lru_server.client()
    admin.execute_command("ACL", "SETUSER", "noinfo", "on", ">pw-noinfo-1", "~*", "+@all", "-info")  # type: ignore[no-untyped-call]
    url = f"redis://noinfo:pw-noinfo-1@127.0.0.1:{lru_server.port}/0"
    conn = Redis.from_url(url)
    with caplog.at_level(logging.DEBUG, logger="scheduler.eviction"):
        assert read_policy(conn) is None
        assert check_eviction(conn) is None
    assert [r.levelname for r in caplog.records] == ["DEBUG", "DEBUG"]
    assert "cannot read maxmemory-policy" in caplog.records[0].getMessage()
    result = check(url)
    assert "maxmemory" not in result.stderr, result.stderr  # exit 1 (no leader), nothing about the policy
    conn.close()
    admin.close()
