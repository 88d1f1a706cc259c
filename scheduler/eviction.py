"""Does the server's ``maxmemory-policy`` allow it to evict rqbeat's data?

rqbeat's state (schedule hashes, the due/running sets, the epoch) has no TTL;
only the lease (``<ns>:leader``, PX) and the replica heartbeats (``<ns>:node:*``)
expire, and RQ gives its job hashes a TTL (``ttl``, ``result_ttl``). So:

- ``noeviction``: nothing is evicted; writes fail when memory is full, and the
  loops retry them. The only safe policy, and the one RQ recommends too.
- ``allkeys-*``: any key can go, schedules included: a schedule silently vanishes.
- ``volatile-*``: only keys with a TTL go: the lease (a spurious election; fencing
  keeps it safe) and RQ job hashes (a queued run that vanishes is retried, a
  finished one whose result vanished before the watchdog read it runs again).

Reading the policy needs ``INFO`` (``CONFIG GET`` is often disabled on managed
Redis); a server or ACL user that refuses it is reported at DEBUG only.
"""

from __future__ import annotations

import logging

import redis.exceptions
from redis import Redis

log = logging.getLogger(__name__)


def eviction_warning(policy: str) -> str | None:
    """Pure: what is at risk under ``policy``, or None when nothing is."""
    if policy == "noeviction":
        return None
    if policy.startswith("volatile-"):
        return (
            f"maxmemory-policy is {policy}: under memory pressure Redis may evict the leader "
            "lease and RQ job hashes (runs repeat); set it to noeviction"
        )
    return (
        f"maxmemory-policy is {policy}: under memory pressure Redis may evict rqbeat's "
        "schedules and RQ's jobs; set it to noeviction"
    )


def read_policy(conn: Redis) -> str | None:
    """The server's maxmemory-policy, or None when the server will not say."""
    try:
        info = conn.info("memory")
    except redis.exceptions.ResponseError as exc:  # NOPERM (ACL) or INFO renamed away
        log.debug("cannot read maxmemory-policy (INFO memory refused: %s)", exc)
        return None
    policy = info.get("maxmemory_policy")
    return str(policy) if policy else None


def check_eviction(conn: Redis) -> str | None:
    """Log one WARNING when the server may evict rqbeat's data; returns its text."""
    policy = read_policy(conn)
    warning = eviction_warning(policy) if policy else None
    if warning:
        log.warning("%s", warning)
    return warning
