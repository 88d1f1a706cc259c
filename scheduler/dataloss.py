"""Noticing that Redis lost rqbeat's data, so that nobody mistakes it for an empty,
healthy namespace.

A Redis restarted without persistence, a failover to a replica that lagged, or a
FLUSHALL leaves the namespace empty (or older) while the replicas keep running: they
re-take the lease, find nothing due and report "0 schedules", all green. What they
still have is memory: each replica remembers the highest leader epoch and edit
revision it has seen. Both counters only ever grow, so a counter below what a
replica saw -- or an acquisition handing out an epoch not above it -- means writes
were lost. The replica then writes a marker (``<ns>:data_lost``, a hash with no
TTL), puts the counters back up to what it saw (so they keep growing) and logs at
ERROR; ``rqbeat check`` fails and ``rqbeat status`` says so until a person has
re-applied the schedule files and cleared it (``rqbeat check --repair``).

Cheap by design: the counters are read with the heartbeat a replica writes anyway
(every 15 s) and the epoch comes back from each lease acquisition; no loop is added.
What it cannot see: a loss while no replica was running (nobody remembers), and
writes lost without either counter going back (an ack or a dispatch, but no edit and
no election, lost in a failover: those fires run again, as the README says).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis import Redis

from scheduler import scripts
from scheduler.keys import Keys
from scheduler.protocol import LossReply
from scheduler.records import text

#: What to do about it, in every message that reports a loss.
ADVICE = "Redis lost rqbeat's data: re-apply your schedule files"

RECORD = """
-- Record a loss and raise the counters back to what the replica saw, so they keep
-- growing across the loss: lease tokens stay unique, and the other replicas, which saw
-- no more than that, do not report the same loss again once a person has cleared it.
-- KEYS[1] - the data-lost marker (hash)
-- KEYS[2] - the epoch counter
-- KEYS[3] - the revision counter
-- ARGV[1] - what went back
-- ARGV[2] - the replica that saw it
-- ARGV[3] - now, ISO
-- ARGV[4] - the highest epoch the replica has seen
-- ARGV[5] - the highest revision the replica has seen
-- returns (LossReply) 1 recorded, 0 a loss is recorded already (the first stays until
-- cleared)
local marker, epoch, revision = KEYS[1], KEYS[2], KEYS[3]
local what, node, now, seen_epoch, seen_revision = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
for key, seen in pairs({[epoch] = seen_epoch, [revision] = seen_revision}) do
  if tonumber(redis.call('GET', key) or '0') < tonumber(seen) then redis.call('SET', key, seen) end
end
if redis.call('EXISTS', marker) == 1 then return 0 end
redis.call('HSET', marker, 'what', what, 'node', node, 'detected_at', now)
return 1
"""


@dataclass(frozen=True, slots=True)
class Loss:
    """A recorded loss: what went back, which replica saw it, when (ISO)."""

    what: str
    node: str = ""
    detected_at: str = ""

    def line(self) -> str:
        """``data_lost: epoch went from 54 to 1 (Redis lost rqbeat's data: ...)``."""
        return f"data_lost: {self.what} ({ADVICE})"


def went_back(seen_epoch: int, seen_revision: int, epoch: int, revision: int) -> str | None:
    """What a replica that saw ``seen_*`` finds wrong with the counters now in Redis
    (0 = missing), or None. Pure."""
    if epoch < seen_epoch:
        return f"epoch went from {seen_epoch} to {epoch}"
    if revision < seen_revision:
        return f"revision went from {seen_revision} to {revision}"
    return None


def reissued(seen_epoch: int, acquired: int) -> str | None:
    """An acquisition must hand out an epoch above every one seen before; None if it did."""
    if acquired > seen_epoch:
        return None
    if acquired < seen_epoch:
        return f"epoch went from {seen_epoch} to {acquired}"
    return f"epoch {acquired} was issued twice (the increment that issued it first was lost)"


def assess(marker: Loss | None, epoch: int | None, seen_epochs: Mapping[str, int]) -> Loss | None:
    """The loss to report, from the marker, the epoch counter (None: missing) and the
    highest epoch each replica says it has seen; None when nothing says so. Pure."""
    if marker is not None:
        return marker
    for node, seen in sorted(seen_epochs.items()):
        if seen > (epoch or 0):
            return Loss(f"epoch went from {seen} to {epoch or 0}", node)
    if seen_epochs and epoch is None:
        return Loss("the epoch counter is gone while replicas are running")
    return None


def decode_marker(raw: Mapping[bytes | str, bytes | str]) -> Loss | None:
    """The marker from an HGETALL reply; None when there is none."""
    fields = {str(text(k)): str(text(v)) for k, v in raw.items()}
    if not fields:
        return None
    return Loss(fields.get("what", "?"), fields.get("node", ""), fields.get("detected_at", ""))


def record(conn: Redis, keys: Keys, what: str, *, node: str, now_iso: str, seen: tuple[int, int]) -> bool:
    """Write the marker unless one is there and raise the counters to ``seen`` (epoch,
    revision); True when this call wrote the marker."""
    script = scripts.register(conn, RECORD, scripts.Flags.WRITES)
    keys_ = [keys.data_lost, keys.epoch, keys.revision]
    return LossReply(scripts.run(script, keys_, [what, node, now_iso, *seen])) is LossReply.RECORDED


def clear(conn: Redis, keys: Keys) -> bool:
    """Remove the marker (a person re-applied the schedules); True if there was one."""
    return bool(conn.delete(keys.data_lost))
