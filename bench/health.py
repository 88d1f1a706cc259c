"""Scenario 8, the health probe: the cost of ``rqbeat check --health-only`` at N schedules.

N schedules are written through the public API (``Client.upsert_many``, an hourly cron
each), then the stall indexes are filled as a running cluster leaves them: every
schedule in ``<ns>:stale`` with a deadline in the future (each has succeeded), plus a
fixed handful of findings (20 stale schedules, 10 runs queued too long, 5 broken
schedules, one queue without a worker). The probe, ``scheduler.health.read_health``
(what ``check --health-only`` runs after its lease read), is then timed 50 times; the
Redis commands it costs are the delta of ``INFO commandstats`` (less the benchmark's
own INFO calls) divided by the calls. Also timed once: the whole CLI command
(interpreter start-up included). The point is the comparison: the probe's commands and
time must not grow with N (100k vs 1M; 10k vs 100k with --quick).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from redis import Redis

from bench.core import Context, Result, Target
from bench.env import REPO
from scheduler.clock import iso, redis_now_ms
from scheduler.health import FindingKind, read_health
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import Client

NAME = "health"
TITLE = "8. Health probe"
CALLS = 50
K = Keys()
#: Findings seeded at every N: the probe's work follows them, not N.
STALE, QUEUED, BROKEN = 20, 10, 5


def seed(conn: Redis, n: int, ctx: Context) -> None:
    client = Client(conn)
    chunk = 20_000
    for start in range(0, n, chunk):
        client.upsert_many(
            [
                Schedule(id=f"s-{i:07d}", target="bench.jobs.noop", cron=f"{i % 60} * * * *")
                for i in range(start, min(n, start + chunk))
            ]
        )
        ctx.log(f"  upserted {min(n, start + chunk):,}/{n:,}")
    now_ms = redis_now_ms(conn)
    pipe = conn.pipeline(transaction=False)
    for start in range(0, n, chunk):  # every schedule succeeded lately: stale in 3 hours
        pipe.zadd(
            K.stale,
            {f"s-{i:07d}": (now_ms + 3 * 3_600_000 + i) / 1000 for i in range(start, min(n, start + chunk))},
        )
    pipe.execute()
    _findings(conn, now_ms)


def _findings(conn: Redis, now_ms: int) -> None:
    """A fixed set of findings, written as the transitions would leave them."""
    pipe = conn.pipeline(transaction=False)
    for i in range(STALE):
        pipe.zadd(K.stale, {f"s-{i:07d}": (now_ms - 60_000) / 1000})
    for i in range(STALE, STALE + QUEUED):
        sid, job = f"s-{i:07d}", f"s-{i:07d}-{now_ms}-1"
        pipe.hset(
            K.schedule(sid),
            mapping={
                "state": "running",
                "job_id": job,
                "job_queue": "nobody",
                "dispatched_at": iso(now_ms - 120_000),
            },
        )
        pipe.zadd(K.queued, {sid: (now_ms - 60_000) / 1000})
        pipe.hset(f"rq:job:{job}", mapping={"status": "queued", "origin": "nobody"})
    for i in range(STALE + QUEUED, STALE + QUEUED + BROKEN):
        sid = f"s-{i:07d}"
        pipe.hset(K.schedule(sid), mapping={"state": "broken", "error": "bench: a broken definition"})
        pipe.sadd(K.broken, sid)
    pipe.zadd(K.queues, {"nobody": now_ms / 1000})
    pipe.execute()


def probe(conn: Redis) -> tuple[float, float]:
    """Median milliseconds and commands per :func:`read_health` call."""
    before = _commands(conn)
    times = []
    for _ in range(CALLS):
        t0 = time.perf_counter()
        health = read_health(conn, K)
        times.append((time.perf_counter() - t0) * 1000)
    spent = _commands(conn) - before - 1  # the second INFO
    expected = {FindingKind.STALE: STALE, FindingKind.QUEUED_TOO_LONG: QUEUED, FindingKind.BROKEN: BROKEN}
    for kind, count in expected.items():
        if health.counts[kind] != count:
            raise RuntimeError(f"the probe found {health.counts[kind]} {kind}, expected {count}")
    return statistics.median(times), spent / CALLS


def _commands(conn: Redis) -> int:
    return sum(int(v["calls"]) for v in conn.info("commandstats").values())


def run(ctx: Context) -> Result:
    sizes = (10_000, 100_000) if ctx.quick else (100_000, 1_000_000)
    res = Result(NAME, TITLE, __doc__ or "")
    for n in sizes:
        label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        with ctx.redis(f"health-{label}") as server:
            conn = server.client()
            ctx.log(f"seeding {n:,} schedules through Client.upsert_many")
            seed(conn, n, ctx)
            for rep in range(ctx.reps):
                ms, commands = probe(conn)
                ctx.log(f"  N={label} rep {rep + 1}: {ms:.2f} ms, {commands:.0f} commands per probe")
                res.metric(
                    f"N={label}: probe time", "ms", target=Target("<=", 50, "≤ 50"), digits=2
                ).values.append(ms)
                res.metric(f"N={label}: Redis commands per probe", "commands", digits=0).values.append(
                    commands
                )
            cli = [
                sys.executable,
                "-m",
                "scheduler",
                "--redis-url",
                server.url,
                "check",
                "--health-only",
                "--warn",
            ]
            t0 = time.perf_counter()
            subprocess.run(cli, cwd=REPO, capture_output=True, check=True)
            res.metric(f"N={label}: `rqbeat check --health-only` wall time", "s", digits=2).values.append(
                time.perf_counter() - t0
            )
    res.notes.append(
        f"Each N holds the same findings ({STALE} stale, {QUEUED} queued too long, {BROKEN} broken, "
        "1 queue without a worker): equal command counts at both N show the probe reads no per-schedule data."
    )
    return res
