"""The Python side of the Lua protocol: every script's reply, and the values that
cross into a script, as named members.

A script's reply arrives as a bare integer or string; each caller turns it into the
enum below (``AckReply(reply)``) before it decides anything, so a ``-1`` never means
three things in three places. The values are the script's literals: change one on
both sides at once (``tests/unit/test_protocol.py`` pins them). Script bodies live in
:mod:`scheduler.scripts`; each header names the enum its reply is.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from scheduler.stored import LEGACY_FIELD, SETTING_FIELDS


class ScheduleState(StrEnum):
    """The ``state`` field of a schedule's hash (the value is what is stored)."""

    DUE = "due"  # in the due zset, waiting for its fire
    RUNNING = "running"  # in the running zset, a job in flight
    PAUSED = "paused"  # in neither zset (or in running while its last run finishes)
    BROKEN = "broken"  # in neither zset: its definition cannot be used
    COMPLETED = "completed"  # in neither zset: past its end_at, or max_runs reached


#: Every state as plain text, in the order the CLI lists them (click shows an enum by name).
STATES: tuple[str, ...] = tuple(s.value for s in ScheduleState)


class UpsertReply(IntEnum):
    """UPSERT replies per schedule with its new version (>= 1), or this."""

    CONFLICT = -1  # the version moved since it was read: re-read and retry


class RemoveReply(IntEnum):
    REMOVED = 1
    ABSENT = 0


class PauseReply(IntEnum):
    PAUSED = 1
    UPDATED = 2  # already paused: its note and until replaced by the ones given
    ALREADY_PAUSED = 0
    NOT_FOUND = -1
    CHANGED = -2  # not at the version the caller expected: nothing written


class ResumeReply(IntEnum):
    RESUMED = 1
    NOT_PAUSED = 0
    NOT_FOUND = -1
    CHANGED = -2  # acked, failed or edited since it was read: re-read and try again
    DEPOSED = -3  # a leader's resume (fenced) found the lease another's: nothing written
    UNTIL_MOVED = -4  # a leader's resume found the pause's until changed: nothing written


class TriggerReply(StrEnum):
    """TRIGGER replies with one of these, or with the state that prevents it."""

    TRIGGERED = "triggered"
    NOT_FOUND = "not_found"
    CHANGED = "changed"  # not at the version the caller expected: nothing written


#: The expected-version argument of PAUSE and TRIGGER that expects none: any version.
ANY_VERSION = ""


class EditEvent(StrEnum):
    """The ``event`` of an edit's audit entry (scheduler.audit), in the schedule's
    history and the namespace's edit log."""

    CREATED = "created"
    UPDATED = "updated"
    PAUSED = "paused"
    RESUMED = "resumed"
    TRIGGERED = "triggered"
    REMOVED = "removed"


#: The fields of an audit entry besides ``event`` and ``at`` (``changed`` and ``note``
#: only when not empty); the edit log's entries carry the schedule's ``id`` as well.
AUDIT_FIELDS = ("by", "version", "changed", "note")
#: The hash fields of a pause: its note, who paused, and when it ends (ISO; absent: until resumed).
PAUSE_FIELDS = ("pause_note", "paused_by", "paused_until")


class RecordReply(IntEnum):
    """RECORD_EDIT (:meth:`scheduler.store.Client.record_edit`)."""

    RECORDED = 1
    NOT_FOUND = 0


class AckReply(IntEnum):
    REARMED = 1  # due again at its next fire
    REDEFINED = 2  # the definition changed (or it was resumed) under the run: due now, fire recomputed
    PAUSED = 3  # paused meanwhile: left idle
    COMPLETED = 4  # no next fire (past end_at) or max_runs reached: completed
    STALE = 0  # not this schedule's run in flight: nothing written


class RetryReply(IntEnum):
    RETRYING = 1  # due again at the back-off time, attempt + 1
    PAUSED = 3  # paused (pause_on_failure, or paused meanwhile)
    STALE = 0  # not this schedule's run in flight: nothing written


class CancelReply(IntEnum):
    CANCELLED = 1  # the run is replaced: due now for the newer fire
    STALE = 0  # not this schedule's running run, or another version: nothing written


class NudgeReply(IntEnum):
    NUDGED = 1
    STALE = 0


#: START's "when it started" (ARGV[3]) when the caller has no Redis time at hand: the
#: script reads Redis ``TIME`` itself (a worker's mark: one round trip, not two).
STARTED_NOW = ""


class StartReply(IntEnum):
    MARKED = 1  # the run is recorded as started
    STALE = 0  # not this schedule's run in flight, or already marked: nothing written


class AlertRecordReply(IntEnum):
    RECORDED = 1
    GONE = 0  # the schedule was removed: nothing written


