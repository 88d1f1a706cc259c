"""A plain Redis client for the one primary of a Redis Cluster that serves a slot.

Every key of an rqbeat installation hashes to one slot (:mod:`scheduler.slots`), so
one node holds all of them. rqbeat therefore talks to that node with an ordinary
:class:`redis.Redis`, not redis-py's ``RedisCluster``: RQ's workers need MULTI/EXEC
with WATCH, blocking pops, pub/sub and Lua scripts with keys named inside them, all
of which a plain connection to the right node runs unchanged, while ``RedisCluster``
refuses or reroutes them (its pipelines are not transactions by default, WATCH is
not supported, and RQ builds its own pipelines from the client it is given).

Finding the node: :class:`SlotRouter` asks the seed nodes (and the last owner)
``CLUSTER SLOTS`` and keeps the primary whose range holds the slot. A connection
(:class:`SlotConnection`) connects to whatever the router says at that moment.

Following it when it moves (a failover, a resharding): a node that no longer serves
the slot answers ``MOVED``, a demoted primary refuses writes (``READONLY``) and wakes
blocked pops with ``UNBLOCKED``. Each of those is turned into a :class:`ConnectionError`
after the router is told to look again and the connection is dropped: nothing was run,
and every rqbeat loop (and RQ's worker loop) already retries a step that met a
ConnectionError by re-reading and deciding again -- the whole-step retry, never a
resent write (commands are never retried by the client, :mod:`scheduler.connection`).
Idle pooled connections to the old node are dropped when next taken from the pool
(:class:`SlotPool`), so a move costs each process about one failed step.

While the slot is being resharded (``SETSLOT MIGRATING``/``IMPORTING`` and ``MIGRATE``
key by key) its keys are split between two nodes. The source still owns the slot: a
command whose keys are all still there runs there; one whose keys all left (or do not
exist yet) is answered ``ASK``, one with keys on both sides ``TRYAGAIN``. Neither runs
anything. redis-py's ``RedisCluster`` resends such a command itself (``ASKING`` on the
target after ``ASK``, 50 ms pauses after ``TRYAGAIN``, up to 16 tries, then "TTL
exhausted"); rqbeat does not follow ``ASK``: every script call on a slot connection
declares a key that never exists (:mod:`scheduler.slotguard`, which also keeps a script
from running half), which the importing node answers ``TRYAGAIN`` until the move ends,
so following it would only add a round trip.
Instead both become :class:`SlotMigrating` (a :class:`ConnectionError`, so the same
whole-step retries apply; the owner is not forgotten, since it has not changed): the
step is retried after the usual back-off and runs on whichever node owns the slot
then. A resharding therefore delays dispatch and acks by about its duration, and
doubles and loses nothing: a refused step ran nothing, and the steps retried are the
fenced or compare-and-set ones the loops retry after any dropped connection.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis import Redis
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from scheduler.slotguard import GuardedPacker
from scheduler.slots import ClusterUrl

log = logging.getLogger(__name__)

#: Replies that mean "this node does not (or not now) serve the slot": look again.
#: (``MovedError`` is an ``AskError`` in redis-py.)
REDIRECTS: tuple[type[ResponseError], ...] = (AskError, TryAgainError, ClusterDownError, ReadOnlyError)
#: Error texts of the same meaning without their own exception class: a script that
#: reaches a key this node no longer serves, a blocked pop woken by a demotion.
REDIRECT_TEXTS = ("non local key", "UNBLOCKED", "cluster is down")


class SlotRedirect(ConnectionError):
    """The node answered with a redirect (``MOVED``, ``ASK``, ``TRYAGAIN``): nothing
    ran, and the node is up -- not an outage. The next try goes where it should."""


class SlotMigrating(SlotRedirect):
    """The slot is being resharded and this command's keys are not (all) on the node
    that still owns it (``ASK``, ``TRYAGAIN``): nothing ran; retry the step later."""


class SlotMoved(SlotRedirect):
    """``MOVED``: another primary serves the slot now (a resharding ended); the owner
    is forgotten, so the next try asks the cluster and goes there."""


class SlotNotServed(ConnectionError):
    """No seed node could say which primary serves the slot (all unreachable, the
    slot unassigned, or the servers are not a cluster)."""


class SlotRouter:
    """Which primary serves ``slot``, found through ``CLUSTER SLOTS`` and kept until
    :meth:`forget`. Thread-safe; shared by every connection of one client (it rides
    in the connection kwargs, so RQ's copies of the client's pool share it too)."""

    def __init__(
        self, cluster: ClusterUrl, slot: int, node_options: dict[str, Any], guard: str | None = None
    ) -> None:
        self.cluster = cluster
        self.slot = slot
        #: The key every script call declares (:mod:`scheduler.slotguard`); None: none.
        self.guard = guard
        self._node_options = node_options
        self._lock = threading.Lock()
        self._owner: tuple[str, int] | None = None
        self._last: tuple[str, int] | None = None
        #: Bumped each time the owner is forgotten: a connection made before is stale.
        self.generation = 0

    def owner(self) -> tuple[str, int]:
        with self._lock:
            if self._owner is None:
                self._owner = self._discover()
                self._last = self._owner
                log.info("cluster slot %d is served by %s:%d", self.slot, *self._owner)
            return self._owner

    def forget(self, reason: str, generation: int | None = None) -> None:
        """Look for the owner again at the next :meth:`owner`. ``generation``: the
        one the complaining connection was routed in; a connection routed before the
        owner was last forgotten (an idle pooled one, still on the old node) only
        confirms what is known, so the owner found since is kept."""
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            if self._owner is not None:
                log.warning(
                    "cluster slot %d: %s:%d no longer serves it (%s)", self.slot, *self._owner, reason
                )
                self._owner = None
                self.generation += 1

    def _discover(self) -> tuple[str, int]:
        candidates = list(dict.fromkeys([*([self._last] if self._last else []), *self.cluster.seeds]))
        problems = []
        for host, port in candidates:
            node = Redis(host=host, port=port, **self._node_options)
            try:
                ranges = node.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            except (ConnectionError, ResponseError, OSError) as exc:
                problems.append(f"{host}:{port}: {_first_line(exc)}")
                continue
            finally:
                node.close()
            found = primary_of(ranges, self.slot, host)
            if found is not None:
                return found
            problems.append(f"{host}:{port}: slot {self.slot} is assigned to no primary")
        raise SlotNotServed(f"no node says which primary serves slot {self.slot}: " + "; ".join(problems))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().strip("'\"").splitlines()
    return lines[0] if lines else type(exc).__name__


def primary_of(ranges: Any, slot: int, asked: str) -> tuple[str, int] | None:
    """The primary's address for ``slot`` in a ``CLUSTER SLOTS`` reply (``[[start,
    end, [host, port, id, ...], replicas...], ...]``); a node announced without an IP
    (empty host) is the one ``asked``."""
    for item in ranges or ():
        start, end, primary = int(item[0]), int(item[1]), item[2]
        if start <= slot <= end:
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            return (host or asked, int(primary[1]))
    return None


def _migrating(exc: ResponseError) -> bool:
    """Whether ``exc`` is a redirect of a slot in migration (``ASK``, ``TRYAGAIN``),
    as opposed to one of a slot that moved (``MOVED``, a demotion, a down cluster)."""
    return isinstance(exc, TryAgainError) or (isinstance(exc, AskError) and not isinstance(exc, MovedError))


def _redirect_reason(exc: ResponseError, slot: int) -> str | None:
    """Why ``exc`` means the node no longer serves ``slot``; None when it does not
    (another error, or a redirect for another slot: job code that used the job's
    connection for a key of its own, outside the tag, which no move of ours fixes)."""
    text = str(exc)
    if isinstance(exc, AskError) and exc.slot_id != slot:
        return None
    if isinstance(exc, REDIRECTS) or any(t in text for t in REDIRECT_TEXTS):
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return None


class SlotConnection(Connection):
    """A connection to the router's current owner of the slot (see the module doc)."""

    def __init__(self, *, router: SlotRouter, **kwargs: Any) -> None:
        self.router = router
        self.routed_generation = -1
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]

    def _construct_command_packer(self, packer: Any) -> Any:
        inner = super()._construct_command_packer(packer)  # type: ignore[no-untyped-call]
        return inner if self.router.guard is None else GuardedPacker(inner, self.router.guard)

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        # Every way redis-py (re)connects goes through here -- connect(), and a command
        # sent on a dropped connection -- so each one asks the router where to go.
        if self._sock:
            return
        generation = self.router.generation
        self.host, self.port = self.router.owner()
        self.routed_generation = generation
        super().connect_check_health(*args, **kwargs)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except ResponseError as exc:
            reason = _redirect_reason(exc, self.router.slot)
            if reason is None:
                raise
            # Dropped either way: inside a pipeline the replies after this one are
            # still unread (a MULTI on it is discarded with it, so nothing of it runs).
            self.disconnect()  # type: ignore[no-untyped-call]
            if _migrating(exc):
                raise SlotMigrating(f"cluster slot {self.router.slot} is migrating: {reason}") from exc
            self.router.forget(reason, self.routed_generation)
            moved = SlotMoved if isinstance(exc, MovedError) else ConnectionError
            raise moved(f"cluster slot {self.router.slot} moved: {reason}") from exc


