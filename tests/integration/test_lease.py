"""The lease against a real Redis, with a fake clock for the local deadline."""

from __future__ import annotations

import pytest
import redis.exceptions
from redis import Redis

from scheduler.connection import connect
from scheduler.engine.dispatch import Dispatcher
from scheduler.engine.lease import Lease
from scheduler.errors import LeadershipLost
from scheduler.keys import Keys
from scheduler.records import text
from tests.fakeclock import FakeClock

pytestmark = pytest.mark.integration


def make(conn: Redis, node: str, clock: FakeClock, ttl_ms: int = 5_000) -> Lease:
    return Lease(conn, Keys(), node, ttl_ms, clock)


def test_one_holder_and_epochs_increase(conn: Redis) -> None:
    clock = FakeClock()
    a, b = make(conn, "a", clock), make(conn, "b", clock)
    assert a.try_acquire()
    assert not b.try_acquire()
    assert conn.get("rqbeat:leader") == b"1:a"
    assert a.release()
    assert b.try_acquire()
    assert b.epoch == 2
    assert conn.get("rqbeat:leader") == b"2:b"


def test_local_deadline_passes_without_asking_redis(conn: Redis) -> None:
    clock = FakeClock()
    lease = make(conn, "a", clock, ttl_ms=3_000)
    assert lease.try_acquire()
    assert lease.held
    clock.sleep(2.999)
    assert lease.held
    clock.sleep(0.002)
    assert not lease.held  # even though the key may still exist in Redis


def test_renew_refused_once_another_replica_holds_it(conn: Redis) -> None:
    clock = FakeClock()
    a = make(conn, "a", clock)
    assert a.try_acquire()
    conn.delete("rqbeat:leader")  # as if it expired while A was paused
    b = make(conn, "b", clock)
    assert b.try_acquire()
    assert not a.renew()
    assert not a.held
    assert conn.get("rqbeat:leader") == b"2:b"  # A did not change or delete B's lease
    assert not a.release()
    assert conn.get("rqbeat:leader") == b"2:b"


def test_renew_extends_the_deadline(conn: Redis) -> None:
    clock = FakeClock()
    lease = make(conn, "a", clock, ttl_ms=3_000)
    assert lease.try_acquire()
    clock.sleep(2.0)
    assert lease.renew()
    clock.sleep(2.0)
    assert lease.held
    assert int(conn.pttl("rqbeat:leader")) > 2_000


def test_release_wakes_standbys(conn: Redis) -> None:
    pubsub = conn.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe("rqbeat:events")
    assert pubsub.get_message(timeout=1.0) is not None  # the subscribe confirmation
    lease = make(conn, "a", FakeClock())
    assert lease.try_acquire()
    assert lease.release()
    message = pubsub.get_message(timeout=1.0)
    assert message is not None and message["data"] == b"released"
    pubsub.close()


def test_a_deposed_leader_cannot_dispatch(conn: Redis) -> None:
    """Fencing: the token check and the write are one transaction."""
    clock = FakeClock()
    a = make(conn, "a", clock)
    assert a.try_acquire()
    token = a.token
    assert token is not None
    conn.delete("rqbeat:leader")
    assert make(conn, "b", clock).try_acquire()
    with pytest.raises(LeadershipLost):
        Dispatcher(conn, Keys()).dispatch(10**13, token, a.epoch)


def test_the_lease_connection_is_recorded_and_recorded_again_after_a_reconnect(redis_url: str) -> None:
    conn = connect(redis_url)  # as a replica's: no command retries
    clock = FakeClock()
    lease = make(conn, "a", clock)
    assert lease.try_acquire()
    token, client_id, node = str(text(conn.get("rqbeat:leader:conn"))).rsplit(" ", 2)
    assert token == "1:a"
    assert node == conn.info("server")["run_id"]  # the server that gave the id
    assert conn.client_kill_filter(_id=client_id) == 1  # as a dropped connection would
    with pytest.raises(redis.exceptions.ConnectionError):
        lease.renew()  # the service's loop runs the pass again
    assert lease.renew()  # on a new connection, whose id is recorded
    token, new_id, _ = str(text(conn.get("rqbeat:leader:conn"))).rsplit(" ", 2)
    assert token == "1:a" and new_id != client_id
    assert lease.release()
    assert conn.get("rqbeat:leader:conn") is None
    conn.close()
