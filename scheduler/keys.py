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
    def leader_conn(self) -> str:
        """``<token> <client id> <run id>``: the Redis client id of the leader's lease
        connection and the run id of the server that gave it, so a standby asking that
        server can tell at once that the leader's process is gone."""
        return f"{self.namespace}:leader:conn"

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
    def queued(self) -> str:
        """ZSET of schedule ids whose run is dispatched but not started yet (and of
        ``allow_all`` runs, ``<id>:<fire ms>``); score = when it counts as queued too
        long (dispatch time + ``max_queued``), epoch seconds."""
        return f"{self.namespace}:queued"

    @property
    def stale(self) -> str:
        """ZSET of active schedule ids; score = when the schedule counts as stale unless
        a run succeeds before (last success, or first dispatch, + ``stale_after``)."""
        return f"{self.namespace}:stale"

    @property
    def broken(self) -> str:
        """SET of schedule ids marked broken (the health probe reads it, never a scan)."""
        return f"{self.namespace}:broken"

    @property
    def queues(self) -> str:
        """ZSET of RQ queue names rqbeat dispatches to; score = last dispatch, epoch s."""
        return f"{self.namespace}:queues"

    @property
    def wrong_serializer(self) -> str:
        """HASH queue -> name of a worker seen failing rqbeat's jobs with RQ's
        DeserializationError (its serializer is not JSON); a finding while it lives."""
        return f"{self.namespace}:wrong_serializer"

    @property
    def data_lost(self) -> str:
        """HASH, no TTL: a replica saw the counters go back (scheduler.dataloss)."""
        return f"{self.namespace}:data_lost"

    @property
    def log(self) -> str:
        """STREAM: the namespace's edit log, who changed which schedule and how
        (scheduler.audit); capped at LOG_MAXLEN entries."""
        return f"{self.namespace}:log"

    @property
    def paused_until(self) -> str:
        """ZSET of schedules paused with an end; score = when the leader resumes it,
        epoch seconds."""
        return f"{self.namespace}:paused_until"

    def schedule(self, schedule_id: str) -> str:
        """HASH: the definition (JSON) and the state of one schedule."""
        return f"{self.namespace}:schedule:{schedule_id}"

    def history(self, schedule_id: str) -> str:
        """STREAM: capped run history of one schedule."""
        return f"{self.namespace}:history:{schedule_id}"

    def mark_broken_keys(self, schedule_id: str) -> list[str]:
        """The KEYS of :data:`scheduler.scripts.MARK_BROKEN`, in its order."""
        return [
            self.schedule(schedule_id),
            self.due,
            self.running,
            self.history(schedule_id),
            self.queued,
            self.stale,
            self.broken,
            self.alerts,
        ]

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

    @property
    def backfills(self) -> str:
        """ZSET of schedule ids with an active backfill; score = when the leader next
        looks at it (dispatch its next fire, or check the run in flight), epoch s."""
        return f"{self.namespace}:backfills"

    def backfill(self, schedule_id: str) -> str:
        """HASH: one schedule's backfill: its window, cursor, run in flight and counts."""
        return f"{self.namespace}:backfill:{schedule_id}"

    @property
    def concurrent(self) -> str:
        """ZSET of ``<schedule id>:<fire ms>``, the runs of ``allow_all`` schedules; score =
        when the leader next looks at the run (its watchdog check, or its retry)."""
        return f"{self.namespace}:concurrent"

    def runs(self, schedule_id: str) -> str:
        """HASH of an ``allow_all`` schedule's runs in flight: fire epoch ms -> the run (JSON)."""
        return f"{self.namespace}:runs:{schedule_id}"

    def succeeded(self, schedule_id: str) -> str:
        """ZSET of chains of fires that ran to success (``<first>:<last>:<next>`` ms,
        score = last): what a backfill skips. Written by the acks, capped."""
        return f"{self.namespace}:succeeded:{schedule_id}"
