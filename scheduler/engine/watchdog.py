"""The watchdog: the leader's backstop for runs nobody acknowledged.

Each in-flight run is looked at when its score in ``<ns>:running`` comes up. RQ's
state is *read* (job hash, execution registries), never cleaned: RQ's registry
cleanup runs failure callbacks and mutates jobs, so rqbeat keeps out of it.

=======================  ======================================================
RQ says                  rqbeat does
=======================  ======================================================
finished                 ack, exactly as the worker would have (plain rq worker)
failed/stopped/canceled  failure: retry with back-off, give up, or pause
started, heartbeat gone  abandoned (worker died): failure; "gone" by Redis's clock
                         (:mod:`scheduler.engine.liveness`), never the worker's
failed, heartbeat alive  RQ's clean-up misjudged a skewed worker: wait for it
queued, in no list       popped by a worker that died before starting it (seen so
                         on two looks ``ORPHAN_GRACE_MS`` apart): failure
job hash gone            lost (ttl expired, data lost): failure
queued/started, healthy  look again later, at growing intervals
=======================  ======================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import redis.exceptions
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcparse

from scheduler import clockskew, rqkeys, scripts, stored
from scheduler.clock import iso
from scheduler.engine import cancel, liveness, runs
from scheduler.errors import CorruptDefinition
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.protocol import AckReply, FailOutcome
from scheduler.records import decode_definition, text

if TYPE_CHECKING:
    from scheduler.engine.metrics import Metrics

log = logging.getLogger(__name__)

MIN_CHECK_MS = 500
#: A worker marks a job started milliseconds after popping it; still ``queued`` and in
#: no list this long after first seen so, the worker died in between.
ORPHAN_GRACE_MS = 2_000
#: How far from each end of a queue (and its intermediate list) a queued job is looked
#: for: a bounded LPOS. Deeper in a longer backlog counts as "in the queue".
QUEUE_SCAN = 10_000
MAX_CHECK_MS = 30_000
#: From this many queued runs of one queue in a watchdog batch on, its lists are read
#: once instead of searched per run (:meth:`Watchdog._listed`).
BULK_LOOKUP = 4
_FAILED = {"failed", "stopped", "canceled"}
#: What RQ raises in a worker whose serializer cannot read a job (rqbeat's are JSON).
DESERIALIZATION_ERROR = "DeserializationError"


class Outcome(StrEnum):
    """What RQ's state says of one in-flight run."""

    SUCCEEDED = "succeeded"  # ack it
    FAILED = "failed"  # retry, give up or pause
    PENDING = "pending"  # look again later


@dataclass(frozen=True, slots=True)
class Verdict:
    """What RQ's state means for one in-flight run."""

    outcome: Outcome
    reason: str = ""


def judge(status: str | None, alive: bool, now_ms: int, unlisted_since_ms: int | None = None) -> Verdict:
    """Pure: the verdict from RQ's job status, whether an execution of the job is still
    alive by Redis's clock (:mod:`scheduler.engine.liveness`), and since when a
    ``queued`` job has been seen in none of its queue's lists (None: it is in one, or
    it is not queued)."""
    if status is None:
        return Verdict(Outcome.FAILED, "lost: the RQ job no longer exists")
    if status == "finished":
        return Verdict(Outcome.SUCCEEDED)
    # "failed" while an execution lives: RQ's registry clean-up, on some worker's clock,
    # called a running job abandoned. The worker still runs it: wait for its verdict.
    if status in _FAILED and not (status == "failed" and alive):
        return Verdict(Outcome.FAILED, f"RQ job {status}")
    if status == "started" and not alive:
        return Verdict(Outcome.FAILED, "abandoned: the worker's heartbeat expired")
    if status == "queued" and unlisted_since_ms is not None and now_ms - unlisted_since_ms >= ORPHAN_GRACE_MS:
        return Verdict(Outcome.FAILED, "lost: popped from its queue by a worker that died before starting it")
    return Verdict(Outcome.PENDING)


