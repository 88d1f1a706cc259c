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
due score; the reads it plans with are taken after an event (an edit, an ack)
or at the planned time, never on a timer of their own.

The client check uses ``CLIENT TRACKING on REDIRECT <id>`` (refused when no client
has that id) then ``CLIENT TRACKING off``: both are in the ``@connection`` ACL
category, which the replica's ACL user has; ``CLIENT LIST`` is ``@admin``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
class Sighting:
    """What a standby last read: the lease, its connection, the first fire."""

    token: str | None  # the lease's value, None when nobody holds it
    client_id: int | None  # the lease connection's id, when recorded for this token
    due_ms: int | None  # the first due score, Redis time
    now_ms: int  # Redis time of the read
    read_at: float  # monotonic time of the read

    def check_at(self) -> float | None:
        """Monotonic time at which an undispatched first fire is overdue, or None
        when there is nothing to check (no holder, no record, nothing due)."""
        if self.token is None or self.client_id is None or self.due_ms is None:
            return None
        return self.read_at + (self.due_ms + GRACE_MS - self.now_ms) / 1000

    def overdue(self) -> bool:
        return self.due_ms is not None and self.due_ms + GRACE_MS <= self.now_ms


def parse_record(record: str | None, token: str | None) -> int | None:
    """The client id in ``<token> <client id>`` when the record is for ``token``."""
    if record is None or token is None:
        return None
    owner, _, client_id = record.rpartition(" ")
    if owner != token or not client_id.isdigit() or int(client_id) == 0:  # 0: not recorded
        return None
    return int(client_id)


class Takeover:
    """A standby's watch on the leader's lease connection. Not thread-safe."""

    def __init__(self, conn: Redis, keys: Keys, clock: Clock) -> None:
        self.conn = conn
        self.keys = keys
        self.clock = clock
        self._seen: Sighting | None = None
        self._asked: tuple[str | None, int | None] | None = None  # (token, due) asked about
        self._take_over = scripts.register(conn, TAKE_OVER, scripts.Flags.ALLOW_OOM)

    def forget(self) -> None:
        """Something changed (an event arrived, a role changed): read again."""
        self._seen = None

    def wait_s(self) -> float | None:
        """Seconds until a check is due (0: now), None when there is none to plan."""
        if self._seen is None:
            self._seen = self._read()
        seen = self._seen
        at = seen.check_at()
        if at is None or (seen.token, seen.due_ms) == self._asked:
            return None
        return max(0.0, at - self.clock.monotonic())

    def dead_leader(self) -> str | None:
        """At a planned check: the token of a leader whose fire is overdue and whose
        lease connection no longer exists, else None. Asks once per (token, fire)."""
        seen = self._seen = self._read()
        if seen.token is None or seen.client_id is None or not seen.overdue():
            return None
        self._asked = (seen.token, seen.due_ms)
        if self._client_exists(seen.client_id):
            log.info(
                "leader late token=%s fire_due_ms=%d late_ms=%d (its connection is open: waiting)",
                seen.token, seen.due_ms, seen.now_ms - (seen.due_ms or 0),
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
            client_id=parse_record(text(record), token),
            due_ms=round(first[0][1] * 1000) if first else None,
            now_ms=time_reply_ms(time_reply),
            read_at=self.clock.monotonic(),
        )

    def _client_exists(self, client_id: int) -> bool:
        """Whether Redis has a client with this id; True when it cannot tell (an
        older Redis, an ACL without CLIENT TRACKING): then the TTL decides, as before."""
        pipe = self.conn.pipeline(transaction=False)
        pipe.execute_command("CLIENT", "TRACKING", "on", "REDIRECT", client_id)  # type: ignore[no-untyped-call]
        pipe.execute_command("CLIENT", "TRACKING", "off")  # type: ignore[no-untyped-call]
        tracking_on, _ = pipe.execute(raise_on_error=False)
        if isinstance(tracking_on, redis.exceptions.ResponseError):
            if _NO_SUCH_CLIENT in str(tracking_on):
                return False
            log.warning("cannot check the leader's connection client_id=%d error=%s", client_id, tracking_on)
        return True
