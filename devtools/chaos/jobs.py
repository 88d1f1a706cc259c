"""The job every chaos schedule runs. It records each run in Redis for the audit.

A run appends one JSON line to :data:`RUNS_KEY` — its side effect, written *before*
the job returns or raises, so a worker killed between this write and RQ's success
transaction leaves a recorded run without an ack: the at-least-once window the
audit has to explain. Failures are deterministic per (fire, attempt), so a run can
be replayed from its key.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import dataclass

from rq import get_current_job

from workers import current_fire

RUNS_KEY = "chaos:runs"


class ChaosFailure(Exception):
    """The injected failure of a job (as app code raising would)."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as the job recorded it."""

    key: str
    schedule: str
    fire_ms: int
    attempt: int
    job_id: str
    worker: str
    ok: bool
    at_ms: int  # when the side effect was recorded (the end of the run)
    started_ms: int  # when the job function began

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "schedule": self.schedule,
                "fire_ms": self.fire_ms,
                "attempt": self.attempt,
                "job_id": self.job_id,
                "worker": self.worker,
                "ok": self.ok,
                "at_ms": self.at_ms,
                "started_ms": self.started_ms,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> RunRecord:
        d = json.loads(raw)
        return cls(
            key=str(d["key"]),
            schedule=str(d["schedule"]),
            fire_ms=int(d["fire_ms"]),
            attempt=int(d["attempt"]),
            job_id=str(d["job_id"]),
            worker=str(d["worker"]),
            ok=bool(d["ok"]),
            at_ms=int(d["at_ms"]),
            started_ms=int(d["started_ms"]),
        )


def fails(key: str, attempt: int, fail_pct: int) -> bool:
    """Whether attempt ``attempt`` of fire ``key`` fails: stable, ~``fail_pct`` %."""
    return fail_pct > 0 and zlib.crc32(f"{key}:{attempt}".encode()) % 100 < fail_pct


def work(fail_pct: int = 0, sleep_ms: int = 0) -> str:
    """Sleep ``sleep_ms``, record the run, then succeed or (``fail_pct`` %) raise."""
    fire = current_fire()
    job = get_current_job()
    assert fire is not None and job is not None, "a chaos job runs only under rqbeat"
    started_ms = int(time.time() * 1000)
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    failing = fails(fire.key, fire.attempt, fail_pct)
    record = RunRecord(
        key=fire.key,
        schedule=fire.schedule,
        fire_ms=fire.fire_ms,
        attempt=fire.attempt,
        job_id=job.id,
        worker=job.worker_name or f"pid-{os.getppid()}",
        ok=not failing,
        at_ms=int(time.time() * 1000),
        started_ms=started_ms,
    )
    job.connection.rpush(RUNS_KEY, record.to_json())
    if failing:
        raise ChaosFailure(f"injected failure of {fire.key} attempt {fire.attempt}")
    return fire.key