class AlertKind(StrEnum):
    """The condition an alert is about (the ``kind`` of a webhook event); the event's
    ``recovered`` says whether it was raised or cleared.

    The first three are written by the scripts, atomically with the transition, to
    ``<ns>:alerts`` (:mod:`scheduler.engine.alerts` drains it on the leader), and
    cleared by the schedule's next success; the rest are findings a health check
    submits to the same sender."""

    GAVE_UP = "gave_up"  # a fire given up after max_attempts failed runs
    BROKEN = "broken"  # a definition that cannot be used
    PAUSED = "paused"  # paused by pause_on_failure
    STALE = "stale"  # no success for too long
    QUEUED_TOO_LONG = "queued_too_long"  # a run waiting in its queue too long
    NO_WORKER = "no_worker"  # nobody serves a schedule's queue
    WRONG_SERIALIZER = "wrong_serializer"  # a worker on the queue cannot read rqbeat's jobs


#: Events kept in ``<ns>:alerts`` when no leader drains it (trimmed by the scripts).
ALERTS_MAXLEN = 1_000


class MarkBrokenReply(IntEnum):
    MARKED = 1
    NOT_A_HASH = 0  # only taken out of the zsets


class DispatchReply(IntEnum):
    WRITTEN = 1
    DEPOSED = -1  # the lease is another's: nothing written
    RACED = -2  # an edit moved the revision since the read: decide again


class AcquireReply(IntEnum):
    """ACQUIRE replies with the new epoch (>= 1), or this."""

    HELD = 0  # by anyone, us included


class LeaseReply(IntEnum):
    """RENEW and RELEASE."""

    OURS = 1  # extended / released
    NOT_OURS = 0  # expired, or another replica's: nothing written


class JobPresence(IntEnum):
    """VIEW_READ's look at a schedule's run (:mod:`scheduler.ops.repair_io`)."""

    EXISTS = 1  # its RQ job hash is there
    GONE = 0  # the schedule names a job that RQ no longer has
    NO_RUN = -1  # no job_id: nothing in flight


class LossReply(IntEnum):
    """RECORD (:mod:`scheduler.dataloss`)."""

    RECORDED = 1
    ALREADY_RECORDED = 0  # the first loss's marker stays until a person clears it


class RepairReply(IntEnum):
    """PLACE, DROP and QUARANTINE (:mod:`scheduler.ops.repair_io`)."""

    APPLIED = 1
    CHANGED = 0  # what the diagnosis saw changed meanwhile: nothing written


class AckOutcome(StrEnum):
    """How a run ended for good (ACK's outcome argument, and its history event)."""

    SUCCEEDED = "succeeded"
    GAVE_UP = "gave_up"


class FailOutcome(StrEnum):
    """What recording a failed run did (:func:`scheduler.engine.runs.fail`)."""

    RETRY = "retry"
    GAVE_UP = "gave_up"
    PAUSED = "paused"
    STALE = "stale"  # concluded meanwhile by someone else: nothing happened


#: A next-fire argument (ACK, DISPATCH's reschedules, UPSERT, RESUME) meaning "there
#: is no next fire": the schedule's window is over and it becomes ``completed``.
NO_FIRE = "never"


class CompletedBy(StrEnum):
    """Why a schedule completed (the ``reason`` of its ``completed`` history entry)."""

    END_AT = "end_at"  # its next fire would fall after end_at
    MAX_RUNS = "max_runs"  # its max_runs-th run succeeded


class SkipReason(StrEnum):
    """Why fires were skipped (the ``reason`` of a ``skipped`` history entry)."""

    PAUSED = "paused"  # pending or due while it was paused (no reason field: older entries)
    EXCLUDED = "excluded"  # matched an exclude item


#: The hash field counting a schedule's successful runs while it has ``max_runs``.
RUNS_DONE_FIELD = "runs_done"


class Flag(StrEnum):
    """A yes/no argument of a script."""

    YES = "1"
    NO = "0"

    @classmethod
    def of(cls, value: bool) -> Flag:
        return cls.YES if value else cls.NO


#: The hash fields of a run in flight that say it started (START: a worker began it):
#: absent while the run is still queued.
STARTED_FIELDS = ("started_at", "worker")
#: When a failed job ended, epoch ms of Redis time (NUDGE: the worker saw it fail), for
#: the failure's history entry; absent under a plain ``rq worker``.
ENDED_FIELD = "ended_ms"
#: The hash fields of a run in flight: set together by DISPATCH (the started ones by
#: START, the end by NUDGE), cleared together by whatever ends the run (ACK, RETRY,
#: MARK_BROKEN, repair), so no run inherits its predecessor's times. A schedule has a
#: run in flight exactly when ``job_id`` is set.
RUN_FIELDS = ("job_id", "job_queue", "epoch", "dispatched_at", *STARTED_FIELDS, ENDED_FIELD)


