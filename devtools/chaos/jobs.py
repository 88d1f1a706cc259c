"""The job every chaos schedule runs. It records each run in Redis for the audit.

A run appends one JSON line to the file named by :data:`RUNS_FILE_ENV` — its side
effect, written *before* the job returns or raises, so a worker killed between this
write and RQ's success transaction leaves a recorded run without an ack: the
at-least-once window the audit has to explain. A file, not Redis: a run's side
effect must outlive a Redis that loses its data (the rig wipes it on purpose). One
``write`` of one line under ``O_APPEND``, so lines from concurrent workers never mix.
Times are the rig's true wall clock: a worker whose clock the rig skewed
(``devtools/skewclock``) takes its offset back out. Failures are deterministic per
(fire, attempt), so a run can be replayed from its key.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import dataclass

from rq import get_current_job

from workers import current_fire

#: The file every run appends its record to (set by the rig for its workers).
RUNS_FILE_ENV = "RQBEAT_CHAOS_RUNS_FILE"
#: devtools.skewclock's ``OFFSET_ENV``, spelt out: importing that module in a skewed
#: worker would install the shift a second time (tests/chaos/test_audit.py pins it).
SKEW_ENV = "RQBEAT_TEST_CLOCK_OFFSET_S"


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


def true_now_ms() -> int:
    """Wall-clock ms without the offset a skewed worker runs with: the audit compares
    run times with the rig's fault times."""
    return int((time.time() - float(os.environ.get(SKEW_ENV) or 0)) * 1000)


def record_run(record: RunRecord) -> None:
    line = (record.to_json() + "\n").encode()
    fd = os.open(os.environ[RUNS_FILE_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def work(fail_pct: int = 0, sleep_ms: int = 0) -> str:
    """Sleep ``sleep_ms``, record the run, then succeed or (``fail_pct`` %) raise."""
    fire = current_fire()
    job = get_current_job()
    assert fire is not None and job is not None, "a chaos job runs only under rqbeat"
    started_ms = true_now_ms()
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
        at_ms=true_now_ms(),
        started_ms=started_ms,
    )
    record_run(record)
    if failing:
        raise ChaosFailure(f"injected failure of {fire.key} attempt {fire.attempt}")
    return fire.key
