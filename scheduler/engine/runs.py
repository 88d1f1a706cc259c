"""The end of a run: acknowledge success, retry a failure, or give the fire up.

Shared by the worker (which acks inside RQ's own "job finished" transaction) and
the leader's watchdog (the backstop for plain ``rq worker`` and lost acks). Both go
through the compare-and-set scripts in :mod:`scheduler.scripts`, so whichever
arrives second is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from scheduler import cron, policy, scripts, stored, thresholds, windows
from scheduler.clock import iso, parse_iso_ms
from scheduler.engine import clusterstats
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.model import Overlap, Schedule
from scheduler.protocol import NO_FIRE, RUN_FIELDS, AckOutcome, AckReply, FailOutcome, Flag, RetryReply
from scheduler.records import decode_definition, text
from scheduler.stored import SETTING_FIELDS

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 500
_FAIL_OUTCOMES = {
    RetryReply.RETRYING: FailOutcome.RETRY,
    RetryReply.PAUSED: FailOutcome.PAUSED,
    RetryReply.STALE: FailOutcome.STALE,
}


@dataclass(frozen=True, slots=True)
class InFlight:
    """The in-flight run of a schedule, as the schedule's hash records it."""

    schedule_id: str
    job_id: str
    fire_ms: int
    attempt: int
    version: str
    schedule: Schedule
    dispatched_ms: int
    epoch: int = 0  # of the leader that dispatched it: for log lines
    started: bool = False  # a worker began it (START); else it is still queued
    #: When the schedule was last resumed while a run was in flight ('' = never), as
    #: stored: fires up to then passed while it was paused and never run.
    resumed_at: str = ""
    started_ms: int | None = None  # Redis time of the START mark (a worker's, or the watchdog's look)
    worker: str = ""
    ended_ms: int | None = None  # Redis time; set by a workers.Worker's failure (NUDGE)

    @property
    def resumed_ms(self) -> int | None:
        return parse_iso_ms(self.resumed_at) if self.resumed_at else None

    @property
    def lateness_ms(self) -> int | None:
        """From the nominal fire to the job's start: queueing, worker shortage, retries."""
        return None if self.started_ms is None else self.started_ms - self.fire_ms


#: Where ACK's (field, increment) stats pairs start in :attr:`Ack.args` (ARGV[22..]).
ACK_STATS_AT = 23


@dataclass(frozen=True, slots=True)
class Ack:
    """A prepared acknowledgement: computed before the transaction it joins."""

    keys: list[str]
    args: list[Any]

    def add_to(self, pipe: Pipeline | Redis, script_set: scripts.Scripts) -> None:
        scripts.run(script_set.ack, list(self.keys), list(self.args), client=pipe)

    def add_loaded(self, pipe: Pipeline, script_set: scripts.Scripts) -> None:
        """:meth:`add_to` for a caller that just saw ACK loaded (:func:`scripts.queue_loaded`)."""
        scripts.queue_loaded(pipe, script_set.ack, self.keys, self.args)


#: What an in-flight run is read from: the fire and its definition, the run's own
#: fields (:data:`~scheduler.protocol.RUN_FIELDS`) and when it was last resumed.
IN_FLIGHT_FIELDS = ("definition", "version", "fire_at", "attempt", *RUN_FIELDS, "resumed_at", *SETTING_FIELDS)


def read_in_flight(conn: Redis, keys: Keys, schedule_id: str) -> InFlight | None:
    """The schedule's in-flight run, or None when it has none or cannot be decoded."""
    return decode_in_flight(schedule_id, conn.hmget(keys.schedule(schedule_id), IN_FLIGHT_FIELDS))


def decode_in_flight(schedule_id: str, row: list[Any]) -> InFlight | None:
    """An in-flight run from an HMGET of :data:`IN_FLIGHT_FIELDS`."""
    fields = dict(zip(IN_FLIGHT_FIELDS, row, strict=True))
    job_id, fire_at, dispatched_at = fields["job_id"], fields["fire_at"], fields["dispatched_at"]
    version, attempt, epoch = (fields[f] for f in ("version", "attempt", "epoch"))
    if job_id is None or fire_at is None:
        return None
    try:
        schedule = decode_definition(schedule_id, stored.definition_text(fields))
        fire_ms = parse_iso_ms(str(text(fire_at)))
        dispatched_ms = parse_iso_ms(str(text(dispatched_at))) if dispatched_at else fire_ms
        tries = int(attempt or 1)
        epoch_n = int(epoch or 0)
        resumed = str(text(fields["resumed_at"]) or "")
        if resumed:
            parse_iso_ms(resumed)
    except ValueError:  # CorruptDefinition, or a damaged fire_at, attempt, epoch or resumed_at
        return None
    started = fields["started_at"] is not None
    return InFlight(
        schedule_id,
        str(text(job_id)),
        fire_ms,
        tries,
        str(text(version)),
        schedule,
        dispatched_ms,
        epoch_n,
        started=started,
        resumed_at=resumed,
        started_ms=_time_ms(fields["started_at"], parse_iso_ms),
        worker=text(fields["worker"]) or "",
        ended_ms=_time_ms(fields["ended_ms"], int),
    )


def _time_ms(value: Any, parse: Callable[[str], int]) -> int | None:
    """A run time a worker wrote; None when absent or damaged (times are advice: a
    damaged one must not stop the run's ack)."""
    try:
        return parse(str(text(value))) if value else None
    except ValueError:
        return None


