"""Dispatch: move due schedules onto RQ queues, one fenced transaction per batch.

Per batch::

    WATCH <ns>:leader <ns>:revision      -- fencing, and edits by the API
    GET <ns>:leader == our token?        -- else LeadershipLost
    read up to B due ids and their definitions (another connection: no side effects)
    decide, in Python, before anything is written (compute before run):
        run        -- due → running, in-flight state, history, RQ enqueue
        reschedule -- due → due at a later fire (skip policy, recomputed fire)
        broken     -- cannot be decoded/computed: marked broken after the batch
    MULTI ... EXEC                       -- all or nothing

A deposed leader's EXEC fails (the new leader rewrote the lease key), so it cannot
enqueue anything once another replica has taken over. The dispatch connection has
command retries off: a resent EXEC would enqueue the batch twice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue
from rq.serializers import JSONSerializer

from scheduler import cron, policy, scripts
from scheduler.allow import AllowList
from scheduler.clock import iso, parse_iso_ms
from scheduler.errors import LeadershipLost, RqbeatError
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.model import Schedule
from scheduler.records import decode_definition, text

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1_000
#: First watchdog look at a new run; later looks back off (see watchdog).
FIRST_CHECK_MS = 1_000
_FIELDS = ["definition", "version", "state", "fire_at", "attempt"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What one due schedule gets in this batch."""

    schedule_id: str
    kind: str  # "run" | "reschedule" | "broken"
    schedule: Schedule | None = None
    fire_ms: int = 0
    attempt: int = 1
    dropped: int = 0
    score_ms: int = 0
    version: str = ""
    error: str = ""

    @property
    def job_id(self) -> str:
        return f"{self.schedule_id}-{self.fire_ms}-{self.attempt}"


@dataclass(slots=True)
class BatchResult:
    runs: list[Decision] = field(default_factory=list)
    rescheduled: list[Decision] = field(default_factory=list)
    broken: list[Decision] = field(default_factory=list)

    def add(self, decision: Decision) -> None:
        bucket = {"run": self.runs, "reschedule": self.rescheduled, "broken": self.broken}[decision.kind]
        bucket.append(decision)

    @property
    def size(self) -> int:
        return len(self.runs) + len(self.rescheduled) + len(self.broken)


@lru_cache(maxsize=65_536)
def _decode(schedule_id: str, definition: str | None) -> Schedule:
    """Definitions are immutable values: decode each distinct text once."""
    return decode_definition(schedule_id, definition)


def decide(
    schedule_id: str, row: list[Any], score_ms: int, now_ms: int, allow: AllowList | None = None
) -> Decision:
    """Pure decision for one due schedule from its HMGET row (see ``_FIELDS``).
    A target outside ``allow`` (this replica's own list, never Redis's word) is broken."""
    definition, version, state, fire_at, attempt = (text(v) for v in row)
    try:
        if state != "due":
            raise RqbeatError(f"is in the due set but its state is {state!r}")
        schedule = _decode(schedule_id, definition)
        if allow is not None and not allow.permits(schedule.target):
            raise RqbeatError(f"target {schedule.target!r} is not in this replica's allow-list ({allow})")
        pending = parse_iso_ms(fire_at) if fire_at else cron.next_fire_ms(schedule.trigger, score_ms)
        tries = int(attempt or 1)
    except (RqbeatError, ValueError) as exc:
        return Decision(schedule_id, "broken", error=str(exc))
    if tries > 1:  # a retry of a fire that already failed: never dropped by policy
        return Decision(schedule_id, "run", schedule, pending, tries, version=str(version))
    res = policy.resolve_misfire(schedule, pending, now_ms)
    if not res.run_now:
        score = policy.due_score_ms(schedule, res.fire_ms)
        return Decision(schedule_id, "reschedule", schedule, res.fire_ms, 1, res.dropped, score)
    return Decision(schedule_id, "run", schedule, res.fire_ms, 1, res.dropped, version=str(version))