def next_check_ms(dispatched_ms: int, now_ms: int) -> int:
    """Look again after half the run's age so far, within [0.5 s, 30 s]."""
    return now_ms + max(MIN_CHECK_MS, min(MAX_CHECK_MS, (now_ms - dispatched_ms) // 2))


class Watchdog:
    """Checks in-flight runs whose look-again time has come."""

    def __init__(
        self, conn: Redis, keys: Keys, *, batch_size: int = 1_000, metrics: Metrics | None = None
    ) -> None:
        self.conn = conn
        self.keys = keys
        self.batch_size = batch_size
        self.metrics = metrics
        self._scripts = scripts.Scripts(conn)
        # Schedules whose check raised: the traceback is logged once, not every look.
        self._reported: set[str] = set()
        # Queued jobs found in none of their queue's lists: job id -> first seen so (ms).
        self._unlisted: dict[str, int] = {}

    def check(self, now_ms: int) -> int:
        """Check one batch; returns how many runs were looked at. Reads are pipelined
        per batch (a few round trips for the whole batch, not per run)."""
        members: list[bytes] = self.conn.zrangebyscore(  # type: ignore[assignment]
            self.keys.running, "-inf", now_ms / 1000, start=0, num=self.batch_size
        )
        ids = [str(text(m)) for m in members]
        in_flight = self._read_runs(ids)
        states = self._rq_states([r.job_id for r in in_flight.values()])
        later: dict[str, float] = {}
        for schedule_id in ids:
            run = in_flight.get(schedule_id)
            try:
                if run is None:
                    self._orphan(schedule_id, now_ms)
                    continue
                status, alive, ended_ms, listed = states[run.job_id]
                since = self._unlisted_since(run.job_id, status == "queued" and not listed, now_ms)
                verdict = judge(status, alive, now_ms, since)
                if verdict.outcome is Outcome.PENDING:
                    if cancel.replace(self.conn, self._scripts, self.keys, run, now_ms):
                        self._unlisted.pop(run.job_id, None)
                        self._reported.discard(schedule_id)
                        continue  # due for the newer fire: out of the running set
                    look_ms = cancel.look_ms(run, next_check_ms(run.dispatched_ms, now_ms))
                    if run.job_id in self._unlisted:  # confirm (or clear) it soon
                        look_ms = min(look_ms, now_ms + ORPHAN_GRACE_MS)
                    later[schedule_id] = look_ms / 1000
                else:
                    self._unlisted.pop(run.job_id, None)
                    self._conclude(run, verdict, now_ms, ended_ms)
                self._reported.discard(schedule_id)
            except redis.exceptions.RedisError:
                raise  # the loop backs off and retries the whole pass
            except Exception:  # one schedule's bug must not stop the others (or the replica)
                first = schedule_id not in self._reported
                self._reported.add(schedule_id)
                log.error("watchdog failed schedule=%s; looking again later", schedule_id, exc_info=first)
                later[schedule_id] = (now_ms + MAX_CHECK_MS) / 1000
        if later:
            self.conn.zadd(self.keys.running, later, xx=True)
        unmarked = [r for r in in_flight.values() if not r.started and states[r.job_id][0] == "started"]
        if unmarked:
            self._mark_started(unmarked, now_ms)
        return len(ids)

    def _mark_started(self, unmarked: list[runs.InFlight], now_ms: int) -> None:
        """Record the start of runs a plain ``rq worker`` began (``workers.Worker`` marks
        its own): RQ's ``started_at`` is the worker's clock, so it is only shown, kept
        between the dispatch and now."""
        pipe = self.conn.pipeline(transaction=False)
        for run in unmarked:
            pipe.hmget(rqkeys.job(run.job_id), ["started_at", "worker_name"])
        pipe2 = self.conn.pipeline(transaction=False)
        for run, (started_at, worker) in zip(unmarked, pipe.execute(), strict=True):
            started_ms = min(now_ms, max(run.dispatched_ms, _epoch_ms(started_at) or now_ms))
            scripts.run(
                self._scripts.start,
                [self.keys.schedule(run.schedule_id), self.keys.queued],
                [run.schedule_id, run.job_id, iso(started_ms), text(worker) or "?"],
                client=pipe2,
            )
        pipe2.execute()

    def _unlisted_since(self, job_id: str, unlisted: bool, now_ms: int) -> int | None:
        """Since when (ms) a queued job has been found in none of its queue's lists."""
        if not unlisted:
            self._unlisted.pop(job_id, None)
            return None
        return self._unlisted.setdefault(job_id, now_ms)

    def _read_runs(self, ids: list[str]) -> dict[str, runs.InFlight]:
        pipe = self.conn.pipeline(transaction=False)
        for schedule_id in ids:
            pipe.hmget(self.keys.schedule(schedule_id), runs.IN_FLIGHT_FIELDS)
        decoded = (runs.decode_in_flight(sid, row) for sid, row in zip(ids, pipe.execute(), strict=True))
        return {r.schedule_id: r for r in decoded if r is not None}

    def _conclude(self, run: runs.InFlight, verdict: Verdict, now_ms: int, ended_ms: int | None) -> None:
        if verdict.outcome is Outcome.SUCCEEDED:
            ack = runs.prepare_ack(self.keys, run, now_ms, by="watchdog", ended_ms=ended_ms)
            if AckReply(scripts.run(self._scripts.ack, ack.keys, ack.args)) is not AckReply.STALE:
                log.info(
                    "acked schedule=%s fire=%s job_id=%s attempt=%d epoch=%d by=watchdog",
                    run.schedule_id, iso(run.fire_ms), run.job_id, run.attempt, run.epoch,
                )  # fmt: skip
            return
        error = self._error_text(run.job_id) or verdict.reason
        if DESERIALIZATION_ERROR in error:
            error = self._unreadable(run, error)
        what = runs.fail(self.conn, self._scripts, self.keys, run, now_ms=now_ms, error=error)
        if self.metrics is not None:
            self.metrics.run_failed(what)
        # A retry is routine (WARNING); a fire given up or a schedule paused needs a person;
        # 'stale' means the run was concluded meanwhile (nothing happened here).
        level = {FailOutcome.RETRY: logging.WARNING, FailOutcome.STALE: logging.INFO}.get(what, logging.ERROR)
        log.log(
            level,
            "run failed schedule=%s fire=%s job_id=%s attempt=%d epoch=%d then=%s reason=%r",
            run.schedule_id, iso(run.fire_ms), run.job_id, run.attempt, run.epoch, what, error,
        )  # fmt: skip

    def _rq_states(self, job_ids: list[str]) -> dict[str, tuple[str | None, bool, int | None, bool]]:
        """RQ's status of each job, whether an execution of it is alive (for started
        and failed ones, by Redis's clock: :mod:`scheduler.engine.liveness`), when it
        ended (Redis time, epoch ms, for the ack latency metric), and for queued ones
        whether it is in its queue or the queue's intermediate list (:meth:`_listed`).
        Read-only."""
        pipe = self.conn.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(rqkeys.job(job_id), ["status", "origin", "ended_at", "worker_name"])
        rows = dict(zip(job_ids, pipe.execute(), strict=True))
        jobs = {j: (text(s), text(o)) for j, (s, o, _, _) in rows.items()}
        lives = liveness.read(self.conn, [j for j, (status, _) in jobs.items() if status in liveness.WATCHED])
        listed = self._listed({j: origin for j, (status, origin) in jobs.items() if status == "queued"})
        ended = self._ended_ms({j: (row[2], text(row[3])) for j, row in rows.items() if row[2]})
        out: dict[str, tuple[str | None, bool, int | None, bool]] = {}
        for job_id, (status, _) in jobs.items():
            life = lives.get(job_id)
            now_status, alive = (life.status, life.alive) if life else (status, False)
            out[job_id] = (now_status, alive, ended.get(job_id), listed.get(job_id, True))
        return out

    def _ended_ms(self, ended: dict[str, tuple[bytes, str | None]]) -> dict[str, int]:
        """RQ's ``ended_at`` (the worker's clock) as Redis time, by the offset the
        worker last measured (as stamped when it measured none: a plain ``rq worker``).
        Only the ack latency metric uses it, never a decision."""
        offsets = clockskew.read(self.conn, self.keys, {w for _, w in ended.values() if w})
        out = {}
        for job_id, (stamp, worker) in ended.items():
            ms = _epoch_ms(stamp)
            offset = offsets.get(worker) if worker else None
            if ms is not None and offset is not None:
                out[job_id] = clockskew.redis_ms(ms, offset.offset_ms)
            elif ms is not None:
                out[job_id] = ms
        return out

    def _listed(self, queued: dict[str, str | None]) -> dict[str, bool]:
        """Whether each queued job is in its queue or the queue's intermediate list,
        looked for within :data:`QUEUE_SCAN` of each end (True when it may be deeper).

        A queue with a few jobs to look for gets a bounded LPOS per job (Redis walks
        the list, nothing is sent); one with :data:`BULK_LOOKUP` or more gets its lists
        read once and every job looked up in them: a backlog of queued runs then costs
        one walk per watchdog batch, not one per run (the LPOS per run was Redis's
        largest cost while workers drained a backlog of 2,000: 30 calls, 1.5 ms per job)."""
        by_queue: dict[str, list[str]] = {}
        for job_id, origin in queued.items():
            by_queue.setdefault(str(origin), []).append(job_id)
        out: dict[str, bool] = {}
        few = {q: ids for q, ids in by_queue.items() if len(ids) < BULK_LOOKUP}
        out.update(self._listed_each(few))
        out.update(self._listed_bulk({q: ids for q, ids in by_queue.items() if q not in few}))
        return out

    def _listed_each(self, by_queue: dict[str, list[str]]) -> dict[str, bool]:
        pipe = self.conn.pipeline(transaction=False)
        looked = [(job_id, name) for q, ids in by_queue.items() for job_id in ids for name in _lists(q)]
        for job_id, name in looked:
            pipe.llen(name)
            pipe.lpos(name, job_id, maxlen=QUEUE_SCAN)
            pipe.lpos(name, job_id, rank=-1, maxlen=QUEUE_SCAN)
        replies = iter(pipe.execute())
        out: dict[str, bool] = {}
        for job_id, _ in looked:
            length, head, tail = next(replies), next(replies), next(replies)
            found = head is not None or tail is not None or length > 2 * QUEUE_SCAN
            out[job_id] = out.get(job_id, False) or found
        return out

    def _listed_bulk(self, by_queue: dict[str, list[str]]) -> dict[str, bool]:
        if not by_queue:
            return {}
        names = [name for q in by_queue for name in _lists(q)]
        pipe = self.conn.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
        lengths = dict(zip(names, pipe.execute(), strict=True))
        readable = [n for n in names if 0 < lengths[n] <= 2 * QUEUE_SCAN]  # both ends = all of it
        for name in readable:
            pipe.lrange(name, 0, -1)
        contents = {n: {str(text(j)) for j in ids} for n, ids in zip(readable, pipe.execute(), strict=True)}
        out: dict[str, bool] = {}
        for q, job_ids in by_queue.items():
            lists = _lists(q)
            deeper = any(lengths[n] > 2 * QUEUE_SCAN for n in lists)
            for job_id in job_ids:
                out[job_id] = deeper or any(job_id in contents.get(n, ()) for n in lists)
        return out

    def _unreadable(self, run: runs.InFlight, error: str) -> str:
        """A worker whose serializer is not JSON popped the job and could not read it:
        name the cause, and remember the worker so ``rqbeat check`` reports its queue
        (RQ does not record a worker's serializer; this failure is how it shows)."""
        worker = text(self.conn.hget(rqkeys.job(run.job_id), "worker_name")) or "?"
        queue = run.schedule.queue
        self.conn.hset(self.keys.wrong_serializer, queue, worker)
        log.error(
            "serializer not JSON worker=%s queue=%s schedule=%s job_id=%s epoch=%d",
            worker, queue, run.schedule_id, run.job_id, run.epoch,
        )  # fmt: skip
        return (
            f"{error}: worker {worker} cannot read rqbeat's jobs (its serializer is not JSON; run "
            "`rqbeat worker` or `rq worker -S rq.serializers.JSONSerializer`)"
        )

    def _error_text(self, job_id: str) -> str:
        return error_text(self.conn, job_id)

    def _orphan(self, schedule_id: str, now_ms: int) -> None:
        """In the running set without a usable in-flight record: take it out, and mark
        it broken when its definition is what is damaged.

        The running set was read before the schedule's fields: a worker's ack landing
        in between (run acked, schedule back in ``due``) looks the same from here. So
        re-check under WATCH of the schedule's hash (every transition writes it) that
        it is still running without a usable record before breaking it."""
        k = self.keys
        with self.conn.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(k.schedule(schedule_id))  # type: ignore[no-untyped-call]
                # a watching pipeline runs commands at once, so these are fresh reads
                if pipe.zscore(k.running, schedule_id) is None or runs.read_in_flight(pipe, k, schedule_id):
                    return  # acked or re-dispatched meanwhile: nothing is wrong
                reason = self._orphan_reason(schedule_id)
                pipe.multi()
                scripts.run(
                    self._scripts.mark_broken,
                    k.mark_broken_keys(schedule_id),
                    [schedule_id, reason, iso(now_ms), HISTORY_MAXLEN],
                    client=pipe,
                )
                pipe.execute()
            except redis.exceptions.WatchError:
                return  # it changed under us; the next look decides
        log.error("broken schedule=%s error=%s", schedule_id, reason)

    def _orphan_reason(self, schedule_id: str) -> str:
        try:
            decode_definition(schedule_id, stored.read_text(self.conn, self.keys.schedule(schedule_id)))
        except CorruptDefinition as exc:
            return exc.reason[:500]
        return "in the running set without a readable in-flight run"


def error_text(conn: Redis, job_id: str) -> str:
    """The last line of the job's exception, when RQ kept it (read-only)."""
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
        result = job.latest_result()
    except Exception:  # noqa: BLE001 - best effort: the verdict stands without it
        return ""
    exc = getattr(result, "exc_string", None) or ""
    lines = [line for line in exc.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _lists(queue: str) -> tuple[str, str]:
    """Where a queued job of ``queue`` can be: the queue, or its intermediate list
    (popped by a worker, not yet started)."""
    return rqkeys.queue(queue), rqkeys.intermediate(queue)


def _epoch_ms(rq_time: bytes | None) -> int | None:
    """An RQ timestamp field (``2026-11-22T07:09:07.597123Z``) as epoch ms."""
    try:
        return round(utcparse(rq_time.decode()).timestamp() * 1000) if rq_time else None
    except ValueError:
        return None
