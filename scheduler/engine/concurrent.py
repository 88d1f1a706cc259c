"""The leader's side of ``overlap = allow_all``: watch, retry and end each run.

Dispatch starts each run (a *spawn*: :data:`scheduler.scripts.DISPATCH`) with its own
record in ``<ns>:runs:<id>`` and its own member in ``<ns>:concurrent``. Each leader
pass, after the live dispatch and the watchdog, looks at up to :data:`BATCH` runs
whose time has come::

    schedule gone           -> forget the run (CONC_DROP)
    running  RQ finished    -> ack, as the worker would have (CONC_ACK)
             failed / lost  -> retry after the back-off (CONC_FAIL), or give the fire
                               up after max_attempts (CONC_ACK, gave_up)
             still going    -> look again later (growing intervals)
    retry    schedule due   -> enqueue the next attempt, fenced (CONC_REDISPATCH)
             paused, broken -> look again later

So every run is at least once per fire: nothing but an ack or a give-up ends its
record, and the record lives in Redis, where a new leader finds it. A
``workers.Worker`` acks a run inside RQ's own "finished" transaction (:func:`prepare_ack`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from scheduler import cron, policy, rqkeys, scripts, stored, thresholds
from scheduler.clock import iso, parse_iso_ms
from scheduler.engine import clusterstats, liveness, rqjob
from scheduler.engine.watchdog import Outcome, error_text, judge, next_check_ms
from scheduler.errors import LeadershipLost
from scheduler.jobmeta import FireMeta
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.model import Schedule
from scheduler.protocol import AckOutcome, ConcurrentReply, RedispatchReply, RunState, ScheduleState
from scheduler.records import decode_definition, text

log = logging.getLogger(__name__)

#: Runs looked at per leader pass.
BATCH = 64
#: Look again this long after finding the schedule paused or broken (a retry waits).
WAIT_MS = 1_000
#: The first look at a run just enqueued (the worker's ack usually comes first).
FIRST_LOOK_MS = 1_000
_SCHEDULE_FIELDS = ("state", *stored.DEFINITION_FIELDS)


@dataclass(frozen=True, slots=True)
class Run:
    """One ``allow_all`` run's record (``<ns>:runs:<id>`` field ``fire_ms``)."""

    schedule_id: str
    fire_ms: int
    job_id: str
    attempt: int
    epoch: int
    dispatched_at: str
    queue: str
    state: RunState

    @classmethod
    def decode(cls, schedule_id: str, fire_ms: int, raw: Any) -> Run:
        """Raises ValueError (or KeyError) for a damaged record."""
        data = json.loads(text(raw) or "")
        return cls(
            schedule_id,
            fire_ms,
            str(data["job_id"]),
            int(data["attempt"]),
            int(data["epoch"]),
            str(data["dispatched_at"]),
            str(data["queue"]),
            RunState(data["state"]),
        )

    @property
    def member(self) -> str:
        return member(self.schedule_id, self.fire_ms)


def member(schedule_id: str, fire_ms: int) -> str:
    """The run's member of ``<ns>:concurrent`` (schedule ids have no ':')."""
    return f"{schedule_id}:{fire_ms}"


def job_id(schedule_id: str, fire_ms: int, attempt: int) -> str:
    """The job id of one attempt of one fire, as for any run: unique per try."""
    return f"{schedule_id}-{fire_ms}-{attempt}"


def read_runs(conn: Redis, keys: Keys, schedule_id: str) -> list[Run]:
    """The schedule's runs in flight (or waiting for their retry), oldest fire first;
    damaged records are left out (the leader drops nothing it cannot read)."""
    out = []
    for fire, raw in (conn.hgetall(keys.runs(schedule_id)) or {}).items():
        try:
            out.append(Run.decode(schedule_id, int(text(fire) or ""), raw))
        except (ValueError, KeyError):
            continue
    return sorted(out, key=lambda r: r.fire_ms)


@dataclass(frozen=True, slots=True)
class RunAck:
    """A prepared CONC_ACK: computed before the transaction it joins (the worker adds
    it to RQ's "job finished" MULTI/EXEC, like :class:`scheduler.engine.runs.Ack`)."""

    keys: list[str]
    args: list[Any]

    def add_to(self, pipe: Pipeline | Redis, script_set: scripts.Scripts) -> None:
        scripts.run(script_set.conc_ack, list(self.keys), list(self.args), client=pipe)


