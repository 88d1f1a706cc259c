"""Scenario: what each ``rqbeat worker --mode`` costs.

No replica: each run is dispatched in this process (``Dispatcher`` under a lease
token set by hand), so only the worker is measured. A no-op job
(``bench.jobs.noop``) on one queue.

* latency: one run at a time, dispatch → ack (the ``dispatched`` and ``succeeded``
  history entries, both Redis time), median of N (20, 5 with --quick) after 2
  warm-up runs;
* throughput: N schedules (200, 50 with --quick) dispatched at once, then the worker
  drains them; first to last ack, per worker process (a pool of 2 processes: its
  total / 2).

Each repetition measures every mode in turn; the table shows the median of the
repetitions [min-max].
"""

from __future__ import annotations

import functools
import statistics
import sys

from redis import Redis

from bench.core import Context, Result
from bench.env import stack, wait_for
from scheduler.clock import redis_now_ms
from scheduler.engine.dispatch import Dispatcher
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import Client

NAME = "workers"
TITLE = "Worker modes: dispatch → ack and throughput"
QUEUE = "bench"
MODES = ("fork", "simple", "pool")
POOL_PROCESSES = 2
WARMUP = 2
K = Keys()


def dispatch(conn: Redis, ids: list[str]) -> None:
    client = Client(conn)
    for sid in ids:
        client.trigger(sid)
    conn.set(K.leader, "1:bench")
    Dispatcher(conn, K).dispatch(redis_now_ms(conn), "1:bench", len(ids))


def acks(conn: Redis, sid: str) -> list[int]:
    return [e.at_ms for e in Client(conn).history(sid, count=1000) if e.event == "succeeded"]


def latency_ms(conn: Redis, runs: int) -> float:
    Client(conn).upsert(Schedule(id="lat", target="bench.jobs.noop", every_ms=3_600_000, queue=QUEUE))
    samples = []
    for n in range(runs + WARMUP):
        dispatch(conn, ["lat"])
        sent = Client(conn).history("lat", count=1)[-1].at_ms
        acked = wait_for(functools.partial(_acked_after, conn, "lat", n), 30, 0.001, "an ack")
        if n >= WARMUP:
            samples.append(acked - sent)
    return statistics.median(samples)


def _acked_after(conn: Redis, sid: str, seen: int) -> int | None:
    """The newest ack's time once there are more than ``seen`` acks."""
    done = acks(conn, sid)
    return done[-1] if len(done) > seen else None


def throughput(conn: Redis, jobs: int) -> float:
    ids = [f"t{i}" for i in range(jobs)]
    client = Client(conn)
    client.upsert_many(
        [Schedule(id=s, target="bench.jobs.noop", every_ms=3_600_000, queue=QUEUE) for s in ids]
    )
    dispatch(conn, ids)
    wait_for(lambda: all(acks(conn, s) for s in ids), 300, 0.05, f"{jobs} acks")
    stamps = sorted(acks(conn, s)[-1] for s in ids)
    return (jobs - 1) / max(stamps[-1] - stamps[0], 1) * 1000


def measure(ctx: Context, res: Result, mode: str) -> None:
    with ctx.redis(f"workers-{mode}") as server, stack(ctx.workdir / f"workers-{mode}", server) as st:
        conn = server.client()
        extra = ["--processes", str(POOL_PROCESSES)] if mode == "pool" else []
        st.start(
            f"worker-{mode}",
            [sys.executable, "-m", "scheduler", "--redis-url", server.url, "worker", QUEUE,
             "--mode", mode, "--log-level", "warning", *extra],
        )  # fmt: skip
        res.metric(f"{mode}: dispatch → ack p50", "ms").values.append(
            latency_ms(conn, 5 if ctx.quick else 20)
        )
        per = POOL_PROCESSES if mode == "pool" else 1
        rate = throughput(conn, 50 if ctx.quick else 200) / per
        res.metric(f"{mode}: jobs/s per worker process", "jobs/s").values.append(rate)


def run(ctx: Context) -> Result:
    res = Result(NAME, TITLE, __doc__ or "")
    for rep in range(ctx.reps):  # modes interleaved: a burst of load elsewhere hits all alike
        for mode in MODES:
            ctx.log(f"worker mode {mode} rep={rep + 1}/{ctx.reps}")
            measure(ctx, res, mode)
    return res
