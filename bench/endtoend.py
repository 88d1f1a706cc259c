"""Scenario 9, end to end: schedules made with ``rqbeat apply``, run and acked by ``rqbeat worker``s.

Everything goes the user's way. The jobs live in an app directory outside the
repository (``myapp/tasks/reports.py``, a no-op ``daily_summary``); the schedules
come from a TOML file applied with ``rqbeat apply`` (``target =
"myapp.tasks.reports.daily_summary"``, ``timezone = "Europe/Berlin"``,
``max_attempts = 3``, queue ``reports``); workers are ``rqbeat worker reports --mode
simple`` started in the app directory; one ``rqbeat run`` replica dispatches.

* **end to end**: N schedules (10,000; 2,000 with --quick) ``every = "10s"`` for a
  window (60 s; 30 s with --quick) with 8 workers; then the replica stops and the
  workers finish what was dispatched. Every dispatched fire must be acked once (the
  ``dispatched`` and ``succeeded`` history entries per schedule and fire); fires the
  leader had to coalesce because the previous run was still going count as missed.
  Also: fire → ack latency (``fire_at`` to the ``succeeded`` entry's Redis time).
* **ack overhead**: one worker drains M queued no-op jobs (2,000; 500 with --quick):
  stock RQ (``rq worker -w rq.worker.SimpleWorker``) on jobs RQ's ``enqueue_many``
  queued; ``rqbeat worker --mode simple`` on the same kind of jobs; and ``rqbeat
  worker --mode simple`` on M runs rqbeat dispatched, each acked. Cost per job =
  the time from the worker's registration to the last job finished, over the jobs
  finished in it. The three run in turn in every repetition.
* **scaling**: M runs rqbeat dispatched (10,000; 2,000 with --quick) drained by 1, 2,
  4 and 8 workers: jobs/s once every worker has registered, and where the CPU goes
  per job (redis-server, all workers, the leader), read from ``/proc``. With two
  cores the sum of those is the ceiling: 2 CPU-s / (CPU-s per job).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from rq import Queue, Worker
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.core import Context, Result, Target, percentile
from bench.env import Process, Stack, cpu_seconds_precise, stack, wait_for, wait_role
from devtools import apps
from devtools.processes import RedisServer
from scheduler import Client
from scheduler.clock import parse_iso_ms, redis_now_ms
from scheduler.keys import Keys
from scheduler.records import text

NAME = "endtoend"
TITLE = "9. End to end: apply → dispatch → rqbeat worker → ack"
TARGET = "myapp.tasks.reports.daily_summary"
QUEUE = "reports"
DRAIN_QUEUE = "drain"
E2E_WORKERS = 8
SCALING = (1, 2, 4, 8)
INTERVAL_S = 10
#: The ack may add at most this much to a stock RQ worker's cost per job.
MAX_ACK_OVERHEAD = 0.10
K = Keys()
STOCK_WORKER = [
    sys.executable, "-m", "rq.cli", "worker", "-w", "rq.worker.SimpleWorker",
    "-S", "rq.serializers.JSONSerializer", "--logging_level", "WARNING",
]  # fmt: skip

APP = '''"""A stand-in for a user's app: the jobs rqbeat's benchmark schedules."""


def daily_summary() -> None:
    """Does nothing: the benchmark measures scheduling, dispatch and the ack."""
'''


def write_app(root: Path) -> Path:
    """``root/myapp/tasks/reports.py``, outside the repository; returns ``root``."""
    return apps.write_app(root, APP)


def write_toml(path: Path, n: int, queue: str, every: str) -> Path:
    with path.open("w") as f:
        f.write(
            f'[defaults]\ntarget = "{TARGET}"\nqueue = "{queue}"\n'
            f'timezone = "Europe/Berlin"\nmax_attempts = 3\nevery = "{every}"\n\n'
        )
        for i in range(n):
            f.write(f"[schedules.report-{i:06d}]\n")
    return path


def rqbeat(server: RedisServer, *args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler", "--redis-url", server.url, *args]


def apply(st: Stack, server: RedisServer, app: Path, toml: Path) -> None:
    proc = st.start("apply", rqbeat(server, "apply", str(toml), "--quiet"), cwd=app)
    code = proc.proc.wait(300)
    if code != 0:
        raise RuntimeError(f"rqbeat apply exited {code}: {proc.output()[-500:]}")


def start_workers(
    st: Stack, server: RedisServer, app: Path, queue: str, k: int, *, stock: bool = False
) -> list[Process]:
    if stock:
        return [
            st.start(f"rq-worker-{i}", [*STOCK_WORKER, "--url", server.url, queue], cwd=app) for i in range(k)
        ]
    return [
        st.start(
            f"worker-{i}",
            rqbeat(server, "worker", queue, "--mode", "simple", "--log-level", "warning"),
            cwd=app,
        )
        for i in range(k)
    ]


def registered(conn: Redis, queue: str) -> int:
    return len(Worker.all(queue=Queue(queue, connection=conn)))


@dataclass
class Drain:
    """One drain of queued jobs by k workers, from all registered to the last done."""

    jobs: int
    seconds: float
    cpu_redis: float
    cpu_workers: float
    cpu_leader: float

    @property
    def per_s(self) -> float:
        return self.jobs / self.seconds

    def us_per_job(self, cpu: float) -> float:
        return cpu / self.jobs * 1e6


def drain(
    conn: Redis,
    server: RedisServer,
    workers: list[Process],
    queue: str,
    total: int,
    *,
    leader: Process | None,
) -> Drain:
    """Wait until every worker registered, then until ``total`` jobs finished; the
    window between the two (CPU from /proc over the same window)."""
    finished = FinishedJobRegistry(queue, connection=conn, serializer=JSONSerializer)
    wait_for(lambda: registered(conn, queue) >= len(workers), 120, 0.005, f"{len(workers)} workers")
    pids = [w.pid for w in workers]
    redis_pid = server.proc.pid  # type: ignore[union-attr]
    t0 = time.monotonic()
    done0 = finished.count
    cpu0 = (cpu_seconds_precise(redis_pid), sum(map(cpu_seconds_precise, pids)), _cpu(leader))
    wait_for(lambda: finished.count >= total, 600, 0.005, f"{total} jobs finished")
    t1 = time.monotonic()
    cpu1 = (cpu_seconds_precise(redis_pid), sum(map(cpu_seconds_precise, pids)), _cpu(leader))
    jobs = finished.count - done0
    if jobs <= 0:
        raise RuntimeError("the workers finished every job before all of them registered; raise M")
    return Drain(jobs, t1 - t0, *(b - a for a, b in zip(cpu0, cpu1, strict=True)))


def _cpu(proc: Process | None) -> float:
    return cpu_seconds_precise(proc.pid) if proc is not None else 0.0


def queue_rqbeat_runs(conn: Redis, ids: list[str], queue: str) -> None:
    """Trigger every schedule (the leader dispatches each as a run); wait until all queued."""
    client = Client(conn)
    for sid in ids:
        client.trigger(sid)
    q = Queue(queue, connection=conn)
    wait_for(lambda: q.count >= len(ids), 300, 0.01, f"{len(ids)} runs queued")


def end_to_end(ctx: Context, res: Result) -> None:
    n = 2_000 if ctx.quick else 10_000
    window_s = 30 if ctx.quick else 60
    work = ctx.workdir / "endtoend"
    app = write_app(work / "app")
    toml = write_toml(work / "reports.toml", n, QUEUE, f"{INTERVAL_S}s")
    with ctx.redis("endtoend") as server, stack(work / "logs", server) as st:
        conn = server.client()
        ctx.log(f"end to end: rqbeat apply of {n} schedules every {INTERVAL_S}s, {E2E_WORKERS} workers")
        apply(st, server, app, toml)
        workers = start_workers(st, server, app, QUEUE, E2E_WORKERS)
        wait_for(lambda: registered(conn, QUEUE) >= E2E_WORKERS, 120, 0.01, "workers")
        leader = st.replica("leader", log_level="warning")
        wait_role(conn, "leader", "leader")
        t0 = redis_now_ms(conn)
        cpu0 = sum(map(cpu_seconds_precise, [w.pid for w in workers]))
        time.sleep(window_s)  # the measured window itself, not a wait for a condition
        leader.stop()
        wait_for(lambda: conn.zcard(K.running) == 0, 300, 0.05, "every dispatched run to end")
        t1 = redis_now_ms(conn)
        cpu1 = sum(map(cpu_seconds_precise, [w.pid for w in workers]))
        fires = audit(conn, [f"report-{i:06d}" for i in range(n)])
    lat = fires.latencies_ms
    res.metric("end to end: fires dispatched", "fires", digits=0).values.append(fires.dispatched)
    res.metric("end to end: fires/s dispatched", "fires/s", digits=0).values.append(
        fires.dispatched / ((t1 - t0) / 1000)
    )
    res.metric(
        "end to end: dispatched fires acked", "ratio", target=Target(">=", 1.0, "every fire"), digits=4
    ).values.append(fires.acked / max(fires.dispatched, 1))
    res.metric(
        "end to end: fires acked more than once", "fires", target=Target("<=", 0, "0"), digits=0
    ).values.append(fires.doubled)
    res.metric("end to end: fires coalesced (previous run still going)", "fires", digits=0).values.append(
        fires.missed
    )
    res.metric("end to end: fire → ack p50", "ms", digits=1).values.append(percentile(lat, 50))
    res.metric("end to end: fire → ack p99", "ms", digits=1).values.append(percentile(lat, 99))
    res.metric("end to end: worker CPU per fire", "µs", digits=0).values.append(
        (cpu1 - cpu0) / max(fires.acked, 1) * 1e6
    )


@dataclass
class Fires:
    dispatched: int
    acked: int
    doubled: int
    missed: int
    latencies_ms: list[float]


def audit(conn: Redis, ids: list[str]) -> Fires:
    """Count each schedule's fires from its history stream: dispatched, acked (per fire)."""
    dispatched = acked = doubled = missed = 0
    lat: list[float] = []
    for start in range(0, len(ids), 500):
        pipe = conn.pipeline(transaction=False)
        chunk = ids[start : start + 500]
        for sid in chunk:
            pipe.xrange(K.history(sid))
        for entries in pipe.execute():
            acks: Counter[str] = Counter()
            for entry_id, raw in entries:
                fields = {str(text(k)): str(text(v)) for k, v in raw.items()}
                event = fields.get("event")
                if event == "dispatched":
                    dispatched += 1
                elif event == "succeeded":
                    acks[fields["fire_at"]] += 1
                    at = int(str(text(entry_id)).split("-", 1)[0])
                    lat.append(at - parse_iso_ms(fields["fire_at"]))
                elif event == "missed":
                    missed += int(fields.get("count", "1"))
            acked += len(acks)
            doubled += sum(1 for c in acks.values() if c > 1)
    return Fires(dispatched, acked, doubled, missed, lat)


