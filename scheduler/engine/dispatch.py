"""Dispatch: move due schedules onto RQ queues, one fenced, atomic write per batch.

Per batch, two round trips::

    DUE_READ   up to B due ids with their hash fields, the lease and the revision
    decide, in Python, before anything is written (compute before run):
        run        -- due → running, in-flight state, history, the RQ job
        reschedule -- due → due at a later fire (skip policy, recomputed fire)
        broken     -- cannot be decoded/computed: marked broken after the batch
        spawn      -- allow_all: one more run beside the others (:mod:`.decide`)
    DISPATCH   if the lease is still ours and no edit moved the revision: write it
               all, RQ jobs included (as RQ writes them, see :mod:`scheduler.engine.rqjob`)

A deposed leader's write is refused by the script (the new leader rewrote the lease
key), so it cannot enqueue anything once another replica has taken over. An edit
between read and write makes the script refuse too, and the batch is decided again.
The connection has command retries off: a resent write would enqueue a batch twice.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from scheduler import rqkeys, scripts, thresholds, windows
from scheduler.allow import AllowList
from scheduler.clock import iso
from scheduler.engine import rqjob
from scheduler.engine.decide import Decision, Kind, decide
from scheduler.errors import LeadershipLost
from scheduler.jobmeta import FireMeta
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.protocol import DUE_FIELDS, NO_FIRE, SLOT_WAIT_SCORE, DispatchReply
from scheduler.records import text

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1_000
#: First watchdog look at a new run; later looks back off (see watchdog).
FIRST_CHECK_MS = 1_000
# DUE_READ's reply: the lease and the revision, then per schedule its id, its score
# and DUE_FIELDS.
_HEAD, _ROW = 2, 2 + len(DUE_FIELDS)
_TEMPLATES_KEPT = 65_536
#: Batches read at once: Redis writes one while the next is decided.
READ_AHEAD = 4
#: A prepared first write of more schedules than this is not packed ahead: packing
#: costs milliseconds at that size (again at every re-plan an ack causes), while its
#: write takes far longer than the ~0.1 ms that packing ahead saves.
ARM_MAX_WRITES = 100


@dataclass(slots=True)
class BatchResult:
    runs: list[Decision] = field(default_factory=list)
    rescheduled: list[Decision] = field(default_factory=list)
    broken: list[Decision] = field(default_factory=list)
    spawned: list[Decision] = field(default_factory=list)

    def add(self, decision: Decision) -> None:
        bucket = {
            Kind.RUN: self.runs,
            Kind.RESCHEDULE: self.rescheduled,
            Kind.BROKEN: self.broken,
            Kind.SPAWN: self.spawned,
        }[decision.kind]
        bucket.append(decision)

    def extend(self, other: BatchResult) -> None:
        self.runs += other.runs
        self.rescheduled += other.rescheduled
        self.broken += other.broken
        self.spawned += other.spawned

    @property
    def size(self) -> int:
        return len(self.runs) + len(self.rescheduled) + len(self.broken) + len(self.spawned)


@dataclass(frozen=True, slots=True)
class Write:
    """One decided batch's write but its time: :data:`scripts.DISPATCH`'s arguments
    are built when it is sent (:meth:`args`), so a batch decided ahead is stamped with
    the time it is written, not the time it was decided."""

    token: str
    revision: bytes
    epoch: int
    prefixes: tuple[str, ...]  # schedule, history, RQ job, RQ queue
    runs: int
    rescheduled: int
    spawned: int
    runs_prefix: str
    body: list[Any]  # per run, then per reschedule, then per spawn (see DISPATCH's header)

    def args(self, now_ms: int) -> list[Any]:
        return [
            self.token,
            self.revision,
            *self.prefixes,
            iso(now_ms),
            (now_ms + FIRST_CHECK_MS) / 1000,  # the watchdog's first look
            self.epoch,
            HISTORY_MAXLEN,
            rqjob.rq_timestamp(now_ms),  # the jobs' created_at and enqueued_at
            self.runs,
            self.rescheduled,
            now_ms / 1000,
            self.spawned,
            self.runs_prefix,
            *self.body,
        ]


@dataclass(frozen=True, slots=True)
class Prepared:
    """Batches decided ahead of their due time ``at_ms`` (:meth:`Dispatcher.prepare`);
    ``packed``: the first write's bytes, stamped ``at_ms`` (:meth:`Dispatcher.arm`)."""

    at_ms: int
    epoch: int
    batches: list[tuple[BatchResult, Write | None]]
    packed: scripts.Packed | None = None


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
        self._templates: dict[str, rqjob.JobTemplate] = {}
        self._limits: dict[tuple[str, str], thresholds.Limits] = {}
        self._prefixes = (keys.schedule(""), keys.history(""), rqkeys.JOB_PREFIX, rqkeys.QUEUE_PREFIX)
        k = keys
        self._dispatch_keys = [
            k.leader,
            k.revision,
            k.due,
            k.running,
            rqkeys.QUEUES,
            k.queued,
            k.stale,
            k.queues,
            k.concurrent,
        ]

    def dispatch(self, now_ms: int, token: str, epoch: int) -> BatchResult:
        """Dispatch what is due at ``now_ms``: up to :data:`READ_AHEAD` transactions of
        ``batch_size`` schedules. Raises :class:`LeadershipLost` when the lease is no
        longer ``token`` (transactions already written stand: they were fenced)."""
        while True:
            rows, revision = self._read(now_ms, token)
            if not rows:
                return BatchResult()
            done = self._write_all(rows, revision, now_ms, token, epoch)
            if done.size:
                return done
            log.debug("an edit raced the dispatch batch; deciding it again")

    def _read(self, now_ms: int, token: str) -> tuple[list[tuple[str, int, list[Any]]], bytes]:
        k = self.keys
        reply: list[Any] = scripts.run(
            self._scripts.due_read,
            [k.due, k.leader, k.revision],
            [now_ms / 1000, self.batch_size * READ_AHEAD, k.schedule("")],
        )
        if reply[0] != token.encode():
            raise LeadershipLost("the lease is held by another replica")
        rows = [
            (str(text(reply[i])), round(float(reply[i + 1]) * 1000), reply[i + 2 : i + _ROW])
            for i in range(_HEAD, len(reply), _ROW)
        ]
        return rows, reply[1]

    def prepare(self, at_ms: int, token: str, epoch: int) -> Prepared | None:
        """Read and decide now what will be due at ``at_ms``, so that at ``at_ms`` only
        the write is left (:meth:`send`, one round trip). The writes are fenced like
        any other: an edit or a lost lease in between makes them refuse."""
        rows, revision = self._read(at_ms, token)
        if not rows:
            return None
        return Prepared(at_ms, epoch, list(self._batches(rows, revision, at_ms, token, epoch)))

    def arm(self, prepared: Prepared) -> Prepared:
        """``prepared`` with its first write packed for a send at its due time, so the
        send itself is one socket write (:func:`scripts.pack`). Unchanged when there is
        nothing to write or more than :data:`ARM_MAX_WRITES`; raises a Redis error
        when no connection can be had."""
        first = prepared.batches[0][1] if prepared.batches else None
        if first is None or first.runs + first.rescheduled > ARM_MAX_WRITES:
            return prepared
        packed = scripts.pack(
            self.conn, self._scripts.dispatch, self._dispatch_keys, first.args(prepared.at_ms)
        )
        return dataclasses.replace(prepared, packed=packed)

    def send(self, prepared: Prepared, now_ms: int) -> BatchResult:
        """Write what :meth:`prepare` decided, stamped ``now_ms`` (history, RQ's
        enqueued_at); the first write as :meth:`arm` packed it when ``now_ms`` is
        its due time. Empty when an edit raced it (dispatch normally then); raises
        :class:`LeadershipLost` like :meth:`dispatch`."""
        packed = prepared.packed if now_ms == prepared.at_ms else None
        return self._run(iter(prepared.batches), now_ms, prepared.epoch, packed)

    def _write_all(
        self, rows: list[tuple[str, int, list[Any]]], revision: bytes, now_ms: int, token: str, epoch: int
    ) -> BatchResult:
        """Decide and write batch after batch, deciding the next while Redis writes
        the last. Stops at the first batch an edit raced (the caller re-reads)."""
        return self._run(self._batches(rows, revision, now_ms, token, epoch), now_ms, epoch)

    def _batches(
        self, rows: list[tuple[str, int, list[Any]]], revision: bytes, now_ms: int, token: str, epoch: int
    ) -> Iterator[tuple[BatchResult, Write | None]]:
        """Each batch decided, with its write (None: nothing to write)."""
        for start in range(0, len(rows), self.batch_size):
            part = BatchResult()
            for schedule_id, score_ms, row in rows[start : start + self.batch_size]:
                part.add(decide(schedule_id, row, score_ms, now_ms, self.allow))
            writes = part.runs or part.rescheduled or part.spawned
            yield part, self._write(part, revision, token, epoch, now_ms) if writes else None

    def _run(
        self,
        batches: Iterator[tuple[BatchResult, Write | None]],
        now_ms: int,
        epoch: int,
        packed: scripts.Packed | None = None,
    ) -> BatchResult:
        """Send each batch's write stamped ``now_ms``, the next decided meanwhile;
        ``packed``: the first write, packed ahead with these very arguments."""
        done = BatchResult()

        def settle(part: BatchResult, reply: Any) -> bool:
            return self._settle(part, reply, done, now_ms, epoch)

        def sends() -> Iterator[tuple[BatchResult, Sequence[Any] | scripts.Packed | None]]:
            for i, (part, write) in enumerate(batches):
                if write is None:
                    yield part, None
                else:
                    yield part, packed if i == 0 and packed is not None else write.args(now_ms)

        scripts.pipelined(self.conn, self._scripts.dispatch, self._dispatch_keys, sends(), settle)
        return done

    def _settle(self, part: BatchResult, reply: Any, done: BatchResult, now_ms: int, epoch: int) -> bool:
        """Take in a batch's write; False when an edit raced it (nothing written)."""
        written = DispatchReply.WRITTEN if reply is None else DispatchReply(reply)
        if written is DispatchReply.DEPOSED:
            raise LeadershipLost("the lease changed hands during dispatch")
        if written is DispatchReply.RACED:
            return False
        done.extend(part)
        self._after(part, now_ms, epoch)
        return True

    def _write(self, result: BatchResult, revision: bytes, token: str, epoch: int, now_ms: int) -> Write:
        """The write of one decided batch (its time is set when it is sent; the stall
        deadlines are counted from ``now_ms``, the time it was decided for)."""
        args: list[Any] = []
        for d in result.runs:
            template = self._template(d)
            limits = self._limits_of(d)
            fire_iso = iso(d.fire_ms)
            job = template.fields_for(_description(d, fire_iso), self._meta(d, fire_iso, epoch))
            args += [d.schedule_id, fire_iso, d.attempt, d.job_id, template.queue, d.dropped, template.ttl_s]
            args += [(now_ms + limits.max_queued_ms) / 1000, (now_ms + limits.stale_after_ms) / 1000]
            args += [len(job), *job]
        for d in result.rescheduled:
            fire = NO_FIRE if d.fire_ms >= windows.NEVER_MS else iso(d.fire_ms)  # past end_at: completed
            args += [d.schedule_id, fire, d.score_ms / 1000, d.dropped]
        for d in result.spawned:
            template = self._template(d)
            limits = self._limits_of(d)
            fire_iso = iso(d.fire_ms)
            job = template.fields_for(_description(d, fire_iso), self._meta(d, fire_iso, epoch))
            nxt = NO_FIRE if d.next_ms >= windows.NEVER_MS else iso(d.next_ms)
            args += [d.schedule_id, fire_iso, d.fire_ms, d.job_id, template.queue, d.dropped, template.ttl_s]
            args += [(now_ms + limits.stale_after_ms) / 1000, nxt, d.score_ms / 1000]
            args += [(now_ms + limits.max_queued_ms) / 1000, len(job), *job]
        return Write(
            token,
            revision,
            epoch,
            self._prefixes,
            len(result.runs),
            len(result.rescheduled),
            len(result.spawned),
            self.keys.runs(""),
            args,
        )

    def _template(self, d: Decision) -> rqjob.JobTemplate:
        """The job template of the schedule's definition, built once per definition
        text: the template holds no id, so schedules that share their settings (a
        file's, through apply) share it, and an edit's new text gets its own."""
        assert d.schedule is not None
        definition = d.schedule.to_json()
        template = self._templates.get(definition)
        if template is None:
            if len(self._templates) >= _TEMPLATES_KEPT:
                self._templates.clear()
            template = self._templates[definition] = rqjob.JobTemplate.of(d.schedule)
        return template

    def _limits_of(self, d: Decision) -> thresholds.Limits:
        """The schedule version's stall thresholds, its period measured once per version
        (a cron period per fire would cost a croniter call per run in a burst)."""
        limits = self._limits.get((d.schedule_id, d.version))
        if limits is None:
            assert d.schedule is not None
            if len(self._limits) >= _TEMPLATES_KEPT:
                self._limits.clear()
            limits = self._limits[d.schedule_id, d.version] = thresholds.limits_at(d.schedule, d.fire_ms)
        return limits

    def _meta(self, d: Decision, fire_iso: str, epoch: int) -> dict[str, Any]:
        """``job.meta``: what :func:`workers.current_fire` and the ack read."""
        fire = FireMeta(
            schedule=d.schedule_id,
            fire_at=fire_iso,
            fire_ms=d.fire_ms,
            attempt=d.attempt,
            epoch=epoch,
            version=d.version,
            namespace=self.keys.namespace,
            concurrent=d.kind is Kind.SPAWN,
        )
        return fire.to_meta()

    def _after(self, result: BatchResult, now_ms: int, epoch: int) -> None:
        if log.isEnabledFor(logging.INFO):
            for d in [*result.runs, *result.spawned]:
                log.info(
                    "dispatched schedule=%s fire=%s job=%s attempt=%d epoch=%d lag_ms=%d",
                    d.schedule_id,
                    iso(d.fire_ms),
                    d.job_id,
                    d.attempt,
                    epoch,
                    now_ms - d.fire_ms,
                )
        for d in [*result.runs, *result.spawned]:
            if d.dropped:
                log.warning("missed schedule=%s fires=%d (misfire policy)", d.schedule_id, d.dropped)
        for d in result.rescheduled:
            if d.score_ms >= SLOT_WAIT_SCORE * 1000:
                log.info(
                    "waiting schedule=%s fire=%s (max_concurrent runs in flight)",
                    d.schedule_id,
                    iso(d.fire_ms),
                )
            elif d.fire_ms >= windows.NEVER_MS:
                log.info("completed schedule=%s dropped=%d (no fire before end_at)", d.schedule_id, d.dropped)
            else:
                next_fire = iso(d.fire_ms)
                log.warning("skipped schedule=%s dropped=%d next=%s", d.schedule_id, d.dropped, next_fire)
        for d in result.broken:
            log.error("broken schedule=%s error=%s", d.schedule_id, d.error)
            k = self.keys
            scripts.run(
                self._scripts.mark_broken,
                k.mark_broken_keys(d.schedule_id),
                [d.schedule_id, d.error[:500], iso(now_ms), HISTORY_MAXLEN],
            )


def _description(d: Decision, fire_iso: str) -> str:
    """What ``rq info`` and rq-dashboard show: which schedule, which fire, which try."""
    retry = f" attempt={d.attempt}" if d.attempt > 1 else ""
    return f"rqbeat {d.schedule_id} fire={fire_iso}{retry}"