def prepare_ack(
    keys: Keys,
    schedule: Schedule | None,
    sid: str,
    job: str,
    fire_ms: int,
    *,
    now_ms: int,
    by: str,
    outcome: AckOutcome = AckOutcome.SUCCEEDED,
    error: str = "",
) -> RunAck:
    """The end of run ``job`` of ``fire_ms``, with the cluster-wide counters it adds
    (an ack ``by`` the worker or the leader's watchdog); pure (``schedule`` None: removed)."""
    stale_ms = thresholds.limits_at(schedule, fire_ms).stale_after_ms if schedule else 0
    expect_ms = cron.next_fire_ms(schedule.trigger, fire_ms) if schedule else fire_ms
    stats = (
        clusterstats.ack_increments(by=by, latency_ms=None, dropped=0)
        if outcome is AckOutcome.SUCCEEDED
        else []
    )
    return RunAck(
        keys=[
            keys.schedule(sid), keys.runs(sid), keys.concurrent, keys.due, keys.history(sid), keys.events,
            keys.stale, keys.stats, keys.alerts, keys.failing, keys.succeeded(sid), keys.queued,
        ],
        args=[
            sid, fire_ms, job, outcome, error[:500], iso(now_ms), now_ms / 1000, HISTORY_MAXLEN, iso(fire_ms),
            by, (now_ms + stale_ms) / 1000, expect_ms, *stats,
        ],
    )  # fmt: skip


def nudge(
    conn: Redis, script_set: scripts.Scripts, keys: Keys, fire: FireMeta, job: str, *, now_ms: int
) -> None:
    """A worker saw run ``job`` fail: the leader looks at it now."""
    sid = fire.schedule
    scripts.run(
        script_set.conc_nudge,
        [keys.runs(sid), keys.concurrent, keys.events],
        [sid, fire.fire_ms, job, now_ms / 1000],
        client=conn,
    )


