"""Scenario 1, burst dispatch: N schedules due in the same second, one leader, no workers.

Per repetition and N, on a fresh private Redis: N schedules ``report-<i>`` are
created as a user creates them, by ``rqbeat apply`` of a TOML file (scenario 7's
shape: zone ``Europe/Berlin``, ``max_attempts = 3``, owner ``apply:<file>``), each with
the 6-field cron expression ``<s> <m> <h> * * *`` whose next fire is the due second T
(a whole second far enough ahead for the apply to finish; a set-up that overruns it
is done again with twice the lead). One
``rqbeat run`` replica starts and takes the lease; the benchmark then polls
``LLEN rq:queue:default`` every 1 ms from just before T until it equals N.
Throughput = N / (time all N are queued - T). As for any fire, the replica wakes
200 ms before T and decides the first batches (up to four of 1,000) ahead, so at T their
writes are all that is left; the rest is decided while Redis writes the last batch.

The practical limit is RQ's own batched enqueue on the same server and the same
machine: the database is flushed, and N jobs of the same shape (dotted function
path, JSON serializer, an ``rqbeat``-like meta dict, a description, explicit job ids)
are enqueued with ``Queue.enqueue_many`` in chunks of 1,000 built with
``Queue.prepare_data``, timed from the first ``prepare_data`` to the last EXEC.
N = 1k and 10k are repeated; 100k and 1M (skipped with --quick) run once. Also reported:
CPU time of the leader and of redis-server over the burst, per job.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench.core import Context, Result, Target
from bench.env import cpu_seconds_precise, sleep_until, stack, wait_for, wait_role
from bench.register import apply_command, timed, write_toml
from devtools.processes import RedisServer
from scheduler import cron
from scheduler.clock import iso, redis_now_ms

NAME = "burst"
TITLE = "1. Burst dispatch"
QUEUE_KEY = "rq:queue:default"
RQ_CHUNK = 1_000
TARGET_JOBS_S = 9_000
TARGET_RATIO = 1.0
#: The burst's jobs (the RQ baseline enqueues the same function) and its schedules' zone.
JOB = "bench.jobs.noop"
ZONE = "Europe/Berlin"
#: The replica must be up and settled this long before the due second.
SETTLE_MS = 3_000
#: Larger bursts run once: 100k takes minutes at today's dispatch rate.
MAX_REPEATED_N = 10_000


@dataclass(frozen=True)
class BurstRun:
    n: int
    due_s: float
    first_s: float  # first job visible in the queue
    all_s: float  # LLEN == n
    leader_cpu_s: float
    redis_cpu_s: float

    @property
    def jobs_per_s(self) -> float:
        return self.n / (self.all_s - self.due_s)


def cron_at(fire_ms: int) -> str:
    """A 6-field (seconds first) expression that fires daily at ``fire_ms`` (a whole second)."""
    t = time.gmtime(fire_ms // 1000)
    return f"{t.tm_sec} {t.tm_min} {t.tm_hour} * * *"


def every_minute_at(fire_ms: int) -> str:
    """Every minute at ``fire_ms``'s second: the common ``* * * * *`` shape, to the second."""
    return f"{time.gmtime(fire_ms // 1000).tm_sec} * * * * *"