class Dispatcher:
    """Dispatches due schedules for the current leader."""

    def __init__(
        self, conn: Redis, keys: Keys, *, batch_size: int = DEFAULT_BATCH, allow: AllowList | None = None
    ) -> None:
        self.conn = conn
        self.allow = allow
        self.keys = keys
        self.batch_size = batch_size
        self._scripts = scripts.Scripts(conn)
        self._queues: dict[str, Queue] = {}

    def dispatch(self, now_ms: int, token: str, epoch: int) -> BatchResult:
        """Dispatch one batch of schedules due at ``now_ms``. Raises
        :class:`LeadershipLost` when the lease is no longer ``token``."""
        while True:
            try:
                return self._attempt(now_ms, token, epoch)
            except WatchError:
                if self.conn.get(self.keys.leader) != token.encode():
                    raise LeadershipLost("the lease changed hands during dispatch") from None
                log.debug("an edit raced the dispatch batch; retrying")

    def _attempt(self, now_ms: int, token: str, epoch: int) -> BatchResult:
        k = self.keys
        result = BatchResult()
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.watch(k.leader, k.revision)  # type: ignore[no-untyped-call]
            if pipe.get(k.leader) != token.encode():
                raise LeadershipLost("the lease is held by another replica")
            due: list[tuple[bytes, float]] = self.conn.zrangebyscore(  # type: ignore[assignment]
                k.due, "-inf", now_ms / 1000, start=0, num=self.batch_size, withscores=True
            )
            if not due:
                return result
            reads = self.conn.pipeline(transaction=False)
            for member, _ in due:
                reads.hmget(k.schedule(text(member) or ""), _FIELDS)
            for (member, score), row in zip(due, reads.execute(), strict=True):
                result.add(decide(str(text(member)), row, round(score * 1000), now_ms, self.allow))
            pipe.multi()
            self._write(pipe, result, now_ms, epoch)
            pipe.execute()
        self._after(result, now_ms, epoch)
        return result

    def _write(self, pipe: Pipeline, result: BatchResult, now_ms: int, epoch: int) -> None:
        k = self.keys
        now_iso = iso(now_ms)
        by_queue: dict[str, list[Any]] = {}
        if result.runs:  # one variadic command per set for the whole batch
            pipe.zrem(k.due, *(d.schedule_id for d in result.runs))
            check_at = (now_ms + FIRST_CHECK_MS) / 1000
            pipe.zadd(k.running, dict.fromkeys((d.schedule_id for d in result.runs), check_at))
        for d in result.runs:
            assert d.schedule is not None
            fire_iso = iso(d.fire_ms)
            pipe.hset(
                k.schedule(d.schedule_id),
                mapping={
                    "state": "running",
                    "fire_at": fire_iso,
                    "attempt": d.attempt,
                    "job_id": d.job_id,
                    "job_queue": d.schedule.queue,
                    "epoch": epoch,
                    "dispatched_at": now_iso,
                },
            )
            if d.dropped:  # the fires this run stands for (coalesce) or that were too old
                self._history(pipe, d, "missed", now_iso, count=d.dropped)
            self._history(pipe, d, "dispatched", now_iso, job_id=d.job_id, attempt=d.attempt, epoch=epoch)
            by_queue.setdefault(d.schedule.queue, []).append(self._job_data(d, epoch))
        for d in result.rescheduled:
            pipe.zadd(k.due, {d.schedule_id: d.score_ms / 1000})
            pipe.hset(k.schedule(d.schedule_id), mapping={"fire_at": iso(d.fire_ms), "attempt": 1})
            if d.dropped:
                self._history(pipe, d, "missed", now_iso, count=d.dropped, next_fire_at=iso(d.fire_ms))
        for name, datas in by_queue.items():
            self._queue(name).enqueue_many(datas, pipeline=pipe)

    def _history(self, pipe: Pipeline, d: Decision, event: str, now_iso: str, **extra: Any) -> None:
        fields: Any = {"event": event, "fire_at": iso(d.fire_ms), **extra, "at": now_iso}
        pipe.xadd(self.keys.history(d.schedule_id), fields, maxlen=HISTORY_MAXLEN, approximate=True)

    def _job_data(self, d: Decision, epoch: int) -> Any:
        s = d.schedule
        assert s is not None
        fire_iso = iso(d.fire_ms)
        meta = {
            "rqbeat": {
                "schedule": d.schedule_id,
                "fire_at": fire_iso,
                "fire_ms": d.fire_ms,
                "attempt": d.attempt,
                "key": f"{d.schedule_id}:{d.fire_ms}",
                "epoch": epoch,
                "version": d.version,
                "namespace": self.keys.namespace,
            }
        }
        return Queue.prepare_data(
            s.target,
            args=list(s.args),
            kwargs=dict(s.kwargs),
            timeout=_seconds(s.timeout_ms),
            result_ttl=_seconds(s.result_ttl_ms),
            ttl=_seconds(s.ttl_ms),
            failure_ttl=_seconds(s.failure_ttl_ms),
            description=f"rqbeat {d.schedule_id} fire={fire_iso}"
            + (f" attempt={d.attempt}" if d.attempt > 1 else ""),
            job_id=d.job_id,
            meta=meta,
        )

    def _queue(self, name: str) -> Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = Queue(name, connection=self.conn, serializer=JSONSerializer)
            queue.get_redis_server_version()  # cached; must not run inside MULTI
        return queue

    def _after(self, result: BatchResult, now_ms: int, epoch: int) -> None:
        for d in result.runs:
            log.info(
                "dispatched schedule=%s fire=%s job=%s attempt=%d epoch=%d lag_ms=%d",
                d.schedule_id,
                iso(d.fire_ms),
                d.job_id,
                d.attempt,
                epoch,
                now_ms - d.fire_ms,
            )
            if d.dropped:
                log.warning("missed schedule=%s fires=%d (misfire policy)", d.schedule_id, d.dropped)
        for d in result.rescheduled:
            log.warning("skipped schedule=%s dropped=%d next=%s", d.schedule_id, d.dropped, iso(d.fire_ms))
        for d in result.broken:
            log.error("broken schedule=%s error=%s", d.schedule_id, d.error)
            k = self.keys
            scripts.run(
                self._scripts.mark_broken,
                [k.schedule(d.schedule_id), k.due, k.running, k.history(d.schedule_id)],
                [d.schedule_id, d.error[:500], iso(now_ms), HISTORY_MAXLEN],
            )


def _seconds(ms: int | None) -> int | None:
    """RQ takes whole seconds; round up so a 500ms timeout is not 0 (= no timeout)."""
    return None if ms is None else math.ceil(ms / 1000)
