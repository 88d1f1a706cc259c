"""ACL users and password hygiene against a real server.

The rules come from :mod:`scheduler.ops.acl` -- the same text ``rqbeat acl`` prints and
the README quotes -- and are applied with ``ACL SETUSER``; then a real replica and a
real worker run as those users, and what each user may *not* do is tried too.
Every command's output (and the replica's and worker's logs) is searched for the
passwords.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.exceptions
from redis import Redis

from devtools.cluster import Cluster, runs_per_key
from devtools.processes import REPO, Process, RedisServer, wait_for
from scheduler.ops.acl import acl_rules
from scheduler.records import text

pytestmark = pytest.mark.integration

SCHEDULER_PW = "sched-S3cret-7781"
WORKER_PW = "work-S3cret-9902"
#: Job code's own keys (tests/jobs.py counts runs under test:*): added to the worker.
JOB_KEYS = "~test:*"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    admin = srv.client()
    admin.execute_command("ACL", "SETUSER", "rqbeat-scheduler", *acl_rules("scheduler"), f">{SCHEDULER_PW}")  # type: ignore[no-untyped-call]
    admin.execute_command("ACL", "SETUSER", "rqbeat-worker", *acl_rules("worker"), JOB_KEYS, f">{WORKER_PW}")  # type: ignore[no-untyped-call]
    admin.close()
    yield srv
    srv.stop()


def url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def rqbeat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **(env or {})},
        cwd=REPO,
        timeout=60,
        check=False,
    )


def as_user(server: RedisServer, user: str, password: str) -> Redis:
    return Redis.from_url(url(server, user, password))


def assert_denied(*calls: Callable[[], object]) -> None:
    for call in calls:
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()


def test_cli_prints_the_rules_the_test_applies() -> None:
    line = rqbeat("acl", "worker").stdout.strip()
    assert line == " ".join(["ACL", "SETUSER", "rqbeat-worker", *acl_rules("worker")])
    other = rqbeat("--namespace", "billing", "acl", "scheduler", "--user", "sched").stdout.strip()
    assert other.startswith("ACL SETUSER sched reset on -@all ")
    assert "~billing:*" in other.split() and "&billing:events" in other.split()


def test_replica_and_worker_as_least_privilege_users(
    server: RedisServer, tmp_path: Path, processes: list[Process]
) -> None:
    sched_url, work_url = (
        url(server, "rqbeat-scheduler", SCHEDULER_PW),
        url(server, "rqbeat-worker", WORKER_PW),
    )
    admin = server.client()
    admin.execute_command("ACL", "LOG", "RESET")  # type: ignore[no-untyped-call]
    replica = Cluster(sched_url, tmp_path, processes).replica("a", log_level="debug")
    worker = Cluster(work_url, tmp_path, processes).worker("w0")
    wait_for(lambda: admin.scard("rq:workers") >= 1, timeout=20, what="the worker")
    added = rqbeat("--redis-url", sched_url, "add", "acl", "tests.jobs.record", "--every", "1s")
    assert added.returncode == 0, added.stderr
    wait_for(lambda: len(runs_per_key(admin)) >= 2, timeout=20, what="2 runs")
    wait_for(lambda: text(admin.hget("rqbeat:schedule:acl", "last_result")) == "succeeded", timeout=20,
             what="an acknowledged run")  # fmt: skip
    added = rqbeat(
        "--redis-url", sched_url, "add", "acl-all", "tests.jobs.record", "--every", "1s",
        "--overlap", "allow_all", "--max-concurrent", "2",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    wait_for(lambda: text(admin.hget("rqbeat:schedule:acl-all", "last_result")) == "succeeded", timeout=20,
             what="an acknowledged allow_all run")  # fmt: skip
    assert "by=watchdog" not in replica.output()  # the worker's atomic acks went through its ACL
    log = admin.execute_command("ACL", "LOG")  # type: ignore[no-untyped-call]
    denied = {(text(e[b"username"]), text(e[b"object"])) for e in log}
    # Neither user was refused anything it needed. RQ's worker asks CLIENT LIST (every
    # client's address) only to show its own IP in `rq info`, and copes with a refusal.
    assert denied <= {("rqbeat-worker", "client|list")}, log

    worker_conn = as_user(server, "rqbeat-worker", WORKER_PW)
    assert_denied(
        lambda: worker_conn.set("rqbeat:leader", "99:forged"),  # take the lease
        lambda: worker_conn.incr("rqbeat:epoch"),  # move the fencing counter
        lambda: worker_conn.sadd("rqbeat:ids", "evil"),  # register a schedule
        worker_conn.flushall,
        lambda: worker_conn.config_get("maxmemory-policy"),
    )
    refused = rqbeat("--redis-url", work_url, "add", "evil", "tests.jobs.record", "--every", "1s")
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: Redis refused the command: ") and "permission" in refused.stderr
    assert admin.exists("rqbeat:schedule:evil") == 0

    sched_conn = as_user(server, "rqbeat-scheduler", SCHEDULER_PW)
    assert_denied(
        sched_conn.flushall,
        lambda: sched_conn.config_set("maxmemory-policy", "allkeys-lru"),
        lambda: sched_conn.keys("*"),
        lambda: sched_conn.set("app:secret", "x"),  # keys outside rqbeat:* and rq:*
        lambda: sched_conn.execute_command("FUNCTION", "FLUSH"),  # type: ignore[no-untyped-call]
    )
    for proc in (replica, worker):
        proc.stop()
        assert SCHEDULER_PW not in proc.output() and WORKER_PW not in proc.output()
    for conn in (worker_conn, sched_conn, admin):
        conn.close()


@pytest.mark.slow  # ~11 s: every command, each with a password that must not show
def test_passwords_never_printed(server: RedisServer) -> None:
    good = url(server, "rqbeat-scheduler", SCHEDULER_PW)
    encoded = f"redis://rqbeat-scheduler:p%40ss-{SCHEDULER_PW}@127.0.0.1:{server.port}/0"
    wrong = url(server, "rqbeat-scheduler", "wrong-" + SCHEDULER_PW)
    nowhere = f"redis://rqbeat-scheduler:{SCHEDULER_PW}@127.0.0.1:1/0"
    runs = [
        (["--redis-url", good, "add", "pw", "tests.jobs.record", "--every", "1h"], 0),
        (["--redis-url", good, "ls"], 0),
        (["--redis-url", good, "show", "pw", "--json"], 0),
        (["--redis-url", good, "status"], 0),
        (["--redis-url", good, "status", "--json"], 0),
        (["--redis-url", good, "check"], 1),  # no leader
        (["--redis-url", good, "show", "missing"], 1),
        (["--redis-url", wrong, "ls"], 1),
        (["--redis-url", encoded, "ls"], 1),
        (["--redis-url", nowhere, "ls"], 1),
        (["--redis-url", nowhere, "--sentinel", "127.0.0.1:1", "--sentinel-master", "m", "ls"], 1),
        (["--redis-url", good.replace("redis://", "http://"), "ls"], 2),
        (["--redis-url", good, "--tls-ca-cert", "/nonexistent", "ls"], 2),
        (["--redis-url", good, "add", "bad id!", "x.y", "--every", "1s"], 2),
    ]
    for args, code in runs:
        result = rqbeat(*args)
        assert result.returncode == code, (args, result.stderr)
        shown = result.stdout + result.stderr
        for secret in (SCHEDULER_PW, "p@ss-", "p%40ss-"):
            assert secret not in shown, (args, shown)
    env_help = rqbeat("--help", env={"RQBEAT_REDIS_URL": good})
    assert env_help.returncode == 0 and SCHEDULER_PW not in env_help.stdout
    masked = rqbeat("--redis-url", nowhere, "ls").stderr
    assert masked.startswith("Error: cannot reach Redis at redis://rqbeat-scheduler:***@127.0.0.1:1/0: ")
