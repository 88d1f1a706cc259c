"""What ``rqbeat status`` and ``rqbeat check`` report, read in one round trip.

Counts come from set sizes (O(1)), never from reading every schedule: a schedule in
neither zset is paused or broken, and telling those two apart needs ``rqbeat ls``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from scheduler.clock import iso, time_reply_ms
from scheduler.keys import Keys
from scheduler.records import text


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    role: str
    epoch: int
    seen_ms: int


@dataclass(frozen=True, slots=True)
class StatusReport:
    leader_node: str | None
    epoch: int
    counts: dict[str, int]
    oldest_overdue_id: str | None
    oldest_overdue_ms: int | None
    now_ms: int
    nodes: list[Node] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        lag = None if self.oldest_overdue_ms is None else (self.now_ms - self.oldest_overdue_ms) / 1000
        return {
            "leader": self.leader_node,
            "epoch": self.epoch,
            "schedules": self.counts,
            "oldest_overdue": None
            if self.oldest_overdue_ms is None
            else {
                "id": self.oldest_overdue_id,
                "due_at": iso(self.oldest_overdue_ms),
                "lag_s": lag,
            },
            "replicas": [
                {"node": n.name, "role": n.role, "epoch": n.epoch, "seen_at": iso(n.seen_ms)}
                for n in self.nodes
            ],
        }


def read_status(conn: Redis, namespace: str) -> StatusReport:
    k = Keys(namespace)
    pipe = conn.pipeline(transaction=False)
    pipe.time()
    pipe.get(k.leader)
    pipe.scard(k.ids)
    pipe.zcard(k.due)
    pipe.zcard(k.running)
    pipe.zrange(k.due, 0, 0, withscores=True)
    pipe.zrange(k.nodes, 0, -1, withscores=True)
    time_reply, leader, total, due, running, first, nodes = pipe.execute()
    now_ms = time_reply_ms(time_reply)
    token = text(leader)
    epoch, _, node = token.partition(":") if token else ("0", "", None)
    overdue_id, overdue_ms = None, None
    if first and first[0][1] * 1000 <= now_ms:
        overdue_id, overdue_ms = text(first[0][0]), round(first[0][1] * 1000)
    return StatusReport(
        leader_node=node or None,
        epoch=int(epoch),
        counts={"due": due, "running": running, "paused or broken": max(0, total - due - running)},
        oldest_overdue_id=overdue_id,
        oldest_overdue_ms=overdue_ms,
        now_ms=now_ms,
        nodes=_nodes(conn, k, nodes),
    )


def _nodes(conn: Redis, k: Keys, members: list[tuple[bytes, float]]) -> list[Node]:
    pipe = conn.pipeline(transaction=False)
    for member, _ in members:
        pipe.hmget(k.node(str(text(member))), ["role", "epoch"])
    out = []
    for (member, score), (role, epoch) in zip(members, pipe.execute(), strict=True):
        out.append(Node(str(text(member)), text(role) or "?", int(epoch or 0), round(score * 1000)))
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
