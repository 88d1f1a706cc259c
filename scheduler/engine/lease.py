"""Leader lease with fencing.

The lease is one key, ``<ns>:leader = "<epoch>:<node>"`` with a PX TTL; the epoch
comes from ``INCR <ns>:epoch`` on every acquisition, so each reign has a unique,
increasing token. Release compares the token first (never deletes another
replica's lease). Renewal is one ``GETEX <lease> PX <ttl>``: it extends the key and
returns its value, and the replica keeps leading only if that value is its token.
The one command it saves on every renewal (a third of the idle Redis traffic) costs
this, and only when the lease already changed hands::

    t=0    A's lease expires while A is stopped; B acquires (epoch + 1)
    t=1    A resumes and renews: GETEX extends *B's* lease by one TTL and returns
           B's token, so A steps down at once and renews no more

B is alive (it just acquired), so that extension is what B's own renewal would do; and
fencing never depended on the TTL (every dispatch checks the token). The value of the
lease is never changed by a renewal.

Why a local deadline as well as the TTL -- a timeline::

    t=0    A acquires (ttl 5 s); A's deadline = t0 + 5 s (t0 taken *before* the call)
    t=1    A is paused (GC, SIGSTOP, partition)
    t=5    the key expires in Redis; B acquires, epoch + 1
    t=7    A resumes. A's monotonic deadline passed at t=5: A knows it is not the
           leader without asking Redis, and stops before dispatching anything.

The deadline alone is not enough (A could pass its check and then pause before
EXEC), so dispatch also WATCHes the lease key: the check and the write are one
transaction, and a deposed leader's EXEC fails.

The lease scripts run on one dedicated connection (the *lease connection*), whose
Redis client id the leader records next to the lease (``Keys.leader_conn``, with the
run id of the server that gave it, again after a reconnect). That connection lives
exactly as long as the leader's process: a standby that finds it gone may delete
the lease at once instead of waiting out the TTL (:mod:`scheduler.engine.takeover`).
A leader that is alive but stopped or cut off keeps its connection open, so it is
still waited out and fenced.
"""

from __future__ import annotations

import logging

import redis.exceptions
from redis import Redis
from redis.sentinel import SentinelConnectionPool

from scheduler import scripts
from scheduler.clock import Clock
from scheduler.engine.takeover import NO_LEASE_CONNECTION, LeaseConnection, node_of
from scheduler.keys import Keys
from scheduler.protocol import AcquireReply, LeaseReply
from scheduler.records import text

log = logging.getLogger(__name__)

# PTTL's replies for a key that does not exist and for one without a TTL.
_PTTL_NO_KEY, _PTTL_NO_EXPIRY = -2, -1

ACQUIRE = """
-- KEYS[1] - the leader lease
-- KEYS[2] - the epoch counter
-- KEYS[3] - the lease connection's record (Keys.leader_conn)
-- ARGV[1] - this replica's node name
-- ARGV[2] - ttl, ms
-- ARGV[3] - the connection running this script: '<client id> <server run id>'
--           (takeover.LeaseConnection)
-- returns the new epoch, or 0 (AcquireReply.HELD) when the lease is held (by anyone)
local leader, epochs, record = KEYS[1], KEYS[2], KEYS[3]
local node, ttl_ms, connection = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', leader) == 1 then return 0 end
local epoch = redis.call('INCR', epochs)
local token = epoch .. ':' .. node
redis.call('SET', leader, token, 'PX', ttl_ms)
redis.call('SET', record, token .. ' ' .. connection)
return epoch
"""

RENEW = """
-- Renewal on a new lease connection (after a reconnect): extend and record it.
-- KEYS[1] - the leader lease
-- KEYS[2] - the lease connection's record (Keys.leader_conn)
-- ARGV[1] - our token '<epoch>:<node>'
-- ARGV[2] - ttl, ms
-- ARGV[3] - the lease connection: '<client id> <server run id>' (takeover.LeaseConnection)
-- returns (LeaseReply) 1 extended, 0 the lease is not ours (expired, or another
-- replica's)
local leader, record = KEYS[1], KEYS[2]
local token, ttl_ms, connection = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', leader) == token then
  redis.call('PEXPIRE', leader, ttl_ms)
  redis.call('SET', record, token .. ' ' .. connection)
  return 1
end
return 0
"""

RELEASE = """
-- KEYS[1] - the leader lease
-- KEYS[2] - the events channel
-- KEYS[3] - the lease connection's record (Keys.leader_conn)
-- ARGV[1] - our token '<epoch>:<node>'
-- returns (LeaseReply) 1 released (and standbys woken), 0 it was not ours
local leader, events, record = KEYS[1], KEYS[2], KEYS[3]
local token = ARGV[1]
if redis.call('GET', leader) == token then
  redis.call('DEL', leader, record)
  redis.call('PUBLISH', events, 'released')
  return 1
end
return 0
"""


