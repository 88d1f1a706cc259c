"""A resharding of one slot, step by step, as ``redis-cli --cluster reshard`` does it.

``redis-cli --cluster reshard`` moves a number of slots chosen by count, not a named
one; a test of rqbeat must move exactly the slot of its hash tag and hold it half
moved while replicas and workers run. :class:`SlotMove` runs the sequence the Redis
Cluster specification gives for one slot:

1. ``CLUSTER SETSLOT <slot> IMPORTING <source-id>`` on the target,
   ``CLUSTER SETSLOT <slot> MIGRATING <target-id>`` on the source (:meth:`begin`);
2. ``CLUSTER GETKEYSINSLOT`` and ``MIGRATE host port "" 0 <timeout> KEYS ...`` on the
   source, batch after batch (:meth:`migrate`), until the source holds no key of it;
3. ``CLUSTER SETSLOT <slot> NODE <target-id>`` on the target, then the source, then
   every other primary (:meth:`finish`), and a wait until every node agrees.

Between 1 and 3 the source still owns the slot (``CLUSTER SLOTS`` names it): a command
whose keys are all still there runs there; one whose keys all moved (or do not exist)
is answered ``ASK`` (run it on the target after ``ASKING``), and one with keys on both
sides ``TRYAGAIN``. Neither runs anything.
"""

from __future__ import annotations

from redis import Redis

from devtools.rediscluster import RedisCluster

#: How long one MIGRATE may take to hand its keys over.
MIGRATE_TIMEOUT_MS = 5000


class SlotMove:
    """Moving ``slot`` from the primary that serves it to the primary on ``target``."""

    def __init__(self, cluster: RedisCluster, slot: int, target: int) -> None:
        self.cluster = cluster
        self.slot = slot
        self.source = cluster.owner(slot)
        self.target = target
        if self.source == target:
            raise ValueError(f"slot {slot} is already served by {target}")
        self.moved = 0

    def _node_id(self, port: int) -> str:
        return str(self._ask(port, "CLUSTER", "MYID").decode())

    def _ask(self, port: int, *args: object) -> bytes:
        conn: Redis = self.cluster.client(port)
        try:
            reply: bytes = conn.execute_command(*args)  # type: ignore[no-untyped-call]
            return reply
        finally:
            conn.close()

    def begin(self) -> None:
        """Step 1: the target imports, the source migrates (target first, so that an
        ``ASK`` from the source never points at a node that refuses it)."""
        self._ask(self.target, "CLUSTER", "SETSLOT", self.slot, "IMPORTING", self._node_id(self.source))
        self._ask(self.source, "CLUSTER", "SETSLOT", self.slot, "MIGRATING", self._node_id(self.target))

    def keys_left(self, count: int = 1000) -> list[bytes]:
        """Up to ``count`` keys of the slot still on the source."""
        conn = self.cluster.client(self.source)
        try:
            keys: list[bytes] = conn.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, count)  # type: ignore[no-untyped-call]
            return keys
        finally:
            conn.close()

    def migrate(self, batch: int) -> int:
        """Step 2, once: up to ``batch`` of the source's keys of the slot moved to the
        target (one MIGRATE, atomic on the source). Returns how many moved."""
        keys = self.keys_left(batch)
        if keys:
            self._ask(
                self.source, "MIGRATE", "127.0.0.1", self.target, "", 0, MIGRATE_TIMEOUT_MS, "KEYS", *keys
            )
            self.moved += len(keys)
        return len(keys)

    def finish(self, batch: int = 100) -> None:
        """Steps 2 and 3: every key left moved, then the slot assigned to the target
        everywhere. Keys written on the source meanwhile are moved too: the loop ends
        only when the source holds none (it then creates none: a write of a key it
        lacks is answered ``ASK``)."""
        while self.migrate(batch):
            pass
        target_id = self._node_id(self.target)
        self._ask(self.target, "CLUSTER", "SETSLOT", self.slot, "NODE", target_id)
        self._ask(self.source, "CLUSTER", "SETSLOT", self.slot, "NODE", target_id)
        for port in self.cluster.primaries():
            if port not in (self.source, self.target):
                self._ask(port, "CLUSTER", "SETSLOT", self.slot, "NODE", target_id)
        self.cluster.wait_owner(self.slot, self.target)
