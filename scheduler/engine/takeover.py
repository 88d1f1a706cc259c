"""Taking over at once from a leader whose process is gone (kill -9, crash, host down).

The lease's TTL is how a standby learns that a leader stopped renewing; on its own it
makes every crash cost up to a TTL of fires. Redis knows sooner: when a process dies,
its sockets close and Redis drops its clients. The leader records the client id of
its lease connection (:mod:`scheduler.engine.lease`), and a standby asks about it at
the one moment it matters, when a fire is overdue::

    t=0.000  the standby reads the first due score (T), the lease token and the
             lease connection's client id; it sleeps until T + GRACE_MS
    t=T-0.02 the leader is killed; Redis closes its connections
    t=T+0.1  the standby wakes: the fire at T is still in `due`, the lease still holds
             the same token, and `CLIENT TRACKING on REDIRECT <id>` answers that the
             client does not exist: the leader's process is gone.
             TAKE_OVER deletes the lease *only if it still holds that token*, and the
             standby acquires it (epoch + 1) and dispatches the fire.

Nothing here weakens fencing: a leader that is alive (stopped, partitioned, slow)
keeps its connection, so it is waited out by the TTL as before; and a lease deleted
while its holder is alive (the lease connection was remade and not yet recorded
again) only makes that holder's next renewal or dispatch fail, as with an expiry.
Asking costs nothing at idle: a standby asks only when a fire is overdue, once per
due score, and again each RECHECK_S while a leader found alive stays late with it
(it may die before it sends the fire, and a dead leader sends no event); the reads
it plans with are taken after an event (an edit, an ack) or at the planned time,
never on a timer of their own.

The client check uses ``CLIENT TRACKING on REDIRECT <id>`` (refused when no client
has that id) then ``CLIENT TRACKING off``: both are in the ``@connection`` ACL
category, which the replica's ACL user has; ``CLIENT LIST`` is ``@admin``.

A client id means something only on the server that gave it: ids are counted per
server process. So the record names that server too (``INFO server``'s ``run_id``,
one per process, so one per node of a Redis Cluster), and the standby asks, in the
same round trip, which server it is talking to. It judges only an id recorded on
that server (:func:`judge`); otherwise it waits, as without the record::

    t=0    the namespace's slot moves to another primary (a resharding, a cluster
           failover); the record moves with it and still names the old node
    t=0.1  a fire is overdue (the leader's steps met the move and are retried); the
           standby asks the new node: the run ids differ, so "no such client" would
           mean nothing -- the standby waits, and the live leader is not deposed
    t<ttl/3  the leader's next renewal meets MOVED, reconnects its lease connection
           to the new node and records the new id and run id: the fast path is back

The same holds after a restart of a single server (a new run id, ids from 1 again).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis.exceptions
from redis import Redis

from scheduler import scripts
from scheduler.clock import Clock, time_reply_ms
from scheduler.keys import Keys
from scheduler.protocol import LeaseReply
from scheduler.records import text

log = logging.getLogger(__name__)

#: A fire this late (ms past its due score, Redis time) makes a standby ask whether
#: the leader's process is alive. A live leader sends a fire within milliseconds.
GRACE_MS = 100
#: After a leader was found alive (or unknown) with a fire overdue, ask again this
#: much later if that fire is still overdue: a leader alive when asked may die
#: before it sends the fire, and no event comes from a leader that is gone.
RECHECK_S = 1.0
_NO_SUCH_CLIENT = "does not exist"

TAKE_OVER = """
-- KEYS[1] - the leader lease
-- KEYS[2] - the lease connection's record (Keys.leader_conn)
-- ARGV[1] - the token of the leader whose lease connection is gone
-- returns (LeaseReply) 1 deleted, 0 the lease no longer holds that token (renewed
-- by a reconnected leader, expired, or taken by another standby): nothing written
local leader, record = KEYS[1], KEYS[2]
if redis.call('GET', leader) == ARGV[1] then
  redis.call('DEL', leader, record)
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class LeaseConnection:
    """The leader's lease connection, as recorded: its client id and the server
    (``run_id``) that gave it. ``client_id`` 0: a client without one lease connection."""

    client_id: int
    node: str

    def encode(self) -> str:
        """What follows the token in the record (``<client id> <run id>``)."""
        return f"{self.client_id} {self.node}"