def ack_overhead(ctx: Context, res: Result) -> None:
    m = 500 if ctx.quick else 2_000
    work = ctx.workdir / "ackcost"
    app = write_app(work / "app")
    toml = write_toml(work / "drain.toml", m, DRAIN_QUEUE, "1h")
    ids = [f"report-{i:06d}" for i in range(m)]
    for rep in range(ctx.reps):
        costs: dict[str, float] = {}
        for kind in ("stock", "rqbeat-on-rq-jobs", "rqbeat"):
            with ctx.redis(f"ackcost-{kind}-{rep}") as server, stack(work / f"{kind}-{rep}", server) as st:
                conn = server.client()
                if kind == "rqbeat":
                    apply(st, server, app, toml)
                    st.replica("leader", log_level="warning")
                    wait_role(conn, "leader", "leader")
                    queue_rqbeat_runs(conn, ids, DRAIN_QUEUE)
                else:
                    q = Queue(DRAIN_QUEUE, connection=conn, serializer=JSONSerializer)
                    q.enqueue_many([Queue.prepare_data(TARGET) for _ in range(m)])
                workers = start_workers(st, server, app, DRAIN_QUEUE, 1, stock=kind == "stock")
                d = drain(conn, server, workers, DRAIN_QUEUE, m, leader=None)
            costs[kind] = d.seconds / d.jobs * 1e6
            ctx.log(f"  {kind}: {costs[kind]:,.0f} µs per job")
        res.metric("ack cost: stock RQ SimpleWorker, RQ-enqueued jobs", "µs/job", digits=0).values.append(
            costs["stock"]
        )
        res.metric("ack cost: rqbeat worker, RQ-enqueued jobs", "µs/job", digits=0).values.append(
            costs["rqbeat-on-rq-jobs"]
        )
        res.metric("ack cost: rqbeat worker, rqbeat runs (acked)", "µs/job", digits=0).values.append(
            costs["rqbeat"]
        )
        res.metric(
            "ack cost: rqbeat runs over stock RQ, extra per job",
            "ratio",
            target=Target("<=", MAX_ACK_OVERHEAD, f"≤ {MAX_ACK_OVERHEAD:.0%}"),
            digits=3,
        ).values.append(costs["rqbeat"] / costs["stock"] - 1)