class Lease:
    """This replica's view of the lease. Not thread-safe; one per replica."""

    def __init__(self, conn: Redis, keys: Keys, node: str, ttl_ms: int, clock: Clock) -> None:
        self.conn = conn
        self.keys = keys
        self.node = node
        self.ttl_ms = ttl_ms
        self.clock = clock
        self.epoch = 0
        self.token: str | None = None
        self._deadline = 0.0
        self._renewed_at = 0.0
        # Made on first use (a replica starts before Redis is reachable); what it is
        # (client id, server) is None until read, and again after each reconnect (the
        # record is then stale); _connects counts the reconnects.
        self._lease_conn: Redis | None = None
        self._conn_ref: LeaseConnection | None = None
        self._connects = 0
        # A few bytes of fixed size, never growing: leadership must not lapse while
        # Redis is full, or nothing resumes dispatch the moment memory is freed.
        self._acquire = scripts.register(conn, ACQUIRE, scripts.Flags.ALLOW_OOM)
        self._renew = scripts.register(conn, RENEW, scripts.Flags.ALLOW_OOM)
        self._release = scripts.register(conn, RELEASE, scripts.Flags.ALLOW_OOM)

    @property
    def held(self) -> bool:
        """True while we hold the lease by our own clock (no Redis round trip)."""
        return self.token is not None and self.clock.monotonic() < self._deadline

    @property
    def renew_at(self) -> float:
        """Monotonic time of the next renewal (a third of the TTL after the last)."""
        return self._renewed_at + self.ttl_ms / 3000

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        started = self.clock.monotonic()
        client, conn_ref = self._connection()
        epoch = int(
            scripts.run(
                self._acquire,
                [self.keys.leader, self.keys.epoch, self.keys.leader_conn],
                [self.node, self.ttl_ms, conn_ref.encode()],
                client,
            )
        )
        if epoch == AcquireReply.HELD:
            return False
        self.epoch = epoch
        self.token = f"{epoch}:{self.node}"
        self._extend_from(started)
        return True

    def renew(self) -> bool:
        """Extend the lease; on failure the lease is dropped locally at once. One
        GETEX, or the RENEW script when the lease connection is new (records its id)."""
        if self.token is None:
            return False
        started = self.clock.monotonic()
        for _ in range(2):  # again only when the connection was remade during the call
            if self._conn_ref is None:
                client, conn_ref = self._connection()
                keys = [self.keys.leader, self.keys.leader_conn]
                reply = scripts.run(self._renew, keys, [self.token, self.ttl_ms, conn_ref.encode()], client)
                ours = LeaseReply(reply) is LeaseReply.OURS
            else:
                client, _ = self._connection()
                ours = text(client.getex(self.keys.leader, px=self.ttl_ms)) == self.token
            if not ours:
                self.drop()
                return False
            if self._conn_ref is not None:
                break
        self._extend_from(started)
        return True

    def release(self) -> bool:
        """Give the lease up (shutdown) and wake the standbys."""
        token, self.token = self.token, None
        if token is None:
            return False
        reply = LeaseReply(
            scripts.run(
                self._release,
                [self.keys.leader, self.keys.events, self.keys.leader_conn],
                [token],
                self._lease_conn,
            )
        )
        return reply is LeaseReply.OURS

    def close(self) -> None:
        """Close the lease connection (after :meth:`release`)."""
        if self._lease_conn is not None:
            self._lease_conn.close()
            self._lease_conn, self._conn_ref = None, None

    def drop(self) -> None:
        """Forget the lease locally (renew failed, deadline passed, fenced out)."""
        self.token = None
        self._deadline = 0.0

    def remaining_ms(self) -> int | None:
        """Milliseconds until the current holder's lease expires; None when nobody
        holds it. A lease key without a TTL (set by hand) counts as a full TTL."""
        pttl = int(self.conn.pttl(self.keys.leader))
        if pttl == _PTTL_NO_KEY:
            return None
        return self.ttl_ms if pttl == _PTTL_NO_EXPIRY else pttl

    def _connection(self) -> tuple[Redis, LeaseConnection]:
        """The lease connection and what it is (client id, server run id), read again
        after a reconnect. A Sentinel-managed client records client id 0: no fast
        takeover, the TTL decides. On a Redis Cluster URL the connection follows the
        slot's primary (:mod:`scheduler.slotowner`); the run id says which node gave
        the id, so a standby on another node never misreads it (:mod:`.takeover`)."""
        if not isinstance(self.conn, Redis) or isinstance(self.conn.connection_pool, SentinelConnectionPool):
            # A held Sentinel-managed connection kept talking to the demoted master
            # after a failover (test_sentinel): the lease's TTL decides.
            return self.conn, NO_LEASE_CONNECTION
        if self._lease_conn is None:
            self._lease_conn = self.conn.client()  # type: ignore[no-untyped-call]
            connection = self._lease_conn.connection
            assert connection is not None  # a single-connection client holds one
            connection.register_connect_callback(self._reconnected)
        if self._conn_ref is not None:
            return self._lease_conn, self._conn_ref
        # Two commands on the one connection (a pipeline would take another from the
        # pool); a reconnect between them would pair one server's id with another's
        # run id, so such a reading is used once and read again at the next renewal.
        connects = self._connects
        conn_ref = LeaseConnection(int(self._lease_conn.client_id()), self._server_run_id())
        if self._connects == connects:
            self._conn_ref = conn_ref
        return self._lease_conn, conn_ref

    def _server_run_id(self) -> str:
        """The lease connection's server's run id; "-" when INFO is refused (an ACL
        without it), which no standby's server matches: the TTL decides."""
        assert self._lease_conn is not None
        try:
            info = self._lease_conn.info("server")
        except redis.exceptions.ResponseError as exc:
            log.warning("cannot read the server's run id (no fast takeover): %s", exc)
            return NO_LEASE_CONNECTION.node
        return node_of(info) or NO_LEASE_CONNECTION.node

    def _reconnected(self, _connection: object) -> None:
        # Runs inside redis-py's connect: only note it; the next lease call republishes.
        self._conn_ref = None
        self._connects += 1

    def _extend_from(self, started: float) -> None:
        # The TTL started no earlier than our request left; count from then.
        self._renewed_at = started
        self._deadline = started + self.ttl_ms / 1000
