"""What ``rqbeat status`` and ``rqbeat check`` report, in a few pipelined round trips.

Counts come from set sizes and the ``state`` field, never from decoding every
definition: ``due`` and ``running`` are zset sizes (O(1)); paused and broken schedules
are the ids in neither zset, found with one ``ZDIFF`` (O(all schedules) on the server,
~60 ms at 100k) and told apart by their ``state`` field. ``check`` skips that split
and the queues (``detail=False``): it runs often and needs neither. A definition that
is corrupt but still sits in a zset is counted there until the leader marks it broken;
``rqbeat ls`` decodes every definition and shows it at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.exceptions
from redis import Redis

from scheduler import clockskew, dataloss, hashes, rqkeys
from scheduler.clock import iso, time_reply_ms
from scheduler.keys import Keys
from scheduler.ops.rqinfo import RqWorker, disagreements, read_workers
from scheduler.protocol import ScheduleState
from scheduler.records import text
from scheduler.rqkeys import PREFIX_FIELD, VERSION_FIELD, RqIdentity

#: A due fire this late is overdue (the same grace as a misfire).
OVERDUE_GRACE_MS = 1000


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    role: str
    epoch: int
    seen_ms: int
    host: str = ""
    pid: str = ""
    seen_epoch: int = 0  # the highest epoch this replica has seen (scheduler.dataloss)
    rq: RqIdentity | None = None  # None: a replica of a release that did not record it


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """An RQ queue as RQ's own keys show it (read only, no registry clean-up)."""

    name: str
    queued: int
    started: int
    failed: int
    workers: int


@dataclass(frozen=True, slots=True)
class WorkerClock:
    """A live RQ worker and its clock's offset from Redis time (None: not measured,
    a plain ``rq worker``; see :mod:`scheduler.clockskew`)."""

    name: str
    offset: clockskew.Offset | None

    def to_json(self) -> dict[str, Any]:
        o = self.offset
        return {
            "name": self.name,
            "clock_offset_s": None if o is None else o.offset_ms / 1000,
            "clock_measured_at": None if o is None else iso(o.measured_ms),
        }


@dataclass(frozen=True, slots=True)
class StatusReport:
    leader_node: str | None
    epoch: int
    counts: dict[str, int]
    oldest_overdue_id: str | None
    oldest_overdue_ms: int | None
    now_ms: int
    nodes: list[Node] = field(default_factory=list)
    lease_ttl_ms: int | None = None
    overdue: int = 0
    queues: list[QueueInfo] = field(default_factory=list)
    data_lost: dataloss.Loss | None = None
    workers: list[WorkerClock] = field(default_factory=list)
    rq: RqIdentity = field(default_factory=RqIdentity.current)  # this process's
    rq_workers: list[RqWorker] = field(default_factory=list)
    #: runs of ``overlap = allow_all`` schedules in flight or waiting for their retry
    concurrent_runs: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def clock_problems(self, tolerance_ms: int = clockskew.TOLERANCE_MS) -> list[str]:
        """Workers whose clock is off Redis time by more than ``tolerance_ms``."""
        return clockskew.problems({w.name: w.offset for w in self.workers}, tolerance_ms)

    @property
    def rq_warnings(self) -> list[str]:
        """Where replicas, workers and this process disagree on RQ (scheduler.ops.rqinfo)."""
        return disagreements(self.rq, {n.name: n.rq for n in self.nodes}, self.rq_workers)

    def to_json(self) -> dict[str, Any]:
        lag = None if self.oldest_overdue_ms is None else (self.now_ms - self.oldest_overdue_ms) / 1000
        return {
            "now": iso(self.now_ms),
            "leader": self.leader_node,
            "epoch": self.epoch,
            "lease_remaining_s": None if self.lease_ttl_ms is None else self.lease_ttl_ms / 1000,
            "schedules": {**self.counts, "total": self.total, "overdue": self.overdue},
            "allow_all_runs": self.concurrent_runs,
            "oldest_overdue": None
            if self.oldest_overdue_ms is None
            else {"id": self.oldest_overdue_id, "due_at": iso(self.oldest_overdue_ms), "lag_s": lag},
            "replicas": [
                {
                    "node": n.name,
                    "role": n.role,
                    "epoch": n.epoch,
                    "seen_at": iso(n.seen_ms),
                    "age_s": (self.now_ms - n.seen_ms) / 1000,
                    "host": n.host,
                    "pid": n.pid,
                    "rq": None if n.rq is None else _rq_json(n.rq),
                }
                for n in self.nodes
            ],
            "data_lost": None
            if self.data_lost is None
            else {
                "what": self.data_lost.what,
                "node": self.data_lost.node or None,
                "detected_at": self.data_lost.detected_at or None,
                "advice": dataloss.ADVICE,
            },
            "rq": _rq_json(self.rq),
            "rq_workers": [
                {"name": w.name, "queues": list(w.queues), "rq": _rq_json(w.rq)} for w in self.rq_workers
            ],
            "rq_warnings": self.rq_warnings,
            "queues": [
                {
                    "name": q.name,
                    "queued": q.queued,
                    "started": q.started,
                    "failed": q.failed,
                    "workers": q.workers,
                }
                for q in self.queues
            ],
            "workers": [w.to_json() for w in self.workers],
        }


