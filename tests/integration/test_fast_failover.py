"""Fast failover: a standby takes over from a killed leader without waiting out the
lease, because the leader's lease connection is gone (scheduler.engine.takeover).

The lease here is far longer than any wait in these tests, so only the fast path can
hand over in time, and no wall-clock threshold decides a result: how soon it happens
is measured by ``python -m bench --only failover``. What is asserted is the contract
over 20 kills: no fire doubled, none lost (``misfire = "all"``: every fire runs), and
a leader that is alive but stopped is not deposed early.
"""

from __future__ import annotations

import signal

import pytest
from redis import Redis

from devtools.cluster import Cluster, kill_group, runs_per_key
from devtools.processes import wait_for
from scheduler import Client, Schedule
from scheduler.clock import redis_now_ms
from scheduler.model import Misfire
from tests.integration.test_failover import SID, K, Rig, audit, job_epochs, quiesce, run_fires, wait_runs

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # 20 kills of real processes, ~1-2 min

#: Far longer than the waits below: an expiry can never be what hands over.
LEASE = "120s"
KILLS = 20
#: A handover must happen well inside the lease; the bench measures how soon.
HANDOVER_TIMEOUT_S = 30


def start(cluster: Cluster, conn: Redis) -> Rig:
    rig = Rig(cluster, conn)
    for node in ("a", "b"):
        rig.replicas[node] = cluster.replica(node, lease=LEASE)
    rig.workers = [cluster.worker("w0")]
    wait_for(lambda: conn.scard("rq:workers") >= 1, timeout=20, what="an RQ worker")
    leader = cluster.wait_leader(conn, timeout=20)
    wait_standby(conn, rig.other(leader))
    Client(conn).upsert(
        Schedule(
            id=SID,
            target="tests.jobs.record",
            every_ms=1000,
            timezone="Europe/Berlin",
            misfire=Misfire.ALL,
            max_attempts=5,
        )
    )
    wait_runs(conn, 2)
    return rig


def wait_standby(conn: Redis, node: str) -> None:
    wait_for(lambda: conn.hget(K.node(node), "role") == b"standby", timeout=20, what=f"{node} on standby")


@pytest.mark.integration
@pytest.mark.timeout(900)  # 20 replica start-ups: minutes on a loaded 2-core machine
def test_twenty_kills_hand_over_before_the_lease_with_nothing_doubled_or_lost(
    cluster: Cluster, conn: Redis
) -> None:
    rig = start(cluster, conn)
    for i in range(KILLS):
        old = cluster.wait_leader(conn, timeout=HANDOVER_TIMEOUT_S)
        standby = rig.other(old)
        wait_standby(conn, standby)
        killed_ms = redis_now_ms(conn)
        kill_group(rig.replicas.pop(old))
        assert cluster.wait_leader(conn, timeout=HANDOVER_TIMEOUT_S, other_than=old) == standby
        assert "taking over" in rig.replicas[standby].output()
        wait_runs(conn, 1, after_ms=killed_ms)  # the new leader dispatches, a worker runs it
        rig.replicas[f"n{i}"] = cluster.replica(f"n{i}", lease=LEASE)
        wait_standby(conn, f"n{i}")
    quiesce(rig)
    # From the run counts per idempotency key (the history stream is capped): every
    # fire from the first to the last ran, each exactly once (misfire = all).
    counts = runs_per_key(conn)
    twice = {key: n for key, n in counts.items() if n != 1}
    assert not twice, f"fires that ran more than once: {twice}"
    fires = run_fires(conn)
    lost = sorted(set(range(fires[0], fires[-1] + 1, 1000)) - set(fires))
    assert not lost, f"fires that never ran: {lost}"
    assert len(set(job_epochs(conn).values())) == KILLS + 1  # each reign dispatched


@pytest.mark.integration
def test_a_stopped_leader_keeps_its_lease_until_it_expires(cluster: Cluster, conn: Redis) -> None:
    """SIGSTOP keeps the leader's connection open: its fires are overdue, the standby
    asks, and the lease stays with the stopped leader (fenced as before, by the TTL)."""
    rig = start(cluster, conn)
    old = cluster.wait_leader(conn, timeout=20)
    token = conn.get(K.leader)
    stopped = rig.replicas[old]
    stopped.signal(signal.SIGSTOP)
    try:
        stopped_ms = redis_now_ms(conn)
        wait_for(lambda: redis_now_ms(conn) > stopped_ms + 3000, timeout=10, what="three fires overdue")
        assert conn.get(K.leader) == token
        assert "taking over" not in rig.replicas[rig.other(old)].output()
    finally:
        stopped.signal(signal.SIGCONT)
    wait_runs(conn, 2, after_ms=redis_now_ms(conn))
    assert cluster.leader(conn) == old
    quiesce(rig)
    audit(conn)