#: What a client without a dedicated lease connection (Sentinel) records: no fast takeover.
NO_LEASE_CONNECTION = LeaseConnection(0, "-")


class Verdict(Enum):
    """What a standby learnt about the leader's lease connection."""

    ALIVE = "alive"  # the server it lives on still has it
    GONE = "gone"  # the server it lives on has no such client: the process is gone
    UNKNOWN = "unknown"  # cannot tell (another server, an error): the TTL decides


@dataclass(frozen=True, slots=True)
class Sighting:
    """What a standby last read: the lease, its connection, the first fire."""

    token: str | None  # the lease's value, None when nobody holds it
    conn: LeaseConnection | None  # the lease connection, when recorded for this token
    due_ms: int | None  # the first due score, Redis time
    now_ms: int  # Redis time of the read
    read_at: float  # monotonic time of the read

    def check_at(self) -> float | None:
        """Monotonic time at which an undispatched first fire is overdue, or None
        when there is nothing to check (no holder, no record, nothing due)."""
        if self.token is None or self.conn is None or self.due_ms is None:
            return None
        return self.read_at + (self.due_ms + GRACE_MS - self.now_ms) / 1000

    def overdue(self) -> bool:
        return self.due_ms is not None and self.due_ms + GRACE_MS <= self.now_ms


def parse_record(record: str | None, token: str | None) -> LeaseConnection | None:
    """The lease connection in ``<token> <client id> <run id>`` when the record is for
    ``token``; None for another token, a malformed record, or client id 0."""
    if record is None or token is None:
        return None
    parts = record.rsplit(" ", 2)  # the token's node name may hold spaces, the rest not
    if len(parts) != 3:
        return None
    owner, client_id, node = parts
    if owner != token or not client_id.isdigit() or int(client_id) == 0:  # 0: not recorded
        return None
    return LeaseConnection(int(client_id), node)


def node_of(info: object) -> str | None:
    """The server's ``run_id`` in a parsed ``INFO server`` reply; None when absent
    (an error reply: an ACL without INFO)."""
    run_id = info.get("run_id") if isinstance(info, Mapping) else None
    return str(run_id) if run_id else None


def judge(recorded: LeaseConnection, node: str | None, tracking_error: str | None) -> Verdict:
    """Whether the leader's lease connection is alive, from the server a standby asked
    (``node``, its run id) and the error ``CLIENT TRACKING on REDIRECT <id>`` gave
    there (None: accepted, so the client exists). An id recorded on another server
    (the slot moved, the server restarted) says nothing about this one's clients."""
    if node is None or node != recorded.node:
        return Verdict.UNKNOWN
    if tracking_error is None:
        return Verdict.ALIVE
    return Verdict.GONE if _NO_SUCH_CLIENT in tracking_error else Verdict.UNKNOWN


@dataclass(frozen=True, slots=True)
class Asked:
    """The lease and the fire a standby last asked about, and when (monotonic)."""

    token: str | None
    due_ms: int | None
    at: float


def next_check_at(seen: Sighting, asked: Asked | None) -> float | None:
    """Monotonic time of the next check: when the first fire is overdue; for a fire
    already asked about (the leader was alive), :data:`RECHECK_S` after that ask
    (a fire sent meanwhile shows as another first fire at the next read)."""
    at = seen.check_at()
    if at is None:
        return None
    if asked is not None and (asked.token, asked.due_ms) == (seen.token, seen.due_ms):
        return asked.at + RECHECK_S
    return at


