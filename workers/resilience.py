"""A worker that outlives Redis: it waits through a restart, a failover or ``OOM``.

RQ's worker loop quits on most Redis errors (``TimeoutError``, any error outside the
dequeue, an ``OOM`` from its maintenance) and its work-horse monitor gives up the
horse when a heartbeat cannot be written. :class:`Resilience` overrides those steps,
and only those, so that ``rqbeat worker`` waits and reconnects instead:

- idempotent steps (heartbeats, the worker's state, reads) are retried with tenacity
  until Redis answers (:class:`Outage`: one WARNING when the wait starts, one when it
  ends, DEBUG in between);
- while a horse runs, a heartbeat that cannot be written is skipped, never fatal: the
  job goes on, and the monitor keeps its local kill-on-timeout check;
- a finished job's success transaction (RQ's, with rqbeat's ACK inside) is a
  non-idempotent write: it is never resent blindly. After an error the job's status is
  read back: FINISHED (or the job gone with ``result_ttl=0``) means the EXEC applied;
  otherwise nothing was written (a refused MULTI writes nothing) and it is sent again.
  When Redis stays away longer than :data:`ACK_PATIENCE_S` the horse gives up, RQ's
  failure path runs, and the leader's watchdog judges the run from RQ's state later;
  the ACK's compare-and-set makes every ack after the first a no-op.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis.exceptions
from redis import Redis
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.queue import Queue
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, stop_never
from tenacity import wait_exponential as backoff

from scheduler.outage import WaitThroughMigration

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors that mean "Redis is away or full for now", not "this request is wrong":
#: restart (connection refused/reset), failover (READONLY, LOADING, master unknown),
#: a hung server (timeout) and ``OOM`` under ``maxmemory-policy noeviction``.
TRANSIENT: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)
#: Longest pause between tries; short enough that a 3 s restart costs about 3 s.
MAX_PAUSE_S = 1.0
#: The first pause, after the plain first try failed; tenacity's grow from it.
FIRST_PAUSE_S = 0.05
#: How long a horse waits for Redis to write a finished job's success (and ack).
ACK_PATIENCE_S = 120.0
#: How long a failed job's nudge of the watchdog is tried: it only saves the leader
#: a wait, the watchdog decides the retry from RQ's state without it.
NUDGE_PATIENCE_S = 10.0


class Outage:
    """Thinned logging of one process's waits for Redis: one WARNING when Redis goes
    away, one when it is back (with how long and how many tries), DEBUG per try."""

    def __init__(self, who: str) -> None:
        self.who = who
        self._since: float | None = None
        self._tries = 0

    def failed(self, what: str, exc: BaseException) -> None:
        self._tries += 1
        if self._since is None:
            self._since = time.monotonic()
            log.warning(
                "redis unavailable worker=%s during=%s error=%s: %s (waiting and reconnecting)",
                self.who, what, type(exc).__name__, _first_line(exc),
            )  # fmt: skip
        else:
            log.debug("redis still unavailable worker=%s during=%s try=%d", self.who, what, self._tries)

    def recovered(self) -> None:
        if self._since is None:
            return
        log.warning(
            "redis back worker=%s after_s=%.1f tries=%d",
            self.who, time.monotonic() - self._since, self._tries,
        )  # fmt: skip
        self._since, self._tries = None, 0

    def call(self, step: Callable[[], T], what: str, patience_s: float | None = None) -> T:
        """``step()``, retried on :data:`TRANSIENT` errors until it succeeds (or
        ``patience_s`` passed: then its last error is raised). Only for steps that
        may run twice: reads and idempotent writes.

        The first try is a plain call: the worker's loop makes several of these per
        job, and building tenacity's machinery for each cost more than the Redis
        round trips they wrap. Only a failed try pays for it."""
        try:
            result = step()
        except TRANSIENT as exc:
            self.failed(what, exc)
            time.sleep(FIRST_PAUSE_S)
            return self._retry(step, what, patience_s)
        if self._since is not None:
            self.recovered()
        return result

    def _retry(self, step: Callable[[], T], what: str, patience_s: float | None) -> T:
        """:meth:`call` after its first try failed (and one pause): tenacity from here on."""

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is not None:
                self.failed(what, exc)

        retrying = Retrying(
            retry=retry_if_exception_type(TRANSIENT),
            wait=WaitThroughMigration(backoff(multiplier=FIRST_PAUSE_S, max=MAX_PAUSE_S)),
            stop=stop_never if patience_s is None else stop_after_delay(patience_s),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result = retrying(step)
        except TRANSIENT as exc:
            self.failed(what, exc)
            raise
        self.recovered()
        return result

    def skip(self, step: Callable[[], object], what: str) -> None:
        """``step()`` once; a :data:`TRANSIENT` error is logged (thinned) and dropped."""
        try:
            step()
        except TRANSIENT as exc:
            self.failed(what, exc)
        else:
            self.recovered()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


class Resilience:
    """Mixin for an ``rq.Worker`` subclass (before it in the bases): the Redis steps of
    RQ's loop and work-horse monitor wait for Redis instead of ending the worker."""

    connection: Redis
    name: str
    current_job_working_time: float
    execution: Any
    _horse_pid: int

    @property
    def outage(self) -> Outage:
        found: Outage | None = self.__dict__.get("_rqbeat_outage")
        if found is None:
            found = self.__dict__["_rqbeat_outage"] = Outage(self.name)
        return found

    # -- the main loop: idempotent steps wait for Redis ------------------------------

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        self.outage.call(self.connection.ping, "start")  # then register as RQ does
        super().bootstrap(*args, **kwargs)  # type: ignore[misc]

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        step = super().heartbeat  # type: ignore[misc]
        if pipeline is not None:  # queued only; the pipeline's owner executes it
            step(timeout, pipeline=pipeline)
            return
        self.outage.call(lambda: step(timeout), "heartbeat")

    def set_state(self, state: str, pipeline: Any = None) -> None:
        step = super().set_state  # type: ignore[misc]
        if pipeline is not None:
            step(state, pipeline=pipeline)
            return
        self.outage.call(lambda: step(state), f"set state {state}")

    def check_for_suspension(self, burst: bool) -> None:
        step = super().check_for_suspension  # type: ignore[misc]
        self.outage.call(lambda: step(burst), "suspension check")

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        # RQ retries a dropped connection itself but quits on a timeout or OOM. A job
        # popped just before the error stays in RQ's intermediate queue, which RQ's
        # maintenance puts back: never lost, as with RQ's own retry.
        step = super().dequeue_job_and_maintain_ttl  # type: ignore[misc]
        return self.outage.call(lambda: step(timeout, max_idle_time), "dequeue")

    def run_maintenance_tasks(self) -> None:
        # Registry cleaning is housekeeping: it runs again at the next interval.
        self.outage.skip(super().run_maintenance_tasks, "maintenance")  # type: ignore[misc]

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        # The command channel's thread (`rq` stop/kill commands): RQ logs an ERROR per
        # try and ends the thread on a timeout. The main loop already reports the
        # outage (thinned), so here it is DEBUG, and any transient error is waited out;
        # redis-py subscribes again once it reconnects.
        if not isinstance(exc, TRANSIENT):
            super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)  # type: ignore[misc]
            return
        log.debug("redis unavailable worker=%s during=command channel error=%s", self.name, exc)
        time.sleep(MAX_PAUSE_S)

    def teardown(self) -> None:
        # Leaving while Redis is away: the worker key expires by itself (its TTL).
        self.outage.skip(super().teardown, "teardown")  # type: ignore[misc]

    # -- the work-horse monitor: a missed heartbeat is not fatal ---------------------

    def set_current_job_working_time(self, working_time: float, pipeline: Any = None) -> None:
        step = super().set_current_job_working_time  # type: ignore[misc]
        if pipeline is not None:
            step(working_time, pipeline=pipeline)
            return
        self.current_job_working_time = working_time  # the monitor's kill check reads it
        self.outage.skip(lambda: step(working_time), "job working time")

    def maintain_heartbeats(self, job: Job, *rq_args: Any) -> None:
        # The horse goes on; the next interval writes the heartbeats again. A run whose
        # heartbeats stay away past the grace is judged abandoned by the watchdog.
        # (*rq_args: RQ 3 passes the execution too, workers.rqcompat)
        step = super().maintain_heartbeats  # type: ignore[misc]
        self.outage.skip(lambda: step(job, *rq_args), "job heartbeat")

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)  # type: ignore[misc]
        except TRANSIENT as exc:
            # Only the steps before the fork get here (the monitor handles its own): the
            # job was dequeued but never started. RQ's maintenance fails it out of its
            # intermediate queue later (with the nudge), and the watchdog retries it.
            self.outage.failed(f"starting job {job.id}", exc)
            log.warning("could not start job_id=%s error=%s (left to RQ's maintenance)", job.id, exc)

    def monitor_work_horse(self, job: Job, queue: Queue, *rq_args: Any) -> None:
        try:
            super().monitor_work_horse(job, queue, *rq_args)  # type: ignore[misc]
        except TRANSIENT as exc:  # only RQ's judgement after the horse's end reads Redis
            self.outage.failed("judging the ended horse", exc)
            self._judge_ended_horse(job, queue)

    def _judge_ended_horse(self, job: Job, queue: Queue) -> None:
        """What RQ does when a horse ends without recording its job, once Redis is
        back: a job neither finished nor failed is failed (the watchdog retries it)."""
        self._horse_pid = 0
        try:
            status = self.outage.call(job.get_status, "reading the job status")
        except InvalidJobOperation:
            return  # finished, and its result already expired
        if status in (JobStatus.FINISHED, JobStatus.FAILED):
            return
        job.ended_at = job.ended_at or job.started_at
        self.handle_job_failure(job, queue=queue, exc_string="Work-horse ended while Redis was unreachable")

    def handle_job_failure(self, job: Job, *args: Any, **kwargs: Any) -> None:
        # RQ guards only part of its failure transaction; an OOM or a dropped
        # connection in the rest ended the worker. Not resent (it counts and appends):
        # the job stays "started" in RQ, and the watchdog judges it abandoned once
        # its heartbeat expires.
        try:
            super().handle_job_failure(job, *args, **kwargs)  # type: ignore[misc]
        except TRANSIENT as exc:
            self.outage.failed(f"recording the failure of job {job.id}", exc)
            log.warning(
                "could not record the failure of job_id=%s in RQ error=%s "
                "(the watchdog judges the run when its heartbeat expires)",
                job.id, _first_line(exc),
            )  # fmt: skip

    # -- the horse: a finished job's success waits for Redis -------------------------

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        step = super().handle_execution_ended  # type: ignore[misc]
        self.outage.call(lambda: step(job, queue, heartbeat_ttl), "job end", ACK_PATIENCE_S)

    def handle_job_success(self, job: Job, *args: Any, **kwargs: Any) -> None:
        step = super().handle_job_success  # type: ignore[misc]
        execution = self.execution  # RQ forgets it while building the transaction
        deadline = time.monotonic() + ACK_PATIENCE_S

        def once() -> None:
            try:
                step(job, *args, **kwargs)
            except TRANSIENT as exc:
                self.outage.failed(f"success of job {job.id}", exc)
                if self._success_written(job, deadline):  # raises once the deadline passed
                    return  # its EXEC reached Redis before the connection dropped
                self.execution = execution  # so the resent transaction deletes it too
                raise

        # The success transaction appends and counts, so it is not idempotent by itself:
        # it is sent again only after reading back that the last one did not apply.
        # A plain first try: tenacity's machinery per job cost more than the EXEC.
        try:
            once()
        except TRANSIENT:
            time.sleep(FIRST_PAUSE_S)  # OOM answers at once: pause
            Retrying(
                retry=retry_if_exception_type(TRANSIENT),
                wait=WaitThroughMigration(backoff(multiplier=FIRST_PAUSE_S, max=MAX_PAUSE_S)),
                reraise=True,
            )(once)
        self.outage.recovered()

    def _success_written(self, job: Job, deadline: float) -> bool:
        """After a failed success transaction: did its EXEC apply? Waits for Redis
        (a read); raises the wait's last error once ``deadline`` passed."""
        patience = max(0.0, deadline - time.monotonic())
        if patience <= 0:
            raise redis.exceptions.ConnectionError(f"Redis away for over {ACK_PATIENCE_S:.0f}s")
        try:
            status = self.outage.call(job.get_status, f"reading job {job.id}", patience)
        except InvalidJobOperation:
            return True  # result_ttl=0: the transaction deleted the job, so it applied
        return bool(status == JobStatus.FINISHED)
