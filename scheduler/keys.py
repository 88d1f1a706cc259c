"""Redis key names: one place, so the README's key table and the code cannot drift.

Every key lives under a namespace (``rqbeat`` by default) so several independent
rqbeat installations can share one Redis database.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NAMESPACE = "rqbeat"
#: Entries kept per schedule history stream (approximate trimming, MAXLEN ~).
HISTORY_MAXLEN = 100


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one namespace."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def due(self) -> str:
        """ZSET of idle schedule ids; score = next fire (or retry) time, epoch seconds."""
        return f"{self.namespace}:due"

    @property
    def running(self) -> str:
        """ZSET of schedule ids with a run in flight; score = next watchdog check."""
        return f"{self.namespace}:running"

    @property
    def ids(self) -> str:
        """SET of every schedule id: listing never scans the keyspace."""
        return f"{self.namespace}:ids"

    @property
    def revision(self) -> str:
        """Counter bumped by every edit; dispatch WATCHes it instead of the zsets."""
        return f"{self.namespace}:revision"

    @property
    def leader(self) -> str:
        """The lease: ``<epoch>:<node>`` with a PX TTL."""
        return f"{self.namespace}:leader"

    @property
    def epoch(self) -> str:
        """Fencing counter, INCR on every lease acquisition."""
        return f"{self.namespace}:epoch"

    @property
    def nodes(self) -> str:
        """ZSET of replica names; score = last heartbeat, epoch seconds."""
        return f"{self.namespace}:nodes"

    @property
    def events(self) -> str:
        """Pub/sub channel that wakes the leader (edits, acks) and standbys (release)."""
        return f"{self.namespace}:events"

    @property
    def stats(self) -> str:
        """HASH of cluster-wide run counters, incremented by acks (scheduler.engine.clusterstats)."""
        return f"{self.namespace}:stats"

    @property
    def alerts(self) -> str:
        """LIST of alert events (JSON) the scripts push on give-up, break, pause and
        recovery; the leader drains it to the webhooks. Capped (ALERTS_MAXLEN)."""
        return f"{self.namespace}:alerts"

    @property
    def failing(self) -> str:
        """ZSET of schedules whose last run failed; score = consecutive failed runs."""
        return f"{self.namespace}:failing"

    @property
    def metered(self) -> str:
        """SET of schedules with ``metrics = true``: their own series are exported."""
        return f"{self.namespace}:metered"

    @property
    def data_lost(self) -> str:
        """HASH, no TTL: a replica saw the counters go back (scheduler.dataloss)."""
        return f"{self.namespace}:data_lost"

    def schedule(self, schedule_id: str) -> str:
        """HASH: the definition (JSON) and the state of one schedule."""
        return f"{self.namespace}:schedule:{schedule_id}"

    def history(self, schedule_id: str) -> str:
        """STREAM: capped run history of one schedule."""
        return f"{self.namespace}:history:{schedule_id}"

    def clock(self, worker: str) -> str:
        """HASH: an rqbeat worker's clock offset from Redis time (scheduler.clockskew)."""
        return f"{self.namespace}:clock:{worker}"

    def node(self, node: str) -> str:
        """HASH: what one replica last reported (role, epoch, pid, host, RQ version and prefix)."""
        return f"{self.namespace}:node:{node}"

    @property
    def rq_workers(self) -> str:
        """HASH: RQ worker key -> JSON (name, queues, RQ version and key prefix) of each
        ``workers.Worker``, for ``rqbeat status`` (workers.presence)."""
        return f"{self.namespace}:rq-workers"
