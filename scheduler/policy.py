"""Pure policy math: misfires, jitter, retry back-off. No Redis, no clock reads.

Every function takes the current time as an argument (``now_ms``), so the same inputs
always give the same answer and tests need no clock at all.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from scheduler import cron
from scheduler.model import Misfire, Overlap, Schedule

#: A fire dispatched this late is a *misfire* (the scheduler was down, or the previous
#: run was still in flight); anything earlier is ordinary dispatch lag.
MISFIRE_GRACE_MS = 1_000
#: Missed fires are enumerated up to this many; a longer outage is counted as this
#: many (the history entry says "at least").
MAX_ENUMERATED_FIRES = 1_000
RETRY_BASE_MS = 1_000
RETRY_CAP_MS = 300_000


@dataclass(frozen=True, slots=True)
class Resolution:
    """What to do next: run ``fire_ms`` (or, if ``run_now`` is false, wait for it);
    ``dropped`` fires were missed and are recorded, not run."""

    fire_ms: int
    dropped: int
    run_now: bool


def resolve_misfire(schedule: Schedule, pending_ms: int, now_ms: int) -> Resolution:
    """Apply the schedule's misfire policy to the earliest fire not yet run.

    ``coalesce``: one run, for the newest missed fire. ``all``: the oldest missed fire
    runs; the next ack finds the rest. ``skip``: every missed fire is dropped and the
    next future fire waits. ``catchup_window`` first drops fires older than it.
    """
    return _resolve(schedule, schedule.misfire, pending_ms, now_ms)


#: How the fires that passed during a run are treated at its end, per overlap policy
#: (None: by the schedule's misfire policy).
_AFTER_RUN = {
    Overlap.SKIP: None,
    Overlap.BUFFER_ONE: Misfire.COALESCE,
    Overlap.BUFFER_ALL: Misfire.ALL,
    # a run that outlived its next fire was cancelled by it; one that ended first behaves as skip
    Overlap.CANCEL_OTHER: Misfire.COALESCE,
    # never asked: an allow_all run's end does not choose the next fire (resolve_concurrent)
    Overlap.ALLOW_ALL: None,
}


def resolve_after_run(schedule: Schedule, pending_ms: int, now_ms: int) -> Resolution:
    """At the end of a run (success, or a fire given up), the fire that waits next:
    ``pending_ms`` is the first fire after the one that ran, and the fires from it up
    to ``now_ms`` passed while the run was in flight (its retries included).

    ``skip``: they go to the misfire policy. ``buffer_one``: the latest of them waits
    and the older ones are missed. ``buffer_all``: the oldest waits; each later ack
    finds the next. ``catchup_window`` drops fires older than it under every policy.
    """
    return _resolve(schedule, _AFTER_RUN[schedule.overlap] or schedule.misfire, pending_ms, now_ms)


def resolve_due(schedule: Schedule, pending_ms: int, now_ms: int, last_run_ms: int | None) -> Resolution:
    """At dispatch, the first try of the fire ``pending_ms``. A fire at or before the
    end of the previous run (``last_run_ms``) passed while that run was in flight: under
    a buffering overlap policy its ack already chose it to wait, so it runs as it is,
    however late. Any other late fire was missed while no scheduler was up: the misfire
    policy decides."""
    if schedule.overlap is not Overlap.SKIP and last_run_ms is not None and pending_ms <= last_run_ms:
        return Resolution(pending_ms, 0, True)
    return _resolve(schedule, schedule.misfire, pending_ms, now_ms)


def resolve_concurrent(
    schedule: Schedule, pending_ms: int, now_ms: int, in_flight: int, *, asked: bool = False
) -> Resolution | None:
    """At dispatch, the fire ``pending_ms`` of an ``allow_all`` schedule with
    ``in_flight`` runs: None at the cap (``max_concurrent`` runs in flight: the fire
    waits for a run to end, then is decided again, late fires by the misfire policy,
    as ``skip`` decides the fires that passed during its one run); else the misfire
    policy's answer, as for a schedule with nothing in flight. A fire ``asked`` for by
    a person (a trigger) is not the policy's to drop: it runs as it is, however late."""
    if in_flight >= (schedule.max_concurrent or 1):
        return None
    if asked:
        return Resolution(pending_ms, 0, True)
    return _resolve(schedule, schedule.misfire, pending_ms, now_ms)


def _resolve(schedule: Schedule, misfire: Misfire, pending_ms: int, now_ms: int) -> Resolution:
    if pending_ms > now_ms - MISFIRE_GRACE_MS:
        return Resolution(pending_ms, 0, pending_ms <= now_ms)
    trigger = schedule.trigger
    missed = [
        pending_ms,
        *cron.fires_between(trigger, pending_ms, now_ms, MAX_ENUMERATED_FIRES - 1),
    ]
    dropped = 0
    if schedule.catchup_window_ms is not None:
        oldest_ok = now_ms - schedule.catchup_window_ms
        kept = [f for f in missed if f >= oldest_ok]
        dropped, missed = len(missed) - len(kept), kept
    if not missed or misfire is Misfire.SKIP:
        return Resolution(cron.next_fire_ms(trigger, now_ms), dropped + len(missed), False)
    if misfire is Misfire.COALESCE:
        return Resolution(missed[-1], dropped + len(missed) - 1, True)
    return Resolution(missed[0], dropped, True)


def paused_fires(trigger: cron.Trigger, first_ms: int | None, resumed_ms: int) -> int:
    """How many fires a resume at ``resumed_ms`` drops: those in ``[first_ms,
    resumed_ms]``, where ``first_ms`` is the earliest fire not yet run (None: unknown,
    none counted). A paused schedule's fires never run, pending or passed while it
    was paused; it fires again from the first fire after the resume."""
    if first_ms is None or first_ms > resumed_ms:
        return 0
    return 1 + len(cron.fires_between(trigger, first_ms, resumed_ms, MAX_ENUMERATED_FIRES - 1))


def due_score_ms(schedule: Schedule, fire_ms: int) -> int:
    """When a fire becomes due: the fire time plus its jitter, never past the next fire."""
    if not schedule.jitter_ms:
        return fire_ms
    following = cron.next_fire_ms(schedule.trigger, fire_ms)
    span = min(schedule.jitter_ms, following - fire_ms - 1)
    if span <= 0:
        return fire_ms
    # Deterministic per (schedule, fire): every replica and retry agrees on the delay.
    return fire_ms + zlib.crc32(f"{schedule.id}:{fire_ms}".encode()) % (span + 1)


def backoff_ms(schedule_id: str, fire_ms: int, attempt: int) -> int:
    """Delay before retry number ``attempt`` (1 = the first retry): exponential, capped,
    with deterministic jitter in [50%, 100%] so failing schedules do not retry in step."""
    ceiling = min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** min(max(attempt, 1) - 1, 30))
    spread = zlib.crc32(f"{schedule_id}:{fire_ms}:{attempt}".encode()) % 1000
    return int(ceiling // 2 + ceiling * spread // 2000)


def gives_up(schedule: Schedule, attempt: int) -> bool:
    """True when the failed ``attempt`` was the last one ``max_attempts`` allows."""
    return schedule.max_attempts is not None and attempt >= schedule.max_attempts