class Concurrent:
    """Watches, retries and ends the ``allow_all`` runs for the current leader."""

    def __init__(self, conn: Redis, keys: Keys, *, batch: int = BATCH) -> None:
        self.conn = conn
        self.keys = keys
        self.batch = batch
        self._scripts = scripts.Scripts(conn)

    def step(self, now_ms: int, token: str, epoch: int) -> int:
        """Look at the runs due at ``now_ms``; returns how many. Raises
        :class:`~scheduler.errors.LeadershipLost` when a retry finds the lease another's."""
        due: Any = self.conn.zrangebyscore(self.keys.concurrent, "-inf", now_ms / 1000, 0, self.batch)
        members = [str(text(m)) for m in due]
        pipe = self.conn.pipeline(transaction=False)
        for m in members:
            sid, fire = m.rsplit(":", 1)
            pipe.hget(self.keys.runs(sid), fire)
            pipe.hmget(self.keys.schedule(sid), _SCHEDULE_FIELDS)
        replies = pipe.execute() if members else []
        for i, m in enumerate(members):
            self._one(m, replies[2 * i], replies[2 * i + 1], now_ms, token=token, epoch=epoch)
        return len(members)

    def _one(self, m: str, raw: Any, row: list[Any], now_ms: int, *, token: str, epoch: int) -> None:
        sid, fire = m.rsplit(":", 1)
        try:
            run = Run.decode(sid, int(fire), raw) if raw is not None else None
        except (ValueError, KeyError) as exc:
            log.error("unreadable allow_all run schedule=%s fire_ms=%s error=%s (left as is)", sid, fire, exc)
            self._look_later(m, now_ms + WAIT_MS * 30)
            return
        state = text(row[0])
        definition = stored.row_text(stored.DEFINITION_FIELDS, row[1:])
        if run is None or definition is None:
            self._drop(sid, fire, run, now_ms)
            return
        try:
            schedule = decode_definition(sid, definition)
        except ValueError:
            schedule = None
        if run.state is RunState.RETRY:
            if schedule is None or state not in (ScheduleState.DUE, ScheduleState.COMPLETED):
                self._look_later(m, now_ms + WAIT_MS)  # paused or broken: the retry waits
                return
            self._redispatch(schedule, run, now_ms, token, epoch)
            return
        self._check(schedule, run, now_ms)

    def _check(self, schedule: Schedule | None, run: Run, now_ms: int) -> None:
        life = liveness.read(self.conn, [run.job_id])[run.job_id]
        verdict = judge(life.status, life.alive, now_ms)
        sid = run.schedule_id
        if verdict.outcome is Outcome.PENDING:
            if life.status != "queued":  # started (a plain rq worker does not say so itself)
                self.conn.zrem(self.keys.queued, run.member)
            self._look_later(run.member, next_check_ms(_ms(run.dispatched_at, now_ms), now_ms))
            return
        if verdict.outcome is Outcome.SUCCEEDED:
            self._end(schedule, run, now_ms, AckOutcome.SUCCEEDED, "")
            return
        reason = error_text(self.conn, run.job_id) or verdict.reason
        if schedule is None or policy.gives_up(schedule, run.attempt):
            self._end(schedule, run, now_ms, AckOutcome.GAVE_UP, reason)
            return
        retry_ms = now_ms + policy.backoff_ms(sid, run.fire_ms, run.attempt)
        k = self.keys
        reply = scripts.run(
            self._scripts.conc_fail,
            [k.schedule(sid), k.runs(sid), k.concurrent, k.history(sid), k.queued],
            [
                sid, run.fire_ms, run.job_id, retry_ms / 1000, iso(retry_ms), reason[:500],
                iso(now_ms), HISTORY_MAXLEN, iso(run.fire_ms),
            ],
        )  # fmt: skip
        if ConcurrentReply(reply) is ConcurrentReply.DONE:
            log.warning(
                "run failed schedule=%s fire=%s job_id=%s attempt=%d retry_at=%s reason=%r (allow_all)",
                sid, iso(run.fire_ms), run.job_id, run.attempt, iso(retry_ms), reason,
            )  # fmt: skip

    def _end(self, schedule: Schedule | None, run: Run, now_ms: int, outcome: AckOutcome, error: str) -> None:
        sid = run.schedule_id
        ack = prepare_ack(
            self.keys,
            schedule,
            sid,
            run.job_id,
            run.fire_ms,
            now_ms=now_ms,
            by="watchdog",
            outcome=outcome,
            error=error,
        )
        if ConcurrentReply(scripts.run(self._scripts.conc_ack, ack.keys, ack.args)) is ConcurrentReply.DONE:
            log.info(
                "run %s schedule=%s fire=%s job_id=%s attempt=%d by=watchdog (allow_all)",
                outcome, sid, iso(run.fire_ms), run.job_id, run.attempt,
            )  # fmt: skip

    def _redispatch(self, schedule: Schedule, run: Run, now_ms: int, token: str, epoch: int) -> None:
        sid = schedule.id
        job = job_id(sid, run.fire_ms, run.attempt)
        template = rqjob.JobTemplate.of(schedule)
        fire_iso = iso(run.fire_ms)
        meta = FireMeta(
            schedule=sid,
            fire_at=fire_iso,
            fire_ms=run.fire_ms,
            attempt=run.attempt,
            epoch=epoch,
            version="",
            namespace=self.keys.namespace,
            concurrent=True,
        ).to_meta()
        fields = template.fields_for(f"rqbeat {sid} fire={fire_iso} attempt={run.attempt}", meta)
        k = self.keys
        reply = RedispatchReply(
            scripts.run(
                self._scripts.conc_redispatch,
                [k.leader, k.runs(sid), k.concurrent, k.history(sid), rqkeys.QUEUES, k.queues, k.queued],
                [
                    token,
                    sid,
                    run.fire_ms,
                    run.attempt,
                    job,
                    rqkeys.JOB_PREFIX,
                    rqkeys.QUEUE_PREFIX,
                    template.queue,
                    template.ttl_s,
                    rqjob.rq_timestamp(now_ms),
                    iso(now_ms),
                    now_ms / 1000,
                    epoch,
                    (now_ms + FIRST_LOOK_MS) / 1000,
                    HISTORY_MAXLEN,
                    fire_iso,
                    (now_ms + thresholds.limits_at(schedule, run.fire_ms).max_queued_ms) / 1000,
                    *fields,
                ],
            )
        )
        if reply is RedispatchReply.DEPOSED:
            raise LeadershipLost("the lease changed hands during an allow_all retry")
        if reply is RedispatchReply.ENQUEUED:
            log.info(
                "dispatched schedule=%s fire=%s job=%s attempt=%d epoch=%d (allow_all retry)",
                sid, fire_iso, job, run.attempt, epoch,
            )  # fmt: skip

    def _drop(self, sid: str, fire: str, run: Run | None, now_ms: int) -> None:
        k = self.keys
        reply = scripts.run(
            self._scripts.conc_drop,
            [k.schedule(sid), k.runs(sid), k.concurrent, k.due, k.events, k.queued],
            [sid, fire, run.job_id if run else "", now_ms / 1000],
        )
        if ConcurrentReply(reply) is ConcurrentReply.DONE and run is not None:
            log.warning(
                "dropped allow_all run schedule=%s fire_ms=%s job_id=%s (schedule removed)",
                sid,
                fire,
                run.job_id,
            )

    def _look_later(self, m: str, at_ms: int) -> None:
        self.conn.zadd(self.keys.concurrent, {m: at_ms / 1000}, xx=True)


def _ms(at: str, default: int) -> int:
    try:
        return parse_iso_ms(at)
    except ValueError:
        return default