#: The schedule hash field counting an ``allow_all`` schedule's runs in flight (the
#: size of ``<ns>:runs:<id>``, rewritten by every script that adds or ends one).
IN_FLIGHT_FIELD = "runs_in_flight"
#: The setting's hash field that caps them (``max_concurrent``): the dispatch script
#: re-checks the count against it.
CAP_FIELD = "max_concurrent"
#: The due score (epoch s) of an ``allow_all`` schedule whose pending fire waits for one
#: of its ``max_concurrent`` runs to end: never due by time; the run's end makes it due now.
SLOT_WAIT_SCORE = 10**11  # year 5138: far, and still a date Python can print

#: The schedule hash field TRIGGER writes: the fire it made due (ISO, as ``fire_at``).
#: While ``fire_at`` equals it, that fire was asked for and dispatch runs it as it is,
#: however late (never dropped by the misfire policy); once the fire ran, ``fire_at``
#: moves on and the field means nothing (it is left, not cleared, off the hot path).
TRIGGERED_FIELD = "triggered_fire"

#: The hash fields DUE_READ returns per due schedule, in this order (dispatch decides
#: from them): the legacy definition field, the state, ``last_run_at`` (tells a fire an
#: overlap policy kept waiting from a missed one), the ``allow_all`` runs in flight,
#: the triggered fire, then one per setting (:mod:`scheduler.stored`).
DUE_FIELDS = (
    LEGACY_FIELD, "version", "state", "fire_at", "attempt", "last_run_at", IN_FLIGHT_FIELD, TRIGGERED_FIELD,
    *SETTING_FIELDS,
)  # fmt: skip
#: The hash fields UPSERT_READ returns per schedule, in this order.
UPSERT_READ_FIELDS = ("version", LEGACY_FIELD, "state", *SETTING_FIELDS)
#: UPSERT_READ's whole reply for a schedule with no key at all (else: the number of
#: fields, then their values): most of a big apply, sent as one integer, not 30 nils.
UPSERT_READ_ABSENT = 0


def lua_list(name: str, values: tuple[str, ...]) -> str:
    """A Lua ``local`` holding ``values``, to prepend to a script that uses them."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"local {name} = {{{quoted}}}\n"


# -- allow_all (scheduler.engine.concurrent, scheduler.lua.concurrent) ------------


class RunState(StrEnum):
    """The ``state`` of one ``allow_all`` run's record."""

    RUNNING = "running"  # its job is enqueued or running
    RETRY = "retry"  # it failed: the leader enqueues its next attempt at the back-off time


class ConcurrentReply(IntEnum):
    """CONC_ACK, CONC_FAIL, CONC_NUDGE and CONC_DROP."""

    DONE = 1  # written
    STALE = 0  # not this run (acked, retried or dropped meanwhile): nothing written


class RedispatchReply(IntEnum):
    """CONC_REDISPATCH: the retry of an ``allow_all`` run."""

    ENQUEUED = 1
    STALE = 0  # not this retry (its record changed meanwhile): nothing written
    DEPOSED = -1  # the lease is another's: nothing written


# -- backfill (scheduler.backfill, scheduler.lua.backfills) -----------------------


class BackfillState(StrEnum):
    """The ``state`` field of a backfill's hash."""

    ACTIVE = "active"  # in the backfills zset: the leader runs its fires one by one
    DONE = "done"  # every fire of the window ran, was skipped or was given up
    CANCELED = "canceled"  # by a person, or because the schedule was removed


class BackfillOverlap(StrEnum):
    """Whether a backfill run may start while the schedule's live run is in flight."""

    ALLOW = "allow"  # yes (the default): backfill runs are tracked apart from the live one
    SKIP = "skip"  # wait until the schedule has no live run in flight


class BackfillStartReply(IntEnum):
    STARTED = 1
    ACTIVE = 0  # a backfill of this schedule is still running: nothing written
    NOT_FOUND = -1  # no such schedule: nothing written
    CHANGED = -2  # not at the version the caller expected: nothing written


class BackfillDispatchReply(IntEnum):
    DISPATCHED = 1  # the fire's job is enqueued and recorded in flight
    DONE = 2  # no fire left in the window: the backfill is finished
    SKIPPED = 3  # only the cursor moved, over fires that already succeeded
    CHANGED = 0  # acked, canceled or dispatched since the read: nothing written
    DEPOSED = -1  # the lease is another's: nothing written


class BackfillRunReply(IntEnum):
    """BACKFILL_ACK and BACKFILL_FAIL."""

    DONE = 1  # recorded; the cursor moved on (or the retry is scheduled)
    STALE = 0  # not this backfill's run in flight: nothing written


class BackfillCancelReply(IntEnum):
    CANCELED = 1
    NOT_ACTIVE = 0


#: BACKFILL_CANCEL's ``by`` when the leader stops a backfill (its schedule went or
#: broke): recorded in the history only, not as an edit in the edit log.
LEADER_CANCELS = ""


#: The hash fields of a backfill's run in flight, set by BACKFILL_DISPATCH and
#: cleared together by BACKFILL_ACK / BACKFILL_FAIL / BACKFILL_CANCEL.
BACKFILL_RUN_FIELDS = ("job_id", "fire_ms", "epoch", "dispatched_at")