def _rq_json(rq: RqIdentity) -> dict[str, str]:
    return {"version": rq.version, "prefix": rq.prefix}


def read_status(conn: Redis, namespace: str, *, detail: bool = True) -> StatusReport:
    """The cluster as one replica, worker or person would want to see it."""
    k = Keys(namespace)
    pipe = conn.pipeline(transaction=False)
    pipe.time()
    pipe.get(k.leader)
    pipe.pttl(k.leader)
    pipe.scard(k.ids)
    pipe.zcard(k.due)
    pipe.zcard(k.running)
    pipe.zrange(k.due, 0, 0, withscores=True)
    pipe.zrange(k.nodes, 0, -1, withscores=True)
    pipe.get(k.epoch)
    pipe.hgetall(k.data_lost)
    pipe.zcard(k.concurrent)
    time_reply, leader, pttl, total, due, running, first, nodes, epoch_counter, marker, concurrent_runs = (
        pipe.execute()
    )
    now_ms = time_reply_ms(time_reply)
    token = text(leader)
    epoch, _, node = token.partition(":") if token else ("0", "", None)
    overdue_id, overdue_ms = None, None
    if first and first[0][1] * 1000 <= now_ms:
        overdue_id, overdue_ms = text(first[0][0]), round(first[0][1] * 1000)
    idle = max(0, total - due - running)
    counts = {"due": due, "running": running}
    if detail:
        counts.update(_split_idle(conn, k) if idle else {"paused": 0, "completed": 0, "broken": 0})
    else:
        counts["paused or broken"] = idle
    replicas = _nodes(conn, k, nodes)
    seen = {n.name: n.seen_epoch for n in replicas}
    counter = None if epoch_counter is None else int(epoch_counter)
    return StatusReport(
        leader_node=node or None,
        epoch=int(epoch),
        counts=counts,
        oldest_overdue_id=overdue_id,
        oldest_overdue_ms=overdue_ms,
        now_ms=now_ms,
        nodes=replicas,
        lease_ttl_ms=pttl if token and pttl >= 0 else None,
        overdue=int(conn.zcount(k.due, "-inf", (now_ms - OVERDUE_GRACE_MS) / 1000)) if overdue_id else 0,
        queues=read_queues(conn) if detail else [],
        data_lost=dataloss.assess(dataloss.decode_marker(marker), counter, seen),
        workers=read_worker_clocks(conn, k),
        rq_workers=read_workers(conn, k),
        concurrent_runs=concurrent_runs,
    )


