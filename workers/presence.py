"""Which RQ each ``workers.Worker`` runs, for ``rqbeat status`` and ``rqbeat check``.

A worker under another RQ key prefix than the replicas never sees their jobs (RQ 3's
``RQ_KEY_PREFIX``, set on one side only), and RQ's own record of a worker lives under
its prefix, where a ``status`` of the other prefix cannot see it. So each worker also
records itself in rqbeat's namespace: ``HSET <ns>:rq-workers <its RQ worker key>
<JSON: name, queues, RQ version, key prefix>``.

Liveness is RQ's: an entry counts while its RQ worker key exists without a death
mark (RQ expires the key when the worker stops heartbeating), so a worker killed with
``kill -9`` drops out with no heartbeat of rqbeat's own. A clean stop removes the
entry; each birth prunes the entries of workers that are gone.

Recording is best effort: a worker whose ACL lacks ``<ns>:rq-workers`` (rules from an
older ``rqbeat acl``) logs a warning and works on.
"""

from __future__ import annotations

import json
import logging
import os

import redis.exceptions
from redis import Redis

from scheduler.keys import DEFAULT_NAMESPACE, Keys
from scheduler.records import text
from scheduler.rqkeys import RqIdentity

log = logging.getLogger(__name__)

#: The namespace a worker records itself in when none is given (``rq worker -w workers.Worker``).
NAMESPACE_ENV = "RQBEAT_NAMESPACE"


def keys_for(namespace: str) -> Keys:
    return Keys(namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE)


def record(name: str, queues: list[str]) -> str:
    """The JSON a worker records (``scheduler.ops.rqinfo`` reads it)."""
    return json.dumps({"name": name, "queues": queues, **RqIdentity.current().fields()})


def announce(conn: Redis, keys: Keys, worker_key: str, name: str, queues: list[str]) -> None:
    """Record this worker (after RQ registered its birth), and forget the gone ones."""
    try:
        conn.hset(keys.rq_workers, worker_key, record(name, queues))
        _prune(conn, keys, worker_key)
    except redis.exceptions.RedisError as exc:
        log.warning("could not record the worker's RQ version worker=%s namespace=%s error=%s",
                    name, keys.namespace, exc)  # fmt: skip


def withdraw(conn: Redis, keys: Keys, worker_key: str, name: str) -> None:
    """Remove this worker's record (a clean stop)."""
    try:
        conn.hdel(keys.rq_workers, worker_key)
    except redis.exceptions.RedisError as exc:
        log.warning("could not remove the worker's record worker=%s namespace=%s error=%s",
                    name, keys.namespace, exc)  # fmt: skip


def _prune(conn: Redis, keys: Keys, own_key: str) -> None:
    """HDEL the records whose RQ worker key is gone. A worker of the same name born
    between the read and the HDEL loses its record until its next start: the cost of
    not locking on a path that only feeds ``status``."""
    others = [str(text(k)) for k in conn.hkeys(keys.rq_workers) if str(text(k)) != own_key]
    if not others:
        return
    pipe = conn.pipeline(transaction=False)
    for key in others:
        pipe.exists(key)
    gone = [key for key, n in zip(others, pipe.execute(), strict=True) if not n]
    if gone:
        conn.hdel(keys.rq_workers, *gone)
