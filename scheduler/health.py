"""Health findings: every way rqbeat can stall without failing, each with a threshold.

A cron that stops running a job and says "ok" is the failure operators fear most, so
each stall is a :class:`Finding` with a kind, the schedule or queue it concerns, a
line a person reads, and since when it holds:

==================  ==========================================================
kind                what it means
==================  ==========================================================
no_leader           no replica holds the lease: nothing is dispatched
broken              a schedule's definition cannot be used (``rqbeat ls``)
queued_too_long     a run dispatched but started by no worker within its
                    ``max_queued`` (default max(60s, one period)); each run of
                    an ``allow_all`` schedule is its own (``<id>:<fire ms>``)
no_worker           a queue rqbeat dispatched to in the last day has no live worker
wrong_serializer    a live worker on a queue fails rqbeat's jobs with RQ's
                    ``DeserializationError``: its serializer is not JSON
stale               no successful run within ``stale_after`` (default max(5m,
                    3 periods)): failures, give-ups and stalls all count
==================  ==========================================================

:func:`read_health` never scans: it reads small indexes the transitions keep (the
``queued`` and ``stale`` zsets scored by deadline, the ``broken`` set, the ``queues``
zset, see :class:`~scheduler.keys.Keys`) with ``ZRANGEBYSCORE -inf now`` -- O(log n +
k) -- and verifies each candidate against its hash (and RQ's job status), so its cost
follows the number of findings, not of schedules. At most ``limit`` findings of one
kind are listed; the counts say how many there are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis import Redis

from scheduler import rqkeys
from scheduler.clock import iso, parse_iso_ms, time_reply_ms
from scheduler.durations import format_duration
from scheduler.keys import Keys
from scheduler.protocol import ScheduleState
from scheduler.records import text

#: A queue counts as one rqbeat dispatches to for this long after its last dispatch.
QUEUE_RECENT_MS = 24 * 3600 * 1000
#: Findings listed per kind (the counts are exact).
DEFAULT_LIMIT = 100
_ACTIVE = (ScheduleState.DUE.value, ScheduleState.RUNNING.value)


class FindingKind(StrEnum):
    NO_LEADER = "no_leader"
    BROKEN = "broken"
    QUEUED_TOO_LONG = "queued_too_long"
    NO_WORKER = "no_worker"
    WRONG_SERIALIZER = "wrong_serializer"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class Finding:
    """One stall. ``since_ms``: when it began to hold (a threshold passed), if known."""

    kind: FindingKind
    detail: str
    schedule_id: str | None = None
    queue: str | None = None
    since_ms: int | None = None

    def line(self) -> str:
        subject = f"schedule {self.schedule_id}: " if self.schedule_id else ""
        if not subject and self.queue:
            subject = f"queue {self.queue}: "
        return f"{self.kind}: {subject}{self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "schedule": self.schedule_id,
            "queue": self.queue,
            "detail": self.detail,
            "since": iso(self.since_ms) if self.since_ms is not None else None,
            "line": self.line(),
        }


@dataclass(frozen=True, slots=True)
class Health:
    """What :func:`read_health` found at Redis time ``now_ms``."""

    now_ms: int
    findings: list[Finding]
    counts: dict[FindingKind, int]
    #: live workers per queue rqbeat dispatches to
    workers: dict[str, int] = field(default_factory=dict)
    queued_runs: int = 0  # runs dispatched and not started yet, overdue or not

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def lines(self) -> list[str]:
        """One line per finding, and per kind a line for those not listed."""
        out = [f.line() for f in self.findings]
        for kind, count in self.counts.items():
            shown = sum(1 for f in self.findings if f.kind is kind)
            if count > shown:
                out.append(f"{kind}: and {count - shown} more")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": {str(k): v for k, v in self.counts.items()},
            "findings": [f.to_json() for f in self.findings],
            "queue_workers": self.workers,
            "queued_runs": self.queued_runs,
        }


def read_health(conn: Redis, keys: Keys, *, limit: int = DEFAULT_LIMIT) -> Health:
    """Every finding, in a few pipelined round trips of O(log n + k) commands."""
    pipe = conn.pipeline(transaction=False)
    pipe.time()
    pipe.get(keys.leader)
    pipe.scard(keys.broken)
    pipe.srandmember(keys.broken, limit)
    pipe.zcard(keys.queued)
    pipe.hgetall(keys.wrong_serializer)
    time_reply, leader, n_broken, broken, n_queued, unreadable = pipe.execute()
    now_ms = time_reply_ms(time_reply)
    pipe = conn.pipeline(transaction=False)
    pipe.zrangebyscore(keys.queued, "-inf", now_ms / 1000, start=0, num=limit, withscores=True)
    pipe.zcount(keys.queued, "-inf", now_ms / 1000)
    pipe.zrangebyscore(keys.stale, "-inf", now_ms / 1000, start=0, num=limit, withscores=True)
    pipe.zcount(keys.stale, "-inf", now_ms / 1000)
    pipe.zrangebyscore(keys.queues, (now_ms - QUEUE_RECENT_MS) / 1000, "+inf", withscores=True)
    late, n_late, stale, n_stale, queues = pipe.execute()
    reading = _Reading(conn, keys, now_ms)
    if not leader:
        reading.add(Finding(FindingKind.NO_LEADER, "no leader holds the lease: nothing is dispatched"))
    reading.broken(sorted(str(text(m)) for m in broken), int(n_broken))
    reading.queued(_scored(late), int(n_late))
    reading.stale(_scored(stale), int(n_stale))
    workers = reading.queues(_scored(queues), {str(text(q)): str(text(w)) for q, w in unreadable.items()})
    return Health(now_ms, reading.findings, reading.counts, workers, int(n_queued))


def _scored(reply: Any) -> list[tuple[str, int]]:
    return [(str(text(member)), round(score * 1000)) for member, score in reply]


class _Reading:
    """The findings of one :func:`read_health`, kind by kind. Each kind's count starts
    from its index's count; a candidate its hash contradicts (ended, started, paused,
    repaired meanwhile) is taken off it."""

    def __init__(self, conn: Redis, keys: Keys, now_ms: int) -> None:
        self.conn, self.keys, self.now_ms = conn, keys, now_ms
        self.findings: list[Finding] = []
        self.counts = {kind: 0 for kind in FindingKind}

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)
        self.counts[finding.kind] += 1

    def _rows(self, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, str | None]]:
        pipe = self.conn.pipeline(transaction=False)
        for schedule_id in ids:
            pipe.hmget(self.keys.schedule(schedule_id), list(fields))
        return [dict(zip(fields, (text(v) for v in row), strict=True)) for row in pipe.execute()]

    def broken(self, ids: list[str], count: int) -> None:
        rows = self._rows(ids, ("state", "error", "updated_at"))
        for schedule_id, row in zip(ids, rows, strict=True):
            if row["state"] != ScheduleState.BROKEN:
                count -= 1  # repaired or removed by a path that keeps no index (check --repair)
                continue
            error = (row["error"] or "?").splitlines()[0][:200]
            self.findings.append(
                Finding(FindingKind.BROKEN, error, schedule_id=schedule_id, since_ms=_time(row["updated_at"]))
            )
        self.counts[FindingKind.BROKEN] = count

    def queued(self, late: list[tuple[str, int]], count: int) -> None:
        """The late members of the queued zset: a schedule's one run (its id), or one
        ``allow_all`` run (``<id>:<fire ms>``, its record in ``<ns>:runs:<id>``)."""
        runs = [(m, d) for m, d in late if ":" in m]
        late = [(m, d) for m, d in late if ":" not in m]
        count -= self._queued_runs(runs)
        rows = self._rows([i for i, _ in late], ("job_id", "job_queue", "dispatched_at", "started_at"))
        pipe = self.conn.pipeline(transaction=False)
        for row in rows:
            pipe.hget(rqkeys.job(row["job_id"] or "-"), "status")
        statuses = [text(s) for s in pipe.execute()]
        for (schedule_id, deadline_ms), row, status in zip(late, rows, statuses, strict=True):
            dispatched = _time(row["dispatched_at"])
            # started but not marked yet (a plain rq worker: the watchdog marks it), or
            # ended meanwhile: not queued
            if not row["job_id"] or row["started_at"] or status != "queued" or dispatched is None:
                count -= 1
                continue
            detail = (
                f"run {row['job_id']} queued for {_span(self.now_ms - dispatched)} on queue "
                f"{row['job_queue']}, started by no worker "
                f"(max_queued {_span(deadline_ms - dispatched)})"
            )
            queue = row["job_queue"]
            self.findings.append(
                Finding(FindingKind.QUEUED_TOO_LONG, detail, schedule_id, queue=queue, since_ms=deadline_ms)
            )
        self.counts[FindingKind.QUEUED_TOO_LONG] = count

    def _queued_runs(self, late: list[tuple[str, int]]) -> int:
        """Findings for ``allow_all`` runs still queued past their deadline; returns how
        many candidates were not (started, ended, retried meanwhile)."""
        pipe = self.conn.pipeline(transaction=False)
        for m, _ in late:
            schedule_id, fire_ms = m.rsplit(":", 1)
            pipe.hget(self.keys.runs(schedule_id), fire_ms)
        records = [_run_record(raw) for raw in pipe.execute()] if late else []
        pipe = self.conn.pipeline(transaction=False)
        for record in records:
            pipe.hget(rqkeys.job(record.get("job_id") or "-"), "status")
        statuses = [text(s) for s in pipe.execute()] if late else []
        gone = 0
        for (m, deadline_ms), record, status in zip(late, records, statuses, strict=True):
            dispatched = _time(record.get("dispatched_at"))
            if status != "queued" or dispatched is None:
                gone += 1
                continue
            schedule_id, fire_ms = m.rsplit(":", 1)
            detail = (
                f"run {record['job_id']} (allow_all, fire {iso(int(fire_ms))}) queued for "
                f"{_span(self.now_ms - dispatched)} on queue {record.get('queue')}, started by no worker "
                f"(max_queued {_span(deadline_ms - dispatched)})"
            )
            self.findings.append(
                Finding(
                    FindingKind.QUEUED_TOO_LONG,
                    detail,
                    schedule_id,
                    queue=record.get("queue"),
                    since_ms=deadline_ms,
                )
            )
        return gone

    def stale(self, stale: list[tuple[str, int]], count: int) -> None:
        rows = self._rows([i for i, _ in stale], ("state", "last_success_at", "last_result", "last_error"))
        for (schedule_id, deadline_ms), row in zip(stale, rows, strict=True):
            if row["state"] not in _ACTIVE:
                count -= 1  # paused, broken or removed by a path that keeps no index
                continue
            success = _time(row["last_success_at"])
            last = "no successful run yet"
            if success is not None:
                last = f"no successful run for {_span(self.now_ms - success)}"
            detail = f"{last} (stale since {iso(deadline_ms)})"
            if row["last_result"] and row["last_result"] != "succeeded":
                error = (row["last_error"] or "").strip().splitlines()
                detail += f"; last run {row['last_result']}" + (f": {error[-1][:200]}" if error else "")
            self.findings.append(Finding(FindingKind.STALE, detail, schedule_id, since_ms=deadline_ms))
        self.counts[FindingKind.STALE] = count

    def queues(self, queues: list[tuple[str, int]], unreadable: dict[str, str]) -> dict[str, int]:
        """Live workers per queue; a queue without one, or with a worker that cannot
        read rqbeat's jobs, is a finding. A worker is live while its key has no
        ``death`` (one killed with -9 stays listed until its key expires)."""
        pipe = self.conn.pipeline(transaction=False)
        for name, _ in queues:
            pipe.smembers(rqkeys.workers_of(name))
        members = [sorted(str(text(m)) for m in reply) for reply in pipe.execute()]
        pipe = self.conn.pipeline(transaction=False)
        for key in [k for group in members for k in group] + [rqkeys.worker(w) for w in unreadable.values()]:
            pipe.hmget(key, ["birth", "death"])
        alive = iter(birth is not None and death is None for birth, death in pipe.execute())
        workers: dict[str, int] = {}
        for (name, last_ms), group in zip(queues, members, strict=True):
            workers[name] = sum(1 for _ in group if next(alive))
            if not workers[name]:
                ago = _span(self.now_ms - last_ms)
                detail = f"no live worker listens on it (rqbeat dispatched to it {ago} ago)"
                self.add(Finding(FindingKind.NO_WORKER, detail, queue=name, since_ms=last_ms))
        for queue, worker in unreadable.items():
            if next(alive):
                detail = (
                    f"worker {worker} cannot read rqbeat's jobs (DeserializationError: its serializer is "
                    "not JSON; run `rqbeat worker` or `rq worker -S rq.serializers.JSONSerializer`)"
                )
                self.add(Finding(FindingKind.WRONG_SERIALIZER, detail, queue=queue))
        return workers


def _span(ms: int) -> str:
    """A span as a person reads it: whole seconds (``2m5s``), ``0s`` when shorter."""
    return format_duration(max(0, ms) // 1000 * 1000) if ms >= 1000 else "0s"


def _run_record(raw: Any) -> dict[str, str]:
    """An ``allow_all`` run's record as text fields ({} when missing or damaged:
    ``check --repair`` reports a damaged one)."""
    try:
        data = json.loads(text(raw) or "")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _time(value: str | None) -> int | None:
    try:
        return parse_iso_ms(value) if value else None
    except ValueError:
        return None
