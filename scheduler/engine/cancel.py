"""``overlap = cancel_other``: a newer fire stops the run in flight and runs instead.

The leader's watchdog looks at such a run no later than its schedule's next fire
(:func:`look_ms`); when that fire has passed and the run is still queued or started,
:func:`replace` records the run ``cancelled`` and makes the schedule due for the newer
fire in one compare-and-set script (:data:`scheduler.scripts.CANCEL`), then stops the
RQ job through RQ's own API: ``send_stop_job_command`` for a started job (its worker
kills the work horse), ``Job.cancel`` for a queued one.

Timeline of the race with the run's own end::

    worker: job ends ---- ACK (CAS job_id) ----------------------------->
    leader:          look: pending --- CANCEL (CAS job_id) --- stop job --->

Whichever script runs first wins; the other finds another job id and writes nothing.
A job stopped after its last line ran still counts as cancelled (its ack came too
late): its fire is not run again, and the newer fire runs. A job that a worker starts
between the script and ``Job.cancel`` runs to its end, unrecorded; job code is
idempotent per fire anyway (its key is its own fire's).
"""

from __future__ import annotations

import logging

from redis import Redis
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from scheduler import cron, policy, scripts
from scheduler.clock import iso
from scheduler.engine.runs import InFlight
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.model import Overlap
from scheduler.protocol import CancelReply

log = logging.getLogger(__name__)


def next_fire_ms(run: InFlight) -> int | None:
    """The fire after the run's, for a ``cancel_other`` schedule; None for any other
    policy (nothing cancels its runs)."""
    if run.schedule.overlap is not Overlap.CANCEL_OTHER:
        return None
    resumed_ms = run.resumed_ms
    after = run.fire_ms if resumed_ms is None else max(run.fire_ms, resumed_ms)
    return cron.next_fire_ms(run.schedule.trigger, after)


def look_ms(run: InFlight, planned_ms: int) -> int:
    """The watchdog's next look at ``run``: the planned one, or the next fire when that
    comes first and the policy is ``cancel_other``."""
    following = next_fire_ms(run)
    return planned_ms if following is None else min(planned_ms, following)


def replacement(run: InFlight, now_ms: int) -> policy.Resolution | None:
    """Pure: the fire that replaces ``run`` at ``now_ms`` (the newest that has passed;
    older ones are missed), or None while none has."""
    following = next_fire_ms(run)
    if following is None or following > now_ms:
        return None
    return policy.resolve_after_run(run.schedule, following, now_ms)


def replace(conn: Redis, script_set: scripts.Scripts, keys: Keys, run: InFlight, now_ms: int) -> bool:
    """Cancel ``run`` for the newer fire if one has passed; True when it did."""
    newer = replacement(run, now_ms)
    if newer is None:
        return False
    sid = run.schedule_id
    reply = scripts.run(
        script_set.cancel,
        [keys.schedule(sid), keys.due, keys.running, keys.history(sid), keys.events, keys.queued],
        [
            sid,
            run.job_id,
            run.version,
            iso(newer.fire_ms),
            now_ms / 1000,
            newer.dropped,
            iso(now_ms),
            HISTORY_MAXLEN,
        ],
    )
    if CancelReply(reply) is CancelReply.STALE:
        return False
    log.info(
        "cancelled schedule=%s fire=%s job_id=%s epoch=%d for fire=%s (overlap cancel_other)",
        sid, iso(run.fire_ms), run.job_id, run.epoch, iso(newer.fire_ms),
    )  # fmt: skip
    stop_job(conn, run.job_id)
    return True


def stop_job(conn: Redis, job_id: str) -> None:
    """Stop a started RQ job (its worker kills the work horse) or cancel a queued one,
    through RQ's API; a job that ended or vanished meanwhile is left as it is."""
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED:
            send_stop_job_command(conn, job_id, serializer=JSONSerializer)
        elif status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            job.cancel()
    except (NoSuchJobError, InvalidJobOperation) as exc:
        log.info("job_id=%s not stopped: %s", job_id, exc)
