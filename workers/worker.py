"""``workers.Worker``: an ``rq.Worker`` whose success is also the schedule's ack.

The ack lives in :class:`AckingWorker`, on RQ's ``BaseWorker``; ``Worker`` is it on
RQ's forking worker, :class:`workers.modes.SimpleWorker` on RQ's non-forking one,
and :mod:`workers.modes` runs either in RQ's ``WorkerPool``.

RQ marks a job finished in one MULTI/EXEC (``Worker.handle_job_success``). This
class adds rqbeat's compare-and-set ACK script to that very transaction, through the
``cleanup_execution(job, pipeline)`` hook RQ calls inside it, so "RQ says finished"
and "schedule re-armed at its next fire" happen together or not at all. The next
fire is computed *before* the transaction, from the definition, the fire that ran
and Redis time. ``tests/integration/test_worker_hook.py`` fails loudly if RQ moves
that hook. RQ 2.12 and 3.x differ in the signatures overridden here; the
difference lives in :mod:`workers.rqcompat`.

If the worker dies between the job and the EXEC, nothing is acked and the leader's
watchdog decides later from RQ's state; a failed job nudges the watchdog to look now.
Redis going away (restart, failover, ``OOM``) does not end the worker: see
:mod:`workers.resilience`.

Nothing here decides by this machine's clock. It is measured against Redis ``TIME``
at start and on heartbeats (:mod:`workers.clockoffset`) so that ``rqbeat status`` and
``rqbeat check`` can show a skewed worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from redis.client import Pipeline
from redis.exceptions import NoScriptError, RedisError
from rq import Queue
from rq import Worker as RQWorker
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from scheduler import clockskew, scripts
from scheduler.clock import iso, redis_now_ms, time_reply_ms
from scheduler.engine import backfiller, concurrent, runs
from scheduler.errors import CorruptJobMeta
from scheduler.jobmeta import FireMeta
from scheduler.keys import Keys
from scheduler.protocol import STARTED_NOW
from workers import presence, rqcompat
from workers.clockoffset import ClockProbe
from workers.importfail import import_problem
from workers.resilience import NUDGE_PATIENCE_S, TRANSIENT, Resilience

log = logging.getLogger(__name__)

AnyAck = runs.Ack | backfiller.RunAck | concurrent.RunAck


@dataclass(frozen=True, slots=True)
class PendingAck:
    """A run's ack, prepared before RQ's success transaction it joins. ``loaded``: the
    ACK script was just seen in Redis's cache, so it goes in as a bare EVALSHA,
    without the SCRIPT EXISTS round trip redis-py makes for a script in a pipeline."""

    job_id: str
    ack: AnyAck
    loaded: bool = False


#: Slack on top of the job monitoring interval before a silent worker's run counts as
#: abandoned. RQ uses 60 s; a scheduler wants failures noticed sooner.
DEFAULT_HEARTBEAT_GRACE_S = 10


class AckingWorker(Resilience, BaseWorker):
    """What every rqbeat worker adds to RQ's, whichever way it runs jobs: the atomic
    ack, the started mark, the nudge on failure, its clock and presence, and one line
    for a target that does not import. JSON serializer by default."""

    heartbeat_grace_s: int = DEFAULT_HEARTBEAT_GRACE_S
    #: The namespace the worker records its clock offset, RQ version and key prefix in
    #: (workers.clockoffset, workers.presence); empty: $RQBEAT_NAMESPACE, else rqbeat's
    #: default. ``rqbeat worker`` sets its --namespace.
    rqbeat_namespace: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("serializer") is None:
            kwargs["serializer"] = JSONSerializer
        super().__init__(*args, **kwargs)
        self._rqbeat_scripts = scripts.Scripts(self.connection)
        self._rqbeat_ack: PendingAck | None = None
        self._rqbeat_unimportable: tuple[str, str] | None = None  # (job id, the one line)

    def prepare_job_execution(self, job: Job, *args: Any, **kwargs: Any) -> None:
        super().prepare_job_execution(job, *args, **kwargs)
        self._mark_started(job)

    def _mark_started(self, job: Job) -> None:
        """Record in the schedule's hash that this run started (Redis time) and where:
        queued and running are told apart by it. Best effort: the leader's watchdog
        marks it from RQ's state when this cannot (the job runs either way)."""
        fire = _fire_of(job)
        if fire is None or fire.backfill:  # not one of the schedule's live runs
            return
        keys = Keys(fire.namespace)
        try:
            if fire.concurrent:  # an allow_all run: no longer queued (its own member)
                self.connection.zrem(keys.queued, concurrent.member(fire.schedule, fire.fire_ms))
                return
            scripts.run(
                self._rqbeat_scripts.start,
                [keys.schedule(fire.schedule), keys.queued],
                [fire.schedule, job.id, STARTED_NOW, self.name],  # Redis TIME, read by the script
            )
        except RedisError as exc:
            log.warning(
                "could not mark the run started schedule=%s fire=%s job_id=%s epoch=%s error=%s",
                fire.schedule, fire.fire_at, job.id, fire.epoch, exc,
            )  # fmt: skip

    def register_birth(self) -> None:
        super().register_birth()  # type: ignore[no-untyped-call]
        presence.announce(self.connection, self._rqbeat_keys, self.key, self.name, self.queue_names())
        self._rqbeat_clock.measure(self.worker_ttl + 60)

    def register_death(self) -> None:
        presence.withdraw(self.connection, self._rqbeat_keys, self.key, self.name)
        super().register_death()  # type: ignore[no-untyped-call]

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if pipeline is None:  # the loop's own beats (each dequeue round), not the horse's
            self.outage.call(lambda: self._beat_and_check(timeout), "heartbeat")
        else:
            super().heartbeat(timeout, pipeline)
        self._rqbeat_clock.maybe_measure(self.worker_ttl + 60)

    def _beat_and_check(self, timeout: int | None) -> None:
        """RQ's beat and the registration check in one round trip (RQ's own beat
        alone sends each of its writes by itself; the loop beats several times per
        job). Then register again when Redis lost this worker's registration with its
        data (a restart without persistence, a flush): RQ registers only at the start,
        so ``rq info`` and ``rqbeat check`` would see nobody serving these queues for as
        long as the worker runs. Its key alone proves nothing: the beat re-creates it
        (partial), and RQ's birth refuses an existing key, hence the delete first.
        Idempotent writes: safe under :class:`Outage`'s retry."""
        pipe = self.connection.pipeline(transaction=False)
        pipe.sismember(self.redis_workers_keys, self.key)
        super().heartbeat(timeout, pipe)
        if not pipe.execute()[0]:
            log.warning("worker registration lost with Redis's data, registering again worker=%s", self.name)
            self.connection.delete(self.key)
            self.register_birth()

    @cached_property
    def _rqbeat_keys(self) -> Keys:
        """The namespace this worker reports in (its runs carry their own)."""
        return presence.keys_for(self.rqbeat_namespace)

    @cached_property
    def _rqbeat_clock(self) -> ClockProbe:
        return ClockProbe(self.connection, self._rqbeat_keys, self.name)

    # **rq_args: what RQ 3 adds (the execution), passed on as given (workers.rqcompat)
    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, **rq_args: Any
    ) -> None:
        # reads only, so retried until Redis answers (the success below waits too)
        pending = self._rqbeat_ack = self.outage.call(
            lambda: self._prepare_ack(job), f"reading the run of {job.id}"
        )
        try:
            super().handle_job_success(job, queue, started_job_registry, **rq_args)
        except NoScriptError:
            if pending is None or not self._finished(job):
                raise
            self._ack_alone(job, pending)
        finally:
            self._rqbeat_ack = None

    def cleanup_execution(self, job: Job, pipeline: Pipeline, **rq_args: Any) -> None:
        super().cleanup_execution(job, pipeline, **rq_args)
        pending = self._rqbeat_ack
        if pending is None or pending.job_id != job.id:
            return
        if pending.loaded and isinstance(pending.ack, runs.Ack):
            pending.ack.add_loaded(pipeline, self._rqbeat_scripts)
            # a resent transaction (the connection dropped: Redis may have restarted
            # without its scripts) takes redis-py's checked way
            self._rqbeat_ack = replace(pending, loaded=False)
            return
        pending.ack.add_to(pipeline, self._rqbeat_scripts)

    def _finished(self, job: Job) -> bool:
        """Whether RQ recorded the job finished: the success transaction applied."""
        try:
            return bool(self.outage.call(job.get_status, f"reading job {job.id}") == JobStatus.FINISHED)
        except InvalidJobOperation:
            return True  # result_ttl=0: the transaction deleted the job, so it applied

    def _ack_alone(self, job: Job, pending: PendingAck) -> None:
        """RQ's success applied but the ACK in it answered NOSCRIPT (Redis's script
        cache flushed since it was checked): ack now, by itself, with the script
        loaded again. Its compare-and-set makes it safe to resend; the watchdog would
        do the same from RQ's state, later."""
        log.warning(
            "ack script missing from Redis's cache (SCRIPT FLUSH?), acking by itself job_id=%s", job.id
        )
        self.outage.call(
            lambda: pending.ack.add_to(self.connection, self._rqbeat_scripts),
            f"acking {job.id}",
            NUDGE_PATIENCE_S,
        )

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """RQ logs the traceback here (then records the failure): for a target that
        does not import, one line instead, which :meth:`handle_job_failure` records as
        the run's error (RQ's ``exc_string``, what ``rqbeat history`` shows)."""
        problem = import_problem(job, exc_info[1] if len(exc_info) > 1 else None)
        if problem is None:
            super().handle_exception(job, *exc_info)
            return
        self._rqbeat_unimportable = (job.id, problem)
        fire = _fire_of(job)
        log.error(
            "%s job_id=%s queue=%s schedule=%s attempt=%s (is the app on this worker's --path?)",
            problem, job.id, job.origin, fire.schedule if fire else "-", fire.attempt if fire else "-",
        )  # fmt: skip
        for handler in self._exc_handlers:  # RQ's exception handlers still run (Sentry)
            goes_on = handler(job, *exc_info)
            if goes_on is not None and not goes_on:  # RQ's rule: an explicit falsy ends the chain
                break

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = "", **rq_args: Any
    ) -> None:
        pending, self._rqbeat_unimportable = self._rqbeat_unimportable, None
        if pending is not None and pending[0] == job.id:
            exc_string = pending[1]
        super().handle_job_failure(
            job, queue, started_job_registry=started_job_registry, exc_string=exc_string, **rq_args
        )
        fire = _fire_of(job)
        if fire is not None:
            keys = Keys(fire.namespace)
            sid = fire.schedule
            log.info(
                "run failed schedule=%s fire=%s job_id=%s attempt=%s epoch=%s (the leader decides the retry)",
                sid, fire.fire_at, job.id, fire.attempt, fire.epoch,
            )  # fmt: skip
            self._nudge(keys, sid, job.id, fire.backfill, fire if fire.concurrent else None)

    def _nudge(
        self, keys: Keys, sid: str, job_id: str, backfill: bool = False, run_of: FireMeta | None = None
    ) -> None:
        """Bring the watchdog's look at the failed run forward. Retried, since it is
        idempotent (ZADD XX of "now" + a wake-up), but only briefly and never fatal:
        without it the watchdog still finds the failure at its next look."""

        def nudge() -> None:
            now = redis_now_ms(self.connection)
            if run_of is not None:  # one of an allow_all schedule's runs
                concurrent.nudge(self.connection, self._rqbeat_scripts, keys, run_of, job_id, now_ms=now)
                return
            if backfill:
                backfiller.nudge(self.connection, self._rqbeat_scripts, keys, sid, job_id, now_ms=now)
                return
            keys_ = [keys.schedule(sid), keys.running, keys.events]
            scripts.run(
                self._rqbeat_scripts.nudge, keys_, [sid, job_id, now / 1000, now]
            )  # now: the run's end

        try:
            self.outage.call(nudge, f"nudging the watchdog for {job_id}", NUDGE_PATIENCE_S)
        except TRANSIENT as exc:
            log.warning(
                "could not nudge the watchdog schedule=%s job_id=%s error=%s (it looks at the run later)",
                sid, job_id, exc,
            )  # fmt: skip

    def _prepare_ack(self, job: Job) -> PendingAck | None:
        fire = _fire_of(job)
        if fire is None:
            return None
        keys = Keys(fire.namespace)
        if fire.backfill:
            return self._prepare_backfill_ack(job, fire, keys)
        if fire.concurrent:
            return self._prepare_concurrent_ack(job, fire, keys)
        # one round trip: the run, Redis time, and whether ACK is in the script cache
        pipe = self.connection.pipeline(transaction=False)
        pipe.hmget(keys.schedule(fire.schedule), runs.IN_FLIGHT_FIELDS)
        pipe.time()
        pipe.script_exists(self._rqbeat_scripts.ack.sha)
        row, now_reply, loaded = pipe.execute()
        run = runs.decode_in_flight(fire.schedule, row)
        if run is None or run.job_id != job.id:
            return None  # stale: removed, re-dispatched or already acked; nothing to do
        now_ms = time_reply_ms(now_reply)
        # ended_at is this machine's clock: only the time since then is used, from Redis now
        ended_ms = clockskew.ended_redis_ms(job.ended_at, now_ms, time.time_ns() // 1_000_000)
        ack = runs.prepare_ack(keys, run, now_ms, by="worker", ended_ms=ended_ms)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "run succeeded schedule=%s fire=%s job_id=%s attempt=%d epoch=%d (acking)",
                run.schedule_id, iso(run.fire_ms), job.id, run.attempt, run.epoch,
            )  # fmt: skip
        return PendingAck(job.id, ack, loaded=all(loaded))

    def _prepare_backfill_ack(self, job: Job, fire: FireMeta, keys: Keys) -> PendingAck | None:
        """A backfill run's ack: compare-and-set on the backfill's run in flight, so a
        stale one (canceled, already acked by the leader) does nothing."""
        schedule = backfiller.read_schedule(self.connection, keys, fire.schedule)
        if schedule is None:
            return None  # removed meanwhile: its backfill went with it
        now_ms = redis_now_ms(self.connection)
        log.info(
            "backfill run succeeded schedule=%s fire=%s job_id=%s attempt=%d epoch=%d (acking)",
            fire.schedule, fire.fire_at, job.id, fire.attempt, fire.epoch,
        )  # fmt: skip
        return PendingAck(
            job.id, backfiller.prepare_ack(keys, schedule, job.id, fire.fire_ms, now_ms=now_ms, by="worker")
        )

    def _prepare_concurrent_ack(self, job: Job, fire: FireMeta, keys: Keys) -> PendingAck | None:
        """One ``allow_all`` run's ack: compare-and-set on its own record, so a stale one
        (already acked by the leader, the schedule removed) does nothing."""
        schedule = backfiller.read_schedule(self.connection, keys, fire.schedule)
        now_ms = redis_now_ms(self.connection)
        log.info(
            "run succeeded schedule=%s fire=%s job_id=%s attempt=%d epoch=%d (acking, allow_all)",
            fire.schedule, fire.fire_at, job.id, fire.attempt, fire.epoch,
        )  # fmt: skip
        ack = concurrent.prepare_ack(
            keys, schedule, fire.schedule, job.id, fire.fire_ms, now_ms=now_ms, by="worker"
        )
        return PendingAck(job.id, ack)


class Worker(AckingWorker, RQWorker):
    """An RQ (forking) worker that acknowledges rqbeat runs atomically: each job runs
    in a work horse forked for it; the worker heartbeats the run meanwhile."""

    def get_heartbeat_ttl(self, job: Job, working_time: float | None = None) -> int:
        if job.timeout and job.timeout > 0:
            remaining = job.timeout - rqcompat.working_time_s(self, working_time)
            return int(min(remaining, self.job_monitoring_interval)) + self.heartbeat_grace_s
        return int(self.job_monitoring_interval) + self.heartbeat_grace_s


def _fire_of(job: Job) -> FireMeta | None:
    """The job's fire; None for a job rqbeat did not enqueue, or whose meta is damaged
    (then the watchdog concludes the run from RQ's state)."""
    try:
        return FireMeta.from_meta(job.meta)
    except CorruptJobMeta as exc:
        log.warning("job_id=%s carries an unreadable rqbeat meta (%s); not acking it here", job.id, exc)
        return None
