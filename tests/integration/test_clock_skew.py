"""Workers whose wall clock is off: a fire still runs once and runs never overlap.

RQ stamps heartbeats (``rq:wip:<queue>`` scores, ``rq:executions:<job>`` scores,
``last_heartbeat``) and ``ended_at`` with the worker's clock. A worker 300 s behind
used to look dead to the watchdog at its first look (its heartbeat "expired" 5
minutes ago), so its fire was retried while it still ran: the same fire ran twice,
two runs overlapped. A worker 300 s ahead looked alive 5 minutes after it died.

The skew is real for the worker process and its work horse: ``devtools/skewclock``
shifts ``time.time`` and ``datetime.now`` in the subprocess. Redis, the replica and
this test keep the true time. Jobs are ``tests.jobs.exclusive``, slower than the
heartbeat interval (1 s) plus grace (2 s), which count overlaps without a clock.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from redis import Redis
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from devtools.cluster import Cluster, kill_session, runs_per_key
from devtools.processes import wait_for
from scheduler.cli.app import cli
from scheduler.clock import parse_iso_ms
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.records import text
from scheduler.store import Client

pytestmark = pytest.mark.integration

K = Keys()
HOUR_MS = 3_600_000
SKEW_S = 300.0
#: Longer than a heartbeat interval plus its grace (1 s + 2 s): the watchdog looks
#: several times while it runs.
RUN_S = 4.0


def rqbeat(redis_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, *args])
    return result.exit_code, result.output


def hourly(sid: str, target: str, *args: object) -> Schedule:
    return Schedule(id=sid, target=f"tests.jobs.{target}", args=args, every_ms=HOUR_MS)


def events(conn: Redis, sid: str) -> list[str]:
    return [e.event for e in Client(conn).history(sid, count=1000)]


def succeeded(conn: Redis, sid: str, n: int) -> Callable[[], bool]:
    return lambda: events(conn, sid).count("succeeded") >= n


def started(conn: Redis, tag: str, index: int = 0) -> str:
    first = wait_for(lambda: text(conn.lindex(f"test:{tag}:started", index)), 20, what=f"run #{index}")
    return str(first)


def overlaps(conn: Redis, tag: str) -> int:
    return int(conn.get(f"test:{tag}:overlaps") or 0)


def run_fires(conn: Redis, sid: str, fires: int) -> None:
    """Trigger ``fires`` fires one after the other, each after the previous one's ack."""
    client = Client(conn)
    for n in range(1, fires + 1):
        client.trigger(sid)
        wait_for(succeeded(conn, sid, n), 40, what=f"fire #{n} to succeed")


@pytest.mark.parametrize("offset_s", [-SKEW_S, SKEW_S], ids=["behind", "ahead"])
@pytest.mark.parametrize("kind", ["rqbeat", "plain"])
def test_skewed_workers_run_each_fire_once(cluster: Cluster, conn: Redis, offset_s: float, kind: str) -> None:
    cluster.replica("r1")
    cluster.wait_leader(conn)
    for name in ("w1", "w2"):  # two: a wrong retry would run beside the first run
        if kind == "rqbeat":
            cluster.worker(name, monitoring_interval=1, grace=2, clock_offset_s=offset_s)
        else:
            cluster.plain_rq_worker(name, clock_offset_s=offset_s)
    Client(conn).upsert(hourly("skew", "exclusive", RUN_S, "skew"))

    run_fires(conn, "skew", 2)

    assert events(conn, "skew") == ["triggered", "dispatched", "succeeded"] * 2
    runs = runs_per_key(conn, "skew")
    assert sorted(runs.values()) == [1, 1], runs
    assert overlaps(conn, "skew") == 0


