"""A replica's memory of the counters that only grow, to notice Redis losing data.

The leader epoch and the edit revision never go back while Redis keeps its data.
Each replica remembers the highest of each it has seen -- from the lease it acquired
and from the heartbeat it writes anyway (which reads both counters in the same round
trip) -- and reports a counter below that memory as a loss (:mod:`scheduler.dataloss`):
a durable marker that ``rqbeat check`` and ``rqbeat status`` show, and an ERROR line.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from scheduler import dataloss
from scheduler.clock import iso, redis_now_ms
from scheduler.keys import Keys

log = logging.getLogger(__name__)


class CounterWatch:
    """The highest epoch and revision this replica has seen. Not thread-safe."""

    def __init__(self, conn: Redis, keys: Keys, node: str) -> None:
        self.conn = conn
        self.keys = keys
        self.node = node
        self.epoch = 0
        self.revision = 0

    def node_fields(self) -> dict[FieldT, EncodableT]:
        """What the heartbeat publishes in the replica's hash (``rqbeat status``, and
        ``check`` compares them with the counters too)."""
        return {"seen_epoch": self.epoch, "seen_revision": self.revision}

    def read_into(self, pipe: Pipeline) -> None:
        """Queue the two counter reads; their replies go to :meth:`observe`."""
        pipe.get(self.keys.epoch)
        pipe.get(self.keys.revision)

    def observe(self, epoch_reply: Any, revision_reply: Any) -> None:
        """Take in the counters as read (None: missing)."""
        epoch, revision = int(epoch_reply or 0), int(revision_reply or 0)
        what = dataloss.went_back(self.epoch, self.revision, epoch, revision)
        if what is not None:
            self._report(what)  # and the counters are put back up to this memory
        self.epoch, self.revision = max(self.epoch, epoch), max(self.revision, revision)

    def acquired(self, epoch: int) -> None:
        """This replica took the lease with ``epoch``: it must be above all seen."""
        what = dataloss.reissued(self.epoch, epoch)
        if what is not None:
            self._report(what)
        self.epoch = max(self.epoch, epoch)

    def _report(self, what: str) -> None:
        log.error("data lost node=%s what=%s (%s)", self.node, what, dataloss.ADVICE)
        now = iso(redis_now_ms(self.conn))
        dataloss.record(
            self.conn, self.keys, what, node=self.node, now_iso=now, seen=(self.epoch, self.revision)
        )
