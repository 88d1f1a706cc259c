"""The leader's side of backfill: one fire at a time per backfill, fenced, paced.

Each leader pass, after the live dispatch and the watchdog, looks at up to
:data:`BATCH` backfills whose time has come (``<ns>:backfills`` score <= now)::

    run in flight     RQ says finished -> ack (as the worker would have)
                      failed / lost    -> retry after the back-off, or give the fire up
                      still going      -> look again later (growing intervals)
    nothing in flight schedule paused or broken, or overlap=skip with a live run
                                       -> look again later
                      else             -> skip the fires that already succeeded, then
                                          dispatch the next one (BACKFILL_DISPATCH,
                                          fenced by the lease), or finish

So a backfill has at most one run in flight and a pass dispatches at most
:data:`BATCH` backfill fires: live fires, dispatched first in every pass, keep their
lag. A ``workers.Worker`` acks a backfill run inside RQ's own "finished" transaction
and wakes the leader, so the next fire follows at once; under a plain ``rq worker``
the leader's look is the ack.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from scheduler import backfill, cron, policy, rqkeys, scripts, stored
from scheduler.allow import AllowList
from scheduler.clock import iso, parse_iso_ms
from scheduler.engine import liveness, rqjob
from scheduler.engine.decide import _check_allowed
from scheduler.engine.watchdog import Outcome, judge, next_check_ms
from scheduler.errors import CorruptDefinition, LeadershipLost
from scheduler.jobmeta import FireMeta
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.model import Schedule
from scheduler.protocol import (
    LEADER_CANCELS,
    BackfillDispatchReply,
    BackfillOverlap,
    BackfillRunReply,
    BackfillState,
    Flag,
    ScheduleState,
)
from scheduler.records import decode_definition, text

log = logging.getLogger(__name__)

#: Backfills looked at per leader pass (each dispatches at most one fire).
BATCH = 16
#: Attempts of a backfill fire when the schedule sets no ``max_attempts``: a fire that
#: keeps failing must not hold the rest of the window for ever.
DEFAULT_ATTEMPTS = 3
#: Look again this long after finding the schedule paused, broken or busy (overlap=skip).
WAIT_MS = 1_000
#: The leader's first look at a backfill run it dispatched (the worker's ack, or its
#: nudge on a failure, usually comes first).
FIRST_LOOK_MS = 1_000
_SCHEDULE_FIELDS = ("state", "job_id", "version", *stored.DEFINITION_FIELDS)


@dataclass(frozen=True, slots=True)
class RunAck:
    """A prepared BACKFILL_ACK: computed before the transaction it joins (the worker
    adds it to RQ's "job finished" MULTI/EXEC, like :class:`scheduler.engine.runs.Ack`)."""

    keys: list[str]
    args: list[Any]

    def add_to(self, pipe: Pipeline | Redis, script_set: scripts.Scripts) -> None:
        scripts.run(script_set.backfill_ack, list(self.keys), list(self.args), client=pipe)


def prepare_ack(keys: Keys, schedule: Schedule, job_id: str, fire_ms: int, *, now_ms: int, by: str) -> RunAck:
    """The ack of backfill run ``job_id`` of ``fire_ms``; pure."""
    sid = schedule.id
    expect = cron.next_fire_ms(schedule.trigger, fire_ms)
    return RunAck(
        keys=[
            keys.backfill(sid),
            keys.backfills,
            keys.succeeded(sid),
            keys.history(sid),
            keys.events,
            keys.stats,
        ],
        args=[sid, job_id, fire_ms, expect, iso(now_ms), now_ms / 1000, HISTORY_MAXLEN, by, iso(fire_ms)],
    )


def read_schedule(conn: Redis, keys: Keys, schedule_id: str) -> Schedule | None:
    """The schedule's definition, None when it is gone or cannot be decoded."""
    try:
        return decode_definition(schedule_id, stored.read_text(conn, keys.schedule(schedule_id)))
    except ValueError:
        return None


def nudge(
    conn: Redis, script_set: scripts.Scripts, keys: Keys, schedule_id: str, job_id: str, *, now_ms: int
) -> None:
    """A worker saw backfill run ``job_id`` fail: the leader looks at it now."""
    scripts.run(
        script_set.backfill_nudge,
        [keys.backfill(schedule_id), keys.backfills, keys.events],
        [schedule_id, job_id, now_ms / 1000],
        client=conn,
    )


class Backfiller:
    """Runs the active backfills for the current leader."""

    def __init__(
        self, conn: Redis, keys: Keys, *, batch: int = BATCH, allow: AllowList | None = None
    ) -> None:
        self.conn = conn
        self.keys = keys
        self.batch = batch
        self.allow = allow
        self._scripts = scripts.Scripts(conn)

    def step(self, now_ms: int, token: str, epoch: int) -> int:
        """Look at the backfills due at ``now_ms``; returns how many. Raises
        :class:`LeadershipLost` when a dispatch finds the lease another's."""
        due: Any = self.conn.zrangebyscore(self.keys.backfills, "-inf", now_ms / 1000, 0, self.batch)
        ids = [str(text(m)) for m in due]
        if not ids:
            return 0
        pipe = self.conn.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(self.keys.backfill(sid))
            pipe.hmget(self.keys.schedule(sid), _SCHEDULE_FIELDS)
        replies = pipe.execute()
        for i, sid in enumerate(ids):
            self._one(sid, replies[2 * i], replies[2 * i + 1], now_ms, token=token, epoch=epoch)
        return len(ids)

    def _one(
        self, sid: str, raw: dict[Any, Any], row: list[Any], now_ms: int, *, token: str, epoch: int
    ) -> None:
        try:
            status = backfill.Status.of(sid, raw) if raw else None
        except (KeyError, ValueError) as exc:
            self._cancel(sid, f"its record is damaged: {exc}", now_ms)
            return
        if status is None or status.state is not BackfillState.ACTIVE:
            self.conn.zrem(self.keys.backfills, sid)  # finished or gone: nothing to look at
            return
        state, live_job, _version = (text(v) for v in row[:3])
        definition = stored.row_text(stored.DEFINITION_FIELDS, row[3:])
        if definition is None:
            self._cancel(sid, "the schedule was removed", now_ms)
            return
        try:
            schedule = decode_definition(sid, definition)
            if self.allow is not None:
                _check_allowed(sid, schedule.target, self.allow)
        except CorruptDefinition as exc:
            self._cancel(sid, str(exc), now_ms)
            return
        if status.job_id is not None:
            self._check_run(schedule, status, raw, now_ms)
            return
        if state not in (ScheduleState.DUE, ScheduleState.RUNNING) or (
            status.overlap is BackfillOverlap.SKIP and live_job is not None
        ):
            self._look_later(sid, now_ms + WAIT_MS)
            return
        self._advance(schedule, status, now_ms, token, epoch)

    def _advance(
        self, schedule: Schedule, status: backfill.Status, now_ms: int, token: str, epoch: int
    ) -> None:
        sid = schedule.id
        members = self.conn.zrangebyscore(self.keys.succeeded(sid), status.after_ms + 1, "+inf")
        nxt = backfill.next_fire(
            schedule.trigger,
            status.after_ms,
            status.to_ms,
            backfill.parse_chains(members),
            force=status.force,
        )
        head = [token, sid, status.after_ms, nxt.after_ms, nxt.skipped, iso(now_ms), now_ms / 1000]
        head += [HISTORY_MAXLEN, epoch, (now_ms + FIRST_LOOK_MS) / 1000]
        if nxt.fire_ms is None:
            mode = "done" if nxt.done else "skip"
            reply = self._dispatch(head, [mode])
            if reply is BackfillDispatchReply.DONE:
                log.info("backfill done schedule=%s epoch=%d", sid, epoch)
            return
        job = backfill.job_id(sid, nxt.fire_ms, status.attempt)
        template = rqjob.JobTemplate.of(schedule)
        fire_iso = iso(nxt.fire_ms)
        meta = FireMeta(
            schedule=sid,
            fire_at=fire_iso,
            fire_ms=nxt.fire_ms,
            attempt=status.attempt,
            epoch=epoch,
            version="",
            namespace=self.keys.namespace,
            backfill=True,
        ).to_meta()
        retry = f" attempt={status.attempt}" if status.attempt > 1 else ""
        fields = template.fields_for(f"rqbeat {sid} fire={fire_iso} backfill{retry}", meta)
        body = ["run", nxt.fire_ms, fire_iso, status.attempt, job, rqkeys.JOB_PREFIX, rqkeys.QUEUE_PREFIX]
        body += [template.queue, template.ttl_s, rqjob.rq_timestamp(now_ms), *fields]
        if self._dispatch(head, body) is BackfillDispatchReply.DISPATCHED:
            log.info(
                "backfill dispatched schedule=%s fire=%s job=%s attempt=%d epoch=%d",
                sid, fire_iso, job, status.attempt, epoch,
            )  # fmt: skip

    def _dispatch(self, head: list[Any], body: list[Any]) -> BackfillDispatchReply:
        k = self.keys
        sid = head[1]
        keys = [k.leader, k.backfill(sid), k.backfills, k.history(sid), rqkeys.QUEUES, k.queues, k.stats]
        reply = BackfillDispatchReply(scripts.run(self._scripts.backfill_dispatch, keys, [*head, *body]))
        if reply is BackfillDispatchReply.DEPOSED:
            raise LeadershipLost("the lease changed hands during a backfill dispatch")
        return reply

    def _check_run(
        self, schedule: Schedule, status: backfill.Status, raw: dict[Any, Any], now_ms: int
    ) -> None:
        """The run in flight: ack it, fail it, or look again later (read-only looks)."""
        assert status.job_id is not None and status.fire_ms is not None
        job = status.job_id
        life = liveness.read(self.conn, [job])[job]
        verdict = judge(life.status, life.alive, now_ms)
        sid = schedule.id
        if verdict.outcome is Outcome.SUCCEEDED:
            ack = prepare_ack(self.keys, schedule, job, status.fire_ms, now_ms=now_ms, by="leader")
            if (
                BackfillRunReply(scripts.run(self._scripts.backfill_ack, ack.keys, ack.args))
                is BackfillRunReply.DONE
            ):
                log.info("backfill acked schedule=%s fire=%s job=%s by=leader", sid, iso(status.fire_ms), job)
            return
        if verdict.outcome is Outcome.PENDING:
            dispatched = text(raw.get(b"dispatched_at") or raw.get("dispatched_at"))
            since = parse_iso_ms(dispatched) if dispatched else now_ms
            self._look_later(sid, next_check_ms(since, now_ms))
            return
        limit = schedule.max_attempts or DEFAULT_ATTEMPTS
        give_up = status.attempt >= limit
        retry_ms = now_ms if give_up else now_ms + policy.backoff_ms(sid, status.fire_ms, status.attempt)
        k = self.keys
        scripts.run(
            self._scripts.backfill_fail,
            [k.backfill(sid), k.backfills, k.history(sid), k.stats, k.events],
            [
                sid,
                job,
                status.fire_ms,
                Flag.of(give_up),
                retry_ms / 1000,
                iso(now_ms),
                verdict.reason,
                HISTORY_MAXLEN,
                iso(status.fire_ms),
            ],
        )
        log.warning(
            "backfill run failed schedule=%s fire=%s job=%s attempt=%d then=%s reason=%r",
            sid, iso(status.fire_ms), job, status.attempt, "gave_up" if give_up else "retry", verdict.reason,
        )  # fmt: skip

    def _look_later(self, sid: str, at_ms: int) -> None:
        self.conn.zadd(self.keys.backfills, {sid: at_ms / 1000}, xx=True)

    def _cancel(self, sid: str, why: str, now_ms: int) -> None:
        log.warning("backfill canceled schedule=%s reason=%s", sid, why)
        k = self.keys
        scripts.run(
            self._scripts.backfill_cancel,
            [k.backfill(sid), k.backfills, k.history(sid), k.schedule(sid), k.log],
            [sid, why[:500], iso(now_ms), HISTORY_MAXLEN, LEADER_CANCELS, ""],
        )