def scaling(ctx: Context, res: Result) -> None:
    m = 2_000 if ctx.quick else 10_000
    work = ctx.workdir / "scaling"
    app = write_app(work / "app")
    toml = write_toml(work / "drain.toml", m, DRAIN_QUEUE, "1h")
    ids = [f"report-{i:06d}" for i in range(m)]
    with ctx.redis("scaling") as server, stack(work / "logs", server) as st:
        conn = server.client()
        apply(st, server, app, toml)
        leader = st.replica("leader", log_level="warning")
        wait_role(conn, "leader", "leader")
        finished_before = 0
        for k in SCALING:
            ctx.log(f"scaling: {m} runs, {k} workers")
            queue_rqbeat_runs(conn, ids, DRAIN_QUEUE)
            workers = start_workers(st, server, app, DRAIN_QUEUE, k)
            finished_before += m
            d = drain(conn, server, workers, DRAIN_QUEUE, finished_before, leader=leader)
            for w in workers:
                w.stop()
            wait_for(lambda: registered(conn, DRAIN_QUEUE) == 0, 60, 0.01, "workers to leave")
            wait_for(lambda: conn.zcard(K.running) == 0, 60, 0.01, "every run acked")
            res.metric(f"{k} workers: jobs/s", "jobs/s", digits=0).values.append(d.per_s)
            res.metric(f"{k} workers: redis-server CPU per job", "µs", digits=0).values.append(
                d.us_per_job(d.cpu_redis)
            )
            res.metric(f"{k} workers: workers' CPU per job", "µs", digits=0).values.append(
                d.us_per_job(d.cpu_workers)
            )
            res.metric(f"{k} workers: leader CPU per job", "µs", digits=0).values.append(
                d.us_per_job(d.cpu_leader)
            )
            ctx.log(f"  {d.per_s:,.0f} jobs/s")


def run(ctx: Context) -> Result:
    res = Result(NAME, TITLE, __doc__ or "")
    end_to_end(ctx, res)
    ack_overhead(ctx, res)
    scaling(ctx, res)
    return res