@pytest.mark.parametrize(("worker_offset_s", "cleaner_offset_s"), [(-SKEW_S, 0.0), (0.0, SKEW_S)])
def test_rq_cleanup_by_another_clock_does_not_rerun(
    cluster: Cluster, conn: Redis, worker_offset_s: float, cleaner_offset_s: float
) -> None:
    """RQ's own registry clean-up (any worker's maintenance, on *its* clock) marks a
    run whose heartbeat looks expired ``failed`` while it still runs; rqbeat waits for
    the worker instead of retrying the fire."""
    cluster.replica("r1")
    cluster.wait_leader(conn)
    cluster.worker("w1", monitoring_interval=1, grace=2, clock_offset_s=worker_offset_s)
    cluster.worker("w2", monitoring_interval=1, grace=2, clock_offset_s=worker_offset_s)
    Client(conn).upsert(hourly("cleaned", "exclusive", RUN_S, "cleaned"))
    Client(conn).trigger("cleaned")
    job_id = started(conn, "cleaned")

    registry = StartedJobRegistry("default", connection=conn, serializer=JSONSerializer)
    registry.cleanup(timestamp=time.time() + cleaner_offset_s)
    assert text(conn.hget(f"rq:job:{job_id}", "status")) == "failed"  # RQ's verdict

    wait_for(succeeded(conn, "cleaned", 1), 40, what="the run to succeed")
    assert events(conn, "cleaned") == ["triggered", "dispatched", "succeeded"]
    assert list(runs_per_key(conn, "cleaned").values()) == [1]
    assert overlaps(conn, "cleaned") == 0


def test_dead_worker_with_a_clock_ahead_is_noticed(cluster: Cluster, conn: Redis) -> None:
    """Its heartbeats claim 5 minutes of life; Redis's clock says it is gone."""
    cluster.replica("r1")
    cluster.wait_leader(conn)
    ahead = cluster.worker("w1", monitoring_interval=1, grace=2, clock_offset_s=SKEW_S)
    Client(conn).upsert(hourly("dead", "slow", 3.0, "dead"))
    Client(conn).trigger("dead")
    job_1 = started(conn, "dead")
    kill_session(ahead)
    cluster.worker("w2", monitoring_interval=1, grace=2)

    # 1 s interval + 2 s grace, then the back-off: far inside the deadline, far from 300 s
    wait_for(succeeded(conn, "dead", 1), 40, what="the abandoned run to be retried")
    assert events(conn, "dead") == ["triggered", "dispatched", "failed", "dispatched", "succeeded"]
    failed = [e for e in Client(conn).history("dead", count=100) if e.event == "failed"]
    assert failed[0].fields["job_id"] == job_1
    assert "abandoned" in failed[0].fields["error"]
    fire_ms = parse_iso_ms(failed[0].fields["fire_at"])
    assert runs_per_key(conn, "dead") == {f"dead:{fire_ms}": 1}


def test_status_and_check_report_skewed_workers(cluster: Cluster, conn: Redis) -> None:
    cluster.replica("r1")
    cluster.wait_leader(conn)
    cluster.worker("fast", clock_offset_s=SKEW_S)
    cluster.worker("slow", clock_offset_s=-SKEW_S)
    cluster.worker("good")
    cluster.plain_rq_worker("plain")
    keys = [K.clock("fast"), K.clock("slow"), K.clock("good")]
    wait_for(lambda: conn.exists(*keys) == len(keys), 20, what="the workers' clock offsets")
    wait_for(lambda: conn.exists("rq:worker:plain"), 20, what="the plain worker to register")

    code, output = rqbeat(cluster.redis_url, "status", "--json")
    assert code == 0, output
    clocks = {w["name"]: w["clock_offset_s"] for w in json.loads(output)["workers"]}
    assert clocks.keys() == {"fast", "slow", "good", "plain"}
    assert SKEW_S - 1 < clocks["fast"] < SKEW_S + 1
    assert -SKEW_S - 1 < clocks["slow"] < -SKEW_S + 1
    assert abs(clocks["good"]) < 1
    assert clocks["plain"] is None  # a stock rq worker measures nothing

    code, output = rqbeat(cluster.redis_url, "status")
    assert code == 0, output
    assert re.search(r"^fast +\+(299\.9|300\.0)\d\ds", output, re.MULTILINE), output
    assert re.search(r"^plain +not measured", output, re.MULTILINE), output

    code, output = rqbeat(cluster.redis_url, "check")
    assert code == 1
    assert "worker fast's clock is 300.0s ahead of Redis (tolerance 2s)" in output
    assert "worker slow's clock is 300.0s behind Redis (tolerance 2s)" in output
    assert "worker good" not in output and "worker plain" not in output
    code, output = rqbeat(cluster.redis_url, "check", "--max-clock-offset", "10m")
    assert code == 0, output
    code, output = rqbeat(cluster.redis_url, "check", "--health-only")  # a replica's probe
    assert code == 0, output
