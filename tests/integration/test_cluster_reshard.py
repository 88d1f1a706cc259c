"""A resharding of the namespace's slot while rqbeat runs on it: nothing lost, nothing doubled.

Two replicas and two ``rqbeat worker``s run every-second schedules (misfire ``all``)
on a three-primary cluster (:mod:`tests.clusterapp`). The slot of ``{rqbeat}`` is then
moved to another primary the way a resharding moves it (:class:`devtools.slotmove.
SlotMove`: ``SETSLOT IMPORTING``/``MIGRATING``, ``MIGRATE ... KEYS`` in batches,
``SETSLOT NODE``), and held half moved -- part of the keys on each node -- until the
replicas or workers have met it (a script answered ``ASK`` or ``TRYAGAIN``, which rqbeat
retries as a whole step). After the move every fire between the first and the last ran
exactly once (counted by idempotency key, in the jobs' own record), the processes
followed the slot to its new primary, and no key was written outside the slot.
On Redis and on Valkey; RQ 3 only (RQ 2.12 has no RQ_KEY_PREFIX: test_redis_cluster
checks its refusal).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from devtools.apps import write_app
from devtools.cluster import Cluster
from devtools.processes import Process, wait_for
from devtools.rediscluster import RedisCluster
from devtools.slotmove import SlotMove
from scheduler import scripts
from scheduler.clock import redis_now_ms
from scheduler.connection import client_options
from scheduler.keys import Keys
from scheduler.slotguard import guard_key
from scheduler.slotowner import SlotMigrating, SlotRedirect, slot_client
from scheduler.slots import parse_cluster_url
from tests.clusterapp import (
    NAMESPACE,
    REPORTS_PY,
    RQ3,
    SCHEDULES_TOML,
    SLOT,
    assert_each_fire_once,
    env_of,
    fires,
    keys_elsewhere,
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

FIRES_BEFORE = 3
FIRES_AFTER = 4
#: What rqbeat logs (replica or worker) when a step met the slot half moved.
MIGRATING = f"cluster slot {SLOT} is migrating"
#: Fires of each schedule that come due while the slot is held half moved.
HELD_FIRES = 2
#: Far longer than the test: the lease can neither expire nor need a renewal's luck.
LEASE = "120s"
K = Keys(NAMESPACE)


def total_runs(conn: Redis) -> int:
    return sum(len(runs) for runs in fires(conn).values())


@pytest.fixture
def source(owner: Redis) -> Redis:
    """The primary serving the slot before the move, flushed."""
    return owner


def test_no_fire_lost_or_doubled_across_a_resharding_of_the_namespaces_slot(
    redis_cluster: RedisCluster, source: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    app = write_app(tmp_path / "app", REPORTS_PY)
    (app / "schedules.toml").write_text(SCHEDULES_TOML)
    env = env_of(redis_cluster)
    applied = rqbeat(env, "apply", str(app / "schedules.toml"))
    assert applied.returncode == 0, applied.stderr
    beat = Cluster(redis_cluster.url, tmp_path, processes, namespace=NAMESPACE, env=env)
    for name in ("r1", "r2"):
        # A lease far longer than the test: only a takeover could change the epoch.
        beat.replica(name, lease=LEASE)
    for name in ("w1", "w2"):
        # rqbeat worker's default heartbeat timing (5 s + 10 s grace), not the tests'
        # short one: a run's heartbeats wait with everything else while the slot is
        # half moved, and a silence past the grace is an abandoned run, retried.
        beat.worker(name, "reports", monitoring_interval=5, grace=10, extra=["--path", str(app)])
    wait_runs(source, 0, FIRES_BEFORE, f"{FIRES_BEFORE} fires of each schedule")
    epoch = source.get(K.epoch)

    target = next(port for port in redis_cluster.primaries() if port != redis_cluster.owner(SLOT))
    move = SlotMove(redis_cluster, SLOT, target)
    move.begin()
    begun_ms = redis_now_ms(source)
    held_until_ms = begun_ms + HELD_FIRES * 1000
    move.migrate(max(1, len(move.keys_left()) // 2))
    # Held half moved until rqbeat met it and fires came due meanwhile (they wait).
    wait_for(
        lambda: any(MIGRATING in p.output() for p in processes) and redis_now_ms(source) > held_until_ms,
        timeout=30,
        interval=0.05,
        what="a replica or worker to meet the half-moved slot",
    )
    move.finish()

    after = redis_cluster.client(target)
    moved_ms = redis_now_ms(after)
    runs_at_move = total_runs(after)
    wait_for(lambda: total_runs(after) > runs_at_move, timeout=30, interval=0.01, what="a run after the move")
    resumed_ms = redis_now_ms(after) - moved_ms
    wait_runs(after, moved_ms, FIRES_AFTER, f"{FIRES_AFTER} fires after the resharding")
    # The figures the README quotes (shown with pytest -s).
    print(
        f"\nresharding of slot {SLOT}: {move.moved} keys moved, half moved for "
        f"{(moved_ms - begun_ms) / 1000:.1f} s, first run {resumed_ms} ms after SETSLOT NODE"
    )
    assert source.dbsize() == 0, "keys left behind on the old primary"
    assert_each_fire_once(after)
    logs = "".join(p.output() for p in processes)
    assert f"127.0.0.1:{move.source} no longer serves it" in logs, "the processes never followed the move"
    assert "no longer serves it (AskError" not in logs  # the source kept the slot until SETSLOT NODE
    assert "no longer serves it (TryAgainError" not in logs
    assert keys_elsewhere(redis_cluster) == []
    # The leader lived through the move: its lease connection's record names the old
    # node until it renews, and a standby must not read that as a dead leader.
    assert after.get(K.epoch) == epoch, "the lease changed hands across the move"
    assert not [p for p in processes if "taking over" in p.output()]
    after.close()


COUNTER = "{rqbeat}:test:counter"
#: A write of a declared key, then of a new key named inside the script (as dispatch
#: names the RQ job it creates): on a migrating slot without the guard, the INCR is
#: applied and the SET aborts the script ("non local key").
HALF_RUNNABLE = "redis.call('INCR', KEYS[1]) redis.call('SET', KEYS[1] .. ':new', 1) return 1"


def test_a_script_is_refused_whole_while_the_slot_migrates_never_run_half(
    redis_cluster: RedisCluster, source: Redis
) -> None:
    source.set(COUNTER, 0)
    client = slot_client(parse_cluster_url(redis_cluster.url), SLOT, client_options(), guard_key(NAMESPACE))
    script = scripts.register(client, HALF_RUNNABLE)
    target = next(port for port in redis_cluster.primaries() if port != redis_cluster.owner(SLOT))
    move = SlotMove(redis_cluster, SLOT, target)
    move.begin()  # MIGRATING, no key moved yet: the counter is still on the source
    try:
        with pytest.raises(SlotMigrating):
            scripts.run(script, [COUNTER], [])
        assert source.get(COUNTER) == b"0", "the script ran half"
    finally:
        move.finish()

    def ran() -> bool:
        try:
            return bool(scripts.run(script, [COUNTER], []))
        except SlotRedirect:  # the first try after the move meets its MOVED
            return False

    wait_for(ran, timeout=10, interval=0.05, what="the script to run on the new primary")
    assert redis_cluster.client(target).get(COUNTER) == b"1"
    client.close()