class Takeover:
    """A standby's watch on the leader's lease connection. Not thread-safe."""

    def __init__(self, conn: Redis, keys: Keys, clock: Clock) -> None:
        self.conn = conn
        self.keys = keys
        self.clock = clock
        self._seen: Sighting | None = None
        self._asked: Asked | None = None  # the last (token, fire) asked about, and when
        self._take_over = scripts.register(conn, TAKE_OVER, scripts.Flags.ALLOW_OOM)

    def forget(self) -> None:
        """Something changed (an event arrived, a role changed): read again."""
        self._seen = None

    def lease_held(self) -> None:
        """Another replica holds the lease now. A sighting that found no holder was read
        before it acquired (replicas starting together): read again, or no check would
        be planned until an event, and a dead leader sends none."""
        if self._seen is not None and self._seen.token is None:
            self._seen = None

    def wait_s(self) -> float | None:
        """Seconds until a check is due (0: now), None when there is none to plan."""
        if self._seen is None:
            self._seen = self._read()
        at = next_check_at(self._seen, self._asked)
        return None if at is None else max(0.0, at - self.clock.monotonic())

    def dead_leader(self) -> str | None:
        """At a planned check: the token of a leader whose fire is overdue and whose
        lease connection no longer exists, else None. Asks once per (token, fire), then
        every :data:`RECHECK_S` while that fire stays overdue."""
        seen = self._seen = self._read()
        if seen.token is None or seen.conn is None or not seen.overdue():
            return None
        self._asked = Asked(seen.token, seen.due_ms, self.clock.monotonic())
        verdict = self._ask(seen.conn)
        if verdict is not Verdict.GONE:
            log.info(
                "leader late token=%s fire_due_ms=%d late_ms=%d (its connection: %s; waiting)",
                seen.token, seen.due_ms, seen.now_ms - (seen.due_ms or 0), verdict.value,
            )  # fmt: skip
            return None
        return seen.token

    def depose(self, token: str) -> bool:
        """Delete the lease if it still holds ``token`` (compare-and-delete)."""
        self._seen = None
        reply = scripts.run(self._take_over, [self.keys.leader, self.keys.leader_conn], [token])
        return LeaseReply(reply) is LeaseReply.OURS

    def _read(self) -> Sighting:
        pipe = self.conn.pipeline(transaction=False)
        pipe.time()
        pipe.get(self.keys.leader)
        pipe.get(self.keys.leader_conn)
        pipe.zrange(self.keys.due, 0, 0, withscores=True)
        time_reply, lease, record, first = pipe.execute()
        token = text(lease)
        return Sighting(
            token=token,
            conn=parse_record(text(record), token),
            due_ms=round(first[0][1] * 1000) if first else None,
            now_ms=time_reply_ms(time_reply),
            read_at=self.clock.monotonic(),
        )

    def _ask(self, recorded: LeaseConnection) -> Verdict:
        """Ask the server this standby talks to (one connection, one round trip) which
        server it is and whether it has the recorded client; see :func:`judge`. An
        older Redis or an ACL without CLIENT TRACKING gives UNKNOWN: the TTL decides."""
        pipe = self.conn.pipeline(transaction=False)
        pipe.info("server")
        pipe.execute_command("CLIENT", "TRACKING", "on", "REDIRECT", recorded.client_id)  # type: ignore[no-untyped-call]
        pipe.execute_command("CLIENT", "TRACKING", "off")  # type: ignore[no-untyped-call]
        info, tracking_on, _ = pipe.execute(raise_on_error=False)
        error = _error_text(tracking_on)
        verdict = judge(recorded, node_of(info), error)
        if verdict is Verdict.UNKNOWN and error is not None and _NO_SUCH_CLIENT not in error:
            log.warning(
                "cannot check the leader's connection client_id=%d error=%s", recorded.client_id, error
            )
        return verdict


def _error_text(reply: Any) -> str | None:
    return str(reply) if isinstance(reply, redis.exceptions.ResponseError) else None
