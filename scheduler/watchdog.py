"""The watchdog: the leader's backstop for runs nobody acknowledged.

Each in-flight run is looked at when its score in ``<ns>:running`` comes up. RQ's
state is *read* (job hash, execution registries), never cleaned: RQ's registry
cleanup runs failure callbacks and mutates jobs, so rqbeat keeps out of it.

=======================  ======================================================
RQ says                  rqbeat does
=======================  ======================================================
finished                 ack, exactly as the worker would have (plain rq worker)
failed/stopped/canceled  failure: retry with back-off, give up, or pause
started, heartbeat gone  abandoned (worker died): failure
job hash gone            lost (ttl expired, data lost): failure
queued/started, healthy  look again later, at growing intervals
=======================  ======================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.exceptions
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from scheduler import runs, scripts
from scheduler.clock import iso
from scheduler.errors import RqbeatError
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.records import decode_definition, text

log = logging.getLogger(__name__)

MIN_CHECK_MS = 500
MAX_CHECK_MS = 30_000
_FAILED = {"failed", "stopped", "canceled"}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What RQ's state means for one in-flight run."""

    outcome: str  # "succeeded" | "failed" | "pending"
    reason: str = ""


def judge(status: str | None, heartbeat_expires_s: float | None, now_ms: int) -> Verdict:
    """Pure: the verdict from RQ's job status and the run's heartbeat expiry."""
    if status is None:
        return Verdict("failed", "lost: the RQ job no longer exists")
    if status == "finished":
        return Verdict("succeeded")
    if status in _FAILED:
        return Verdict("failed", f"RQ job {status}")
    if status == "started" and (heartbeat_expires_s is None or heartbeat_expires_s * 1000 < now_ms):
        return Verdict("failed", "abandoned: the worker's heartbeat expired")
    return Verdict("pending")


def next_check_ms(dispatched_ms: int, now_ms: int) -> int:
    """Look again after half the run's age so far, within [0.5 s, 30 s]."""
    return now_ms + max(MIN_CHECK_MS, min(MAX_CHECK_MS, (now_ms - dispatched_ms) // 2))


class Watchdog:
    """Checks in-flight runs whose look-again time has come."""

    def __init__(self, conn: Redis, keys: Keys, *, batch_size: int = 1_000) -> None:
        self.conn = conn
        self.keys = keys
        self.batch_size = batch_size
        self._scripts = scripts.Scripts(conn)

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
                status, expires = states[run.job_id]
                verdict = judge(status, expires, now_ms)
                if verdict.outcome == "pending":
                    later[schedule_id] = next_check_ms(run.dispatched_ms, now_ms) / 1000
                else:
                    self._conclude(run, verdict, now_ms)
            except redis.exceptions.RedisError:
                raise  # the loop backs off and retries the whole pass
            except Exception:  # one schedule's bug must not stop the others (or the replica)
                log.exception("watchdog failed schedule=%s; looking again later", schedule_id)
                later[schedule_id] = (now_ms + MAX_CHECK_MS) / 1000
        if later:
            self.conn.zadd(self.keys.running, later, xx=True)
        return len(ids)

    def _read_runs(self, ids: list[str]) -> dict[str, runs.InFlight]:
        pipe = self.conn.pipeline(transaction=False)
        for schedule_id in ids:
            pipe.hmget(self.keys.schedule(schedule_id), runs.IN_FLIGHT_FIELDS)
        decoded = (runs.decode_in_flight(sid, row) for sid, row in zip(ids, pipe.execute(), strict=True))
        return {r.schedule_id: r for r in decoded if r is not None}

    def _conclude(self, run: runs.InFlight, verdict: Verdict, now_ms: int) -> None:
        if verdict.outcome == "succeeded":
            ack = runs.prepare_ack(self.keys, run, now_ms)
            if scripts.run(self._scripts.ack, ack.keys, ack.args):
                log.info("acked schedule=%s job=%s by=watchdog", run.schedule_id, run.job_id)
            return
        error = self._error_text(run.job_id) or verdict.reason
        what = runs.fail(self.conn, self._scripts, self.keys, run, now_ms=now_ms, error=error)
        log.warning(
            "run failed schedule=%s fire=%s job=%s attempt=%d reason=%r -> %s",
            run.schedule_id, iso(run.fire_ms), run.job_id, run.attempt, error, what,
        )  # fmt: skip

    def _rq_states(self, job_ids: list[str]) -> dict[str, tuple[str | None, float | None]]:
        """RQ's status of each job and, for started ones, the heartbeat expiry (epoch s)
        of its newest live execution in ``rq:wip:<queue>``. Read-only."""
        pipe = self.conn.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(f"rq:job:{job_id}", ["status", "origin"])
        jobs = {j: (text(s), text(o)) for j, (s, o) in zip(job_ids, pipe.execute(), strict=True)}
        started = [j for j, (status, _) in jobs.items() if status == "started"]
        pipe = self.conn.pipeline(transaction=False)
        for job_id in started:
            pipe.zrange(f"rq:executions:{job_id}", 0, -1)
        executions = dict(zip(started, pipe.execute(), strict=True))
        pipe = self.conn.pipeline(transaction=False)
        for job_id in started:
            members = [f"{job_id}:{text(e)}" for e in executions[job_id]] or [f"{job_id}:none"]
            pipe.zmscore(f"rq:wip:{jobs[job_id][1]}", members)
        beats = dict(zip(started, pipe.execute(), strict=True))
        out: dict[str, tuple[str | None, float | None]] = {}
        for job_id, (status, _) in jobs.items():
            alive = [s for s in beats.get(job_id, []) if s is not None]
            out[job_id] = (status, max(alive) if alive else None)
        return out

    def _error_text(self, job_id: str) -> str:
        """The last line of the job's exception, when RQ kept it (read-only)."""
        try:
            job = Job.fetch(job_id, connection=self.conn, serializer=JSONSerializer)
            result = job.latest_result()
        except Exception:  # noqa: BLE001 - best effort: the verdict stands without it
            return ""
        exc = getattr(result, "exc_string", None) or ""
        lines = [line for line in exc.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""

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
                    [k.schedule(schedule_id), k.due, k.running, k.history(schedule_id)],
                    [schedule_id, reason, iso(now_ms), HISTORY_MAXLEN],
                    client=pipe,
                )
                pipe.execute()
            except redis.exceptions.WatchError:
                return  # it changed under us; the next look decides
        log.error("broken schedule=%s error=%s", schedule_id, reason)

    def _orphan_reason(self, schedule_id: str) -> str:
        definition = self.conn.hget(self.keys.schedule(schedule_id), "definition")
        try:
            decode_definition(schedule_id, text(definition))
        except (RqbeatError, ValueError) as exc:
            return str(exc)[:500]
        return "in the running set without a readable in-flight run"
