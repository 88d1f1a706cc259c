"""Fast failover on a Redis Cluster URL: a standby takes over from a killed leader
without waiting out the lease, as on a single primary (scheduler.engine.takeover).

Two ``rqbeat run`` replicas with a 120 s lease and a ``rqbeat worker`` run every-second
schedules (misfire ``all``) on a three-primary cluster (:mod:`tests.clusterapp`). The
leader is killed (kill -9) a few times; the lease is far longer than the test's waits,
so only the fast path can hand over in time. Asserted: each standby takes over, and
every fire from the first to the last ran exactly once (counted by idempotency key in
the jobs' own record). How soon, in Redis time, is printed (``pytest -s``) for the
README: from the kill to the new lease, and from the first fire the dead leader
missed to the new lease. RQ 3 only, on Redis and on Valkey.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from redis import Redis

from devtools.apps import write_app
from devtools.cluster import Cluster, kill_group
from devtools.processes import Process, wait_for
from devtools.rediscluster import RedisCluster
from scheduler.clock import redis_now_ms
from scheduler.keys import Keys
from tests.clusterapp import (
    NAMESPACE,
    REPORTS_PY,
    RQ3,
    SCHEDULES_TOML,
    assert_each_fire_once,
    env_of,
    rqbeat,
    wait_runs,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not RQ3, reason="a Redis Cluster needs RQ 3's RQ_KEY_PREFIX (RQ 2.12 is refused at start)"
    ),
]

#: Far longer than any wait below: an expiry can never be what hands over.
LEASE = "120s"
KILLS = 3
#: A handover must happen well inside the lease.
HANDOVER_TIMEOUT_S = 30
K = Keys(NAMESPACE)


def wait_standby(conn: Redis, node: str) -> None:
    wait_for(lambda: conn.hget(K.node(node), "role") == b"standby", timeout=60, what=f"{node} on standby")


def other(replicas: dict[str, Process], leader: str) -> str:
    return next(name for name in replicas if name != leader)


def test_a_killed_leader_is_replaced_before_its_lease_ends_nothing_doubled_or_lost(
    redis_cluster: RedisCluster, owner: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    app = write_app(tmp_path / "app", REPORTS_PY)
    (app / "schedules.toml").write_text(SCHEDULES_TOML)
    env = env_of(redis_cluster)
    applied = rqbeat(env, "apply", str(app / "schedules.toml"))
    assert applied.returncode == 0, applied.stderr
    beat = Cluster(redis_cluster.url, tmp_path, processes, namespace=NAMESPACE, env=env)
    replicas = {name: beat.replica(name, lease=LEASE) for name in ("a", "b")}
    beat.worker("w1", "reports", extra=["--path", str(app)])
    wait_runs(owner, 0, 2, "2 fires of each schedule")

    after_kill_ms, after_fire_ms = [], []
    for i in range(KILLS):
        old = beat.wait_leader(owner, timeout=HANDOVER_TIMEOUT_S)
        standby = other(replicas, old)
        wait_standby(owner, standby)
        killed_ms = redis_now_ms(owner)
        kill_group(replicas.pop(old))
        assert beat.wait_leader(owner, timeout=HANDOVER_TIMEOUT_S, other_than=old) == standby
        taken_ms = redis_now_ms(owner)
        assert "taking over" in replicas[standby].output()
        after_kill_ms.append(taken_ms - killed_ms)
        after_fire_ms.append(taken_ms - (killed_ms // 1000 + 1) * 1000)  # the first fire missed
        wait_runs(owner, killed_ms, 1, "a fire run after the kill")  # the new leader dispatches
        replicas[f"n{i}"] = beat.replica(f"n{i}", lease=LEASE)
        wait_standby(owner, f"n{i}")
    wait_runs(owner, redis_now_ms(owner), 2, "2 more fires of each schedule")
    print(
        f"\ncluster takeover over {KILLS} kills (ms, Redis time): after the kill "
        f"{after_kill_ms} median {statistics.median(after_kill_ms)}; after the first missed "
        f"fire {after_fire_ms} median {statistics.median(after_fire_ms)}"
    )
    assert_each_fire_once(owner)