def run_times(run: InFlight, ended_ms: int | None) -> list[Any]:
    """The ACK/RETRY arguments :data:`scheduler.scripts.RUN_TIMES_HEADER` names:
    ``''`` for what is not known (a plain rq worker reports no end)."""
    lateness = run.lateness_ms
    return [
        "" if run.started_ms is None else iso(run.started_ms),
        "" if ended_ms is None else iso(ended_ms),
        run.worker,
        "" if lateness is None else lateness,
        Flag.of(run.schedule.metrics),
    ]


def _alert_keys(keys: Keys) -> list[str]:
    """The keys ACK and RETRY keep the alerts and the per-schedule series in."""
    return [keys.alerts, keys.failing, keys.metered]


def prepare_ack(
    keys: Keys,
    run: InFlight,
    now_ms: int,
    *,
    outcome: AckOutcome = AckOutcome.SUCCEEDED,
    error: str = "",
    by: str = "worker",
    ended_ms: int | None = None,
) -> Ack:
    """Compute the schedule's next fire after ``run`` (its overlap policy applied at
    ``now_ms`` to the fires that passed during the run) and the arguments of the ACK
    script, with the cluster-wide counters it adds when it applies
    (:mod:`scheduler.engine.clusterstats`): an ack ``by`` the worker or the watchdog, its
    latency from ``ended_ms`` (the job's end; None when unknown).

    A schedule resumed while this run was in flight fires again only after the resume:
    the fires before it passed while it was paused (the resume recorded them as
    skipped). The script re-checks ``resumed_at``, so a resume racing this ack makes it
    re-arm from the time of the ack instead.

    The run's end in its history is ``now_ms`` for a worker's ack (Redis time, taken
    as the job ended); for the watchdog's it is what the worker recorded, if anything."""
    schedule = run.schedule
    resumed_ms = run.resumed_ms
    after = run.fire_ms if resumed_ms is None else max(run.fire_ms, resumed_ms)
    pending = cron.next_fire_ms(schedule.trigger, after)
    # the period at the fire that ran; measured apart only after a resume moved `after`
    period = pending - run.fire_ms if resumed_ms is None else thresholds.period_ms(schedule, run.fire_ms)
    stale_ms = thresholds.limits(schedule, period).stale_after_ms
    resolution = (
        policy.resolve_misfire(schedule, pending, now_ms)  # the default: no detour per ack
        if schedule.overlap is Overlap.SKIP
        else policy.resolve_after_run(schedule, pending, now_ms)
    )
    score = policy.due_score_ms(schedule, resolution.fire_ms)
    excluded = windows.skipped_before(schedule.trigger, after, pending, policy.MAX_ENUMERATED_FIRES)
    sid = run.schedule_id
    # the trigger's fire after the one that ran: the succeeded record chains on it
    expect_ms = pending if resumed_ms is None else cron.next_fire_ms(schedule.trigger, run.fire_ms)
    if outcome is AckOutcome.SUCCEEDED:
        latency_ms = None if ended_ms is None else now_ms - ended_ms
        stats = clusterstats.ack_increments(by=by, latency_ms=latency_ms, dropped=resolution.dropped)
    else:
        stats = clusterstats.missed_increments(resolution.dropped)
    stats += clusterstats.lateness_increments(run.lateness_ms)
    return Ack(
        keys=[
            keys.schedule(sid),
            keys.due,
            keys.running,
            keys.history(sid),
            keys.events,
            keys.stats,
            keys.queued,
            keys.stale,
            *_alert_keys(keys),
            keys.succeeded(sid),
        ],
        args=[
            sid,
            run.job_id,
            run.version,
            NO_FIRE if resolution.fire_ms >= windows.NEVER_MS else iso(resolution.fire_ms),
            score / 1000,
            iso(now_ms),
            now_ms / 1000,
            outcome,
            resolution.dropped,
            HISTORY_MAXLEN,
            error[:MAX_ERROR_CHARS],
            run.resumed_at,
            (now_ms + stale_ms) / 1000,
            *run_times(run, now_ms if by == "worker" else run.ended_ms),
            "" if schedule.max_runs is None else schedule.max_runs,
            len(excluded),
            iso(excluded[0]) if excluded else "",
            run.fire_ms,
            expect_ms,
            *stats,
        ],
    )


def fail(
    conn: Redis, script_set: scripts.Scripts, keys: Keys, run: InFlight, *, now_ms: int, error: str
) -> FailOutcome:
    """Record a failed run: retry with back-off, give the fire up after
    ``max_attempts``, or pause (``pause_on_failure``). Returns what happened."""
    schedule = run.schedule
    if policy.gives_up(schedule, run.attempt) and not schedule.pause_on_failure:
        ack = prepare_ack(keys, run, now_ms, outcome=AckOutcome.GAVE_UP, error=error)
        acked = AckReply(scripts.run(script_set.ack, ack.keys, ack.args, client=conn))
        return FailOutcome.STALE if acked is AckReply.STALE else FailOutcome.GAVE_UP
    retry_ms = now_ms + policy.backoff_ms(run.schedule_id, run.fire_ms, run.attempt)
    sid = run.schedule_id
    result = scripts.run(
        script_set.retry,
        [
            *(keys.schedule(sid), keys.due, keys.running, keys.history(sid), keys.events),
            *(keys.queued, keys.stale, *_alert_keys(keys)),
        ],
        [
            sid,
            run.job_id,
            retry_ms / 1000,
            iso(retry_ms),
            iso(now_ms),
            error[:MAX_ERROR_CHARS],
            HISTORY_MAXLEN,
            Flag.of(schedule.pause_on_failure),
            *run_times(run, run.ended_ms),
        ],
        client=conn,
    )
    return _FAIL_OUTCOMES[RetryReply(result)]