class SlotSSLConnection(SlotConnection, SSLConnection):
    """:class:`SlotConnection` over TLS."""


class SlotPool(ConnectionPool):
    """Hands out connections to the current owner: one made before the owner was last
    forgotten is dropped and reconnected on the way out, not left to meet a MOVED."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Connection:
        conn = super().get_connection(*args, **kwargs)
        if isinstance(conn, SlotConnection) and conn.routed_generation != conn.router.generation:
            conn.disconnect()  # type: ignore[no-untyped-call]
            conn.connect()  # type: ignore[no-untyped-call]
        return conn


def slot_client(cluster: ClusterUrl, slot: int, options: dict[str, Any], guard: str | None = None) -> Redis:
    """A :class:`redis.Redis` whose connections go to the primary serving ``slot``.
    ``options``: connection keyword arguments (timeouts, no retries, TLS files);
    ``guard``: the key every script call declares (:mod:`scheduler.slotguard`)."""
    credentials: dict[str, Any] = {"username": cluster.username, "password": cluster.password}
    node_options = {**options, **credentials, **({"ssl": True} if cluster.tls else {})}
    router = SlotRouter(cluster, slot, node_options, guard)
    connection_class = SlotSSLConnection if cluster.tls else SlotConnection
    pool = SlotPool(connection_class=connection_class, router=router, **options, **credentials)
    return Redis(connection_pool=pool)