def daily_at(fire_ms: int, zone: str) -> str:
    """A 6-field (seconds first) expression firing daily at ``fire_ms``'s wall time in ``zone``."""
    wall = datetime.fromtimestamp(fire_ms // 1000, cron.load_zone(zone))
    return f"{wall.second} {wall.minute} {wall.hour} * * *"


def apply_due_at(ctx: Context, server: RedisServer, n: int, lead_s: float, tag: str) -> int:
    """``rqbeat apply`` n schedules all due at one whole second; returns it (ms). The
    second is ``lead_s`` ahead; when the apply overruns it, all is done again with
    twice the lead (a loaded machine applies slower)."""
    conn = server.client()
    for _ in range(4):
        conn.flushall()
        due_ms = math.ceil((redis_now_ms(conn) + lead_s * 1000) / 1000) * 1000
        path = write_toml(ctx.workdir / tag / "burst.toml", n, target=JOB, cron=daily_at(due_ms, ZONE))
        took = timed(apply_command(server.url, path))
        if redis_now_ms(conn) < due_ms - SETTLE_MS:
            ctx.log(f"  applied {n} in {took:.1f}s")
            return due_ms
        ctx.log(f"  apply of {n} took {took:.1f}s, past the due second: again with a {2 * lead_s:.0f}s lead")
        lead_s *= 2
    raise RuntimeError(f"rqbeat apply of {n} schedules kept overrunning its lead (last {lead_s / 2:.0f}s)")


def burst_once(
    ctx: Context,
    server: RedisServer,
    n: int,
    tag: str,
    *,
    python: Sequence[str] = (),
    wrapped: bool = False,
    log_level: str = "info",
) -> BurstRun:
    """One burst of n on ``server`` (flushed first). ``python`` replaces the replica's
    interpreter command (a profiler); ``wrapped``: the replica is that command's child."""
    conn = server.client()
    # time to apply (~5k/s on a busy 2-core box), start a replica (~1-2 s) and settle
    lead_s = 6.0 + n / 5_000 + (4.0 if python else 0.0)
    due_ms = apply_due_at(ctx, server, n, lead_s, tag)
    with stack(ctx.workdir / tag, server) as st:
        replica = st.replica("r1", python=python, log_level=log_level)
        wait_role(conn, "r1", "leader", timeout=30)
        pid = _python_pid(replica.pid) if wrapped else replica.pid
        due_s = due_ms / 1000
        if time.time() > due_s - 0.2:
            raise RuntimeError(f"set-up overran the due second by {time.time() - due_s:.2f}s (n={n})")
        sleep_until(due_s - 0.1)
        cpu0, rcpu0 = cpu_seconds_precise(pid), cpu_seconds_precise(server.proc.pid)  # type: ignore[union-attr]
        first_s, all_s = _poll_queue(conn, n, timeout=60 + n / 1000)
        cpu1, rcpu1 = cpu_seconds_precise(pid), cpu_seconds_precise(server.proc.pid)  # type: ignore[union-attr]
        running = conn.zcard("rqbeat:running")
        if running != n:
            raise RuntimeError(f"{running} schedules running after the burst, expected {n}")
        if wrapped:  # stop the replica itself, so its wrapper can write its output
            os.kill(pid, signal.SIGTERM)
            replica.proc.wait(60)
    return BurstRun(n, due_s, first_s, all_s, cpu1 - cpu0, rcpu1 - rcpu0)


def _python_pid(wrapper_pid: int) -> int:
    """The replica's pid under a wrapper (py-spy launches it as its child)."""

    def child() -> int | None:
        path = Path(f"/proc/{wrapper_pid}/task/{wrapper_pid}/children")
        found = path.read_text().split() if path.exists() else []
        return int(found[0]) if found else None

    return wait_for(child, 10, what="the replica under its wrapper")


def _poll_queue(conn: Redis, n: int, timeout: float) -> tuple[float, float]:
    first = 0.0
    deadline = time.time() + timeout
    while True:
        length = conn.llen(QUEUE_KEY)
        now = time.time()
        if length and not first:
            first = now
        if length >= n:
            return first, now
        if now > deadline:
            raise TimeoutError(f"only {length} of {n} jobs queued after {timeout:.0f}s")
        time.sleep(0.001)


def rq_baseline(conn: Redis, n: int) -> tuple[float, float]:
    """RQ's batched enqueue of n rqbeat-shaped jobs: (jobs/s, client CPU s)."""
    conn.flushall()
    queue = Queue("default", connection=conn, serializer=JSONSerializer)
    queue.get_redis_server_version()
    fire_ms = redis_now_ms(conn) // 1000 * 1000
    fire_iso = iso(fire_ms)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, n, RQ_CHUNK):
        datas = []
        for i in range(start, min(n, start + RQ_CHUNK)):
            sid = f"report-{i:07d}"  # the ids apply gave the schedules
            meta = {
                "rqbeat": {
                    "schedule": sid, "fire_at": fire_iso, "fire_ms": fire_ms, "attempt": 1,
                    "key": f"{sid}:{fire_ms}", "epoch": 1, "version": "1", "namespace": "rqbeat",
                }
            }  # fmt: skip
            datas.append(
                Queue.prepare_data(
                    "bench.jobs.noop",
                    args=[],
                    kwargs={},
                    description=f"rqbeat {sid} fire={fire_iso}",
                    job_id=f"{sid}-{fire_ms}-1",
                    meta=meta,
                )
            )
        queue.enqueue_many(datas)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if conn.llen(QUEUE_KEY) != n:
        raise RuntimeError("the RQ baseline did not enqueue every job")
    return n / elapsed, cpu


def run(ctx: Context) -> Result:
    sizes = [1_000, 10_000] if ctx.quick else [1_000, 10_000, 100_000, 1_000_000]
    res = Result(NAME, TITLE, __doc__ or "")
    for n in sizes:
        label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        target = n >= 10_000
        for rep in range(ctx.reps if n <= MAX_REPEATED_N else 1):
            with ctx.redis(f"burst-{label}-{rep}") as server:
                ctx.log(f"burst n={n} rep={rep + 1}/{ctx.reps}")
                b = burst_once(ctx, server, n, f"burst-{label}-{rep}")
                rq_rate, rq_cpu = rq_baseline(server.client(), n)
            ctx.log(f"  rqbeat {b.jobs_per_s:,.0f} jobs/s, RQ enqueue_many {rq_rate:,.0f} jobs/s")
            res.metric(
                f"N={label}: rqbeat jobs/s (due second → all in queue)",
                "jobs/s",
                target=Target(">=", TARGET_JOBS_S, "≥ 9,000") if target else None,
                digits=0,
            ).values.append(b.jobs_per_s)
            res.metric(f"N={label}: RQ enqueue_many jobs/s (limit)", "jobs/s", digits=0).values.append(
                rq_rate
            )
            res.metric(
                f"N={label}: rqbeat / RQ enqueue_many",
                "ratio",
                target=Target(">=", TARGET_RATIO, f"≥ {TARGET_RATIO:.2f}") if target else None,
                digits=2,
            ).values.append(b.jobs_per_s / rq_rate)
            res.metric(f"N={label}: due second → all queued", "s", digits=3).values.append(b.all_s - b.due_s)
            res.metric(f"N={label}: due second → first job queued", "ms", digits=1).values.append(
                (b.first_s - b.due_s) * 1000
            )
            res.metric(f"N={label}: leader CPU per job", "µs", digits=0).values.append(
                b.leader_cpu_s / n * 1e6
            )
            res.metric(f"N={label}: redis-server CPU per job (rqbeat)", "µs", digits=0).values.append(
                b.redis_cpu_s / n * 1e6
            )
            res.metric(f"N={label}: RQ enqueue_many client CPU per job", "µs", digits=0).values.append(
                rq_cpu / n * 1e6
            )
    res.notes.append(
        "Schedules are created by `rqbeat apply` of a TOML file (realistic: a zone, max_attempts, "
        "an apply owner); the replica logs at its default level (info), i.e. one line per "
        "dispatched job."
    )
    return res