def _split_idle(conn: Redis, k: Keys) -> dict[str, int]:
    """Paused, completed and broken: the ids in neither zset, by their ``state`` field."""
    ids: list[Any] = list(conn.zdiff([k.ids, k.due, k.running]))  # a set is a valid ZDIFF input
    idle = (ScheduleState.PAUSED, ScheduleState.COMPLETED)
    counts = {ScheduleState.PAUSED.value: 0, ScheduleState.COMPLETED.value: 0, ScheduleState.BROKEN.value: 0}
    for chunk in hashes.chunks(ids):
        pipe = conn.pipeline(transaction=False)
        for member in chunk:
            pipe.hget(k.schedule(str(text(member))), "state")
        for state in pipe.execute(raise_on_error=False):
            if state is None:
                continue  # removed since the ZDIFF
            known = None if isinstance(state, redis.exceptions.ResponseError) else text(state)
            counts[known if known in idle else ScheduleState.BROKEN] += 1
    return counts


def _nodes(conn: Redis, k: Keys, members: list[tuple[bytes, float]]) -> list[Node]:
    pipe = conn.pipeline(transaction=False)
    for member, _ in members:
        fields = ["role", "epoch", "host", "pid", "seen_epoch", VERSION_FIELD, PREFIX_FIELD]
        pipe.hmget(k.node(str(text(member))), fields)
    out = []
    for (member, score), (role, epoch, host, pid, seen, *rq) in zip(members, pipe.execute(), strict=True):
        out.append(
            Node(
                str(text(member)),
                text(role) or "?",
                int(epoch or 0),
                round(score * 1000),
                text(host) or "",
                text(pid) or "",
                int(seen or 0),
                RqIdentity.of({VERSION_FIELD: text(rq[0]), PREFIX_FIELD: text(rq[1])}),
            )
        )
    return out


def read_worker_clocks(conn: Redis, k: Keys) -> list[WorkerClock]:
    """Every live RQ worker (its key has not expired) with its measured clock offset."""
    members = sorted(str(text(m)) for m in conn.smembers(rqkeys.WORKERS))
    pipe = conn.pipeline(transaction=False)
    for member in members:  # a worker killed with -9 stays in the set; its key expires
        pipe.exists(member)
    prefix = rqkeys.worker("")
    names = [m.removeprefix(prefix) for m, alive in zip(members, pipe.execute(), strict=True) if alive]
    offsets = clockskew.read(conn, k, names)
    return [WorkerClock(name, offsets[name]) for name in names]


def read_queues(conn: Redis) -> list[QueueInfo]:
    """Every RQ queue: jobs waiting, running, failed, and live workers listening.

    Reads RQ's keys directly: RQ's own counters clean registries up first, which runs
    failure callbacks and writes (never done from a status command)."""
    names = sorted(str(text(n)).removeprefix(rqkeys.QUEUE_PREFIX) for n in conn.smembers(rqkeys.QUEUES))
    pipe = conn.pipeline(transaction=False)
    for name in names:
        pipe.llen(rqkeys.queue(name))
        pipe.zcard(rqkeys.started(name))
        pipe.zcard(rqkeys.failed(name))
        pipe.smembers(rqkeys.workers_of(name))
    replies = pipe.execute()
    pipe = conn.pipeline(transaction=False)
    for members in replies[3::4]:
        for member in members:  # a worker killed with -9 stays in the set; its key expires
            pipe.exists(member)
    alive = iter(pipe.execute())
    out = []
    for i, name in enumerate(names):
        queued, started, failed, members = replies[4 * i : 4 * i + 4]
        workers = sum(1 for _ in members if next(alive))
        out.append(QueueInfo(name, int(queued), int(started), int(failed), workers))
    return out


def node_problems(report: StatusReport, node: str, max_age_ms: int) -> list[str]:
    """Why replica ``node`` is unhealthy (``rqbeat check --node``), or nothing.

    A replica reports itself at least every ``HEARTBEAT_S`` seconds while its loop
    turns, leader or standby, and removes itself on a clean stop; so a missing or
    stale entry means the process is gone or its loop is stuck, even while another
    replica keeps the cluster healthy.
    """
    seen = next((n for n in report.nodes if n.name == node), None)
    if seen is None:
        return [f"replica {node} has no heartbeat"]
    age_ms = report.now_ms - seen.seen_ms
    if age_ms > max_age_ms:
        return [f"replica {node} was last seen {age_ms // 1000}s ago"]
    return []
